"""The guest portal (SPEC 8): recipients open their personal link, prove who they are, read the
message, download its attachments and reply securely; plus `revoke`, `status` and `contacts`.

app.py wires the Starlette app; links.py and downloads.py are the pages, on pages.py and flows.py;
context.py is what they all share (the `Portal`), so they import one way: app → pages → flows →
context. verify.py and security.py hold the pure decisions (codes, lockout, cookies); everything
persistent is in the store (zivmilter/store/). cli/portal.py has the CLI commands.
"""
