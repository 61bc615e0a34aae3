"""Pure builders of what zivmilter sends: the notification, large attachments as links, the DSN.
They return bytes; the gateway decides when, and delivery/ hands them to the MTA.
"""
