"""The texts of the sender's side of the portal (sent.py, sentmail.py): keys and English msgids.

Kept apart from i18n.py, which merges them into its messages: read by the templates as
`t.<key>`, translated through the gettext catalogs (zivmilter/locale/).
"""

from __future__ import annotations

from zivmilter.i18n import N_

SENT: dict[str, str] = {
    "sent_title": N_("Sent secure messages"),
    "sent_signin_title": N_("Sign in to your sent messages"),
    "sent_signin_intro": N_(
        "Sign in with your email address at {org}, your password and the code from your "
        "authenticator app."
    ),
    "sent_address": N_("Email address"),
    "sent_search": N_("Search by recipient or subject"),
    "sent_search_button": N_("Search"),
    "sent_none": N_("No messages found."),
    "sent_count": N_("{total} message(s)"),
    "sent_newer": N_("Newer"),
    "sent_older": N_("Older"),
    "sent_page": N_("Page {page} of {pages}"),
    "sent_sent_at": N_("Sent {when}"),
    "sent_expires": N_("Expires {when}"),
    "sent_subject_gone": N_("(withdrawn: the subject is no longer kept)"),
    "sent_manage": N_("Details and actions"),
    "sent_back": N_("Back to sent messages"),
    "sent_signed_in_as": N_("Signed in as {address}"),
    "sent_delivery_notification": N_("Secure link"),
    "sent_delivery_direct": N_("Delivered directly"),
    "sent_method": N_("Method"),
    "sent_level": N_("Transport"),
    "sent_notified": N_("Notified"),
    "sent_opened": N_("Opened"),
    "sent_not_opened": N_("Not opened yet"),
    "sent_opened_direct": N_("At sending (direct delivery)"),
    "sent_failed": N_("Failed attempts"),
    "sent_locked": N_("Locked after wrong attempts"),
    "sent_state_revoked": N_("Withdrawn"),
    "sent_state_expired": N_("Expired"),
    "sent_revoke_message": N_("Withdraw the message"),
    "sent_revoke_recipient": N_("Withdraw for this recipient"),
    "sent_set_expiry": N_("Set or change the expiry"),
    "sent_direct_why": N_(
        "Delivered directly into the recipient's mailbox: it cannot be withdrawn or expire, "
        "and counts as read at sending."
    ),
    "sent_all_direct_why": N_(
        "Every recipient got this message directly in their mailbox: it cannot be withdrawn "
        "and does not expire."
    ),
    "sent_confirm_revoke_message": N_(
        "Withdraw “{subject}” for every recipient with a secure link? They can no longer read "
        "it, and this cannot be undone."
    ),
    "sent_confirm_revoke_recipient": N_(
        "Withdraw “{subject}” for {recipient}? This recipient can no longer read it, and this "
        "cannot be undone."
    ),
    "sent_confirm_expiry": N_(
        "Let “{subject}” expire at {when}? After that no recipient can read it."
    ),
    "sent_confirm": N_("Yes, do it"),
    "sent_cancel": N_("Cancel"),
    "sent_expiry_label": N_("Expires at (UTC)"),
    "sent_expiry_next": N_("Continue"),
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
    "sent_invite_title": N_("Set up your sign-in"),
    "sent_invite_intro": N_(
        "Choose a password for {address}, then scan this code with an authenticator app (for "
        "example FreeOTP, Aegis or Google Authenticator) and enter the 6-digit code it shows."
    ),
    "sent_password_again": N_("Password again"),
    "sent_invite_confirm": N_("Save and sign in"),
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
