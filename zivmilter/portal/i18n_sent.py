"""The texts of the sender's side of the portal (sent.py, sentmail.py): keys and English msgids.

Kept apart from i18n.py, which merges them into its messages: read by the templates as
`t.<key>`, translated through the gettext catalogs (zivmilter/locale/).
"""

from __future__ import annotations

from zivmilter.i18n import N_

SENT: dict[str, str] = {
    "sent_manage": N_("Details and actions"),
    "sent_delivery_notification": N_("Secure link"),
    "sent_delivery_direct": N_("Delivered directly"),
    "sent_state_revoked": N_("Withdrawn"),
    "sent_state_expired": N_("Expired"),
    "sent_done_revoked": N_("The message is withdrawn."),
    "sent_done_revoked_recipient": N_("The message is withdrawn for {recipient}."),
    "sent_done_expiry": N_("The expiry is set."),
    "err_sent_nothing": N_("There was nothing left to withdraw."),
    "err_sent_expiry_past": N_("Choose a moment in the future."),
    "err_sent_expiry_bad": N_("That is not a date and time."),
    "err_sent_expiry_refused": N_(
        "This message has no open secure link left, so it cannot expire."
    ),
    "err_sent_wrong": N_("The address, the password or the authenticator code is not right."),
    "err_sent_locked": N_("Too many wrong attempts. Sign-in is locked; try again in {minutes}."),
    "err_sent_password_short": N_("Choose a password of at least {length} characters."),
    "err_sent_password_differs": N_("The two passwords differ."),
    "invite_invalid_title": N_("This invitation does not work"),
    "invite_invalid_text": N_(
        "It was used already, it expired, or it was replaced by a newer one. Ask your "
        "administrator for a new invitation."
    ),
    "invite_mail_subject": N_("Sign in to your sent secure messages"),
    "invite_mail_body": N_(
        "Hello,\n\nyou can now see and manage the secure messages you sent through {org}: "
        "whether they were opened, and withdraw them or let them expire.\n\nSet up your "
        "sign-in (a password and an authenticator app) with this personal link, valid for "
        "{days} days and once:\n\n{link}\n\n{org}\n"
    ),
    "receipt_mail_subject": N_("Opened: your secure message to {recipient}"),
    "receipt_mail_body": N_(
        "{recipient} opened the secure message you sent on {sent}, at {opened}.\n\nYour sent "
        "messages: {link}\n\n{org}\n"
    ),
}
