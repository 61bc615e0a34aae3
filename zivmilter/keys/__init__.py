"""Recipients' own keys (issue 26): judging candidates (judge.py), the finder that asks the
configured sources in order (finder.py), the organization's key store as a source (keystore.py)
and the encrypted formats a mail client reads (formats.py). The values are in core/keys.py.
"""
