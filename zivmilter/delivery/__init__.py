"""Handing mail back to the MTA: the re-injection client (copies, notifications, DSNs, portal
mail) and the one secure-reply hand-over that the portal and maintenance share.
"""
