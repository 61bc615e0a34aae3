"""The guest portal (SPEC 8): recipients open their personal link, prove who they are, read the
message, download its attachments and reply securely; plus `revoke`, `status` and `contacts`.

app.py wires the Starlette app; links.py and downloads.py are the pages; verify.py and
security.py hold the pure decisions (codes, lockout, cookies); everything persistent is in the
store (store.py, its "portal" section). commands.py registers the CLI commands.
"""
