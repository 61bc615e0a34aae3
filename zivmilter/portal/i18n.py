"""Every text of the portal's pages and mails that Python chooses: a message by its key.

The key is the name templates read (`t.<key>`, also in a site's own templates: branding.templates)
and the code chooses (`t["err_" + error]`); its value is the English msgid, translated through the
gettext catalogs (zivmilter/i18n.py, zivmilter/locale/). Texts that a template shows as they are
live in the template (`_()`, `{% trans %}`). Placeholders here are `str.format` fields, as the
templates fill them (`t.footer.format(org=...)`); the catalog test keeps them equal in every
language.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

from zivmilter import defaults
from zivmilter.i18n import N_, translate, translations
from zivmilter.portal.i18n_sent import SENT

# The language switch, each language in its own words.
LANGUAGE_NAMES: tuple[tuple[str, str], ...] = (
    ("en", "English"),
    ("nl", "Nederlands"),
    ("de", "Deutsch"),
)

MESSAGES: dict[str, str] = {
    "title_error": N_("Error"),
    "title_locked": N_("Locked"),
    "title_notice": N_("Done"),
    "title_code_sent": N_("Code sent"),
    "title_note_replied": N_("Reply sent"),
    "title_note_reply_later": N_("Reply saved"),
    "note_code_sent": N_("A code is on its way: enter it below."),
    "note_replied": N_("Your reply was sent securely."),
    "note_reply_later": N_(
        "Your reply is saved. The mail server could not take it right now; it will be sent "
        "automatically, so you do not need to send it again."
    ),
    "err_wrong_code": N_("That code is not right. Check it and try again."),
    "err_wrong_password": N_("The password or the authenticator code is not right."),
    "err_code_wait": N_(
        "A code was sent a moment ago. You can ask for a new one in {seconds} seconds."
    ),
    "err_code_exhausted": N_(
        "Too many codes were sent for this link. Ask the sender to send the message again."
    ),
    "err_code_failed": N_(
        "The code could not be sent right now. Please try again in a few minutes."
    ),
    "err_no_account": N_("There is no active account for this address. Please contact the sender."),
    "err_already_enrolled": N_(
        "An authenticator app is already set up for this account. Sign in with your password "
        "and the code it shows."
    ),
    "err_reply_empty": N_("Write a reply or attach a file."),
    "err_reply_failed": N_("Your reply could not be sent right now. Please try again later."),
    "err_reply_refused": N_(
        "Your reply could not be delivered: the mail server refused it, so it has not been sent."
    ),
    "err_reply_bad_type": N_(
        "Emails and multipart files cannot be attached to a reply. Attach the documents "
        "themselves instead."
    ),
    "err_reply_quota_hour": N_(
        "You have reached the limit for replies in one hour (their number or their size). Your "
        "reply was not sent; please try again in an hour."
    ),
    "err_reply_quota_day": N_(
        "You have reached the limit for replies in one day (their number or their size). Your "
        "reply was not sent; please try again tomorrow."
    ),
    "err_reply_no_space": N_(
        "Replies cannot be accepted right now: the secure mail service is out of storage "
        "space. Your reply was not sent; please try again later."
    ),
    "err_bad_address": N_("That is not an email address."),
    "reply_via": N_("{author} via secure email"),
    "not_found_title": N_("Page not found"),
    "not_found_text": N_("There is nothing here. Open the link in your email again."),
    "unknown_link_title": N_("This link does not work"),
    "unknown_link_text": N_(
        "The link is incomplete or unknown. Copy the whole link from your email, or ask the "
        "sender to send the message again."
    ),
    "no_pass_title": N_("Open your link first"),
    "no_pass_text": N_(
        "For your security, this page only opens through the personal link in your email (in "
        "the same browser). Open that link again."
    ),
    "revoked_title": N_("This message was withdrawn"),
    "revoked_text": N_(
        "The sender withdrew this message. It can no longer be read. Contact the sender if you "
        "still need it."
    ),
    "expired_title": N_("This message has expired"),
    "expired_text": N_(
        "This message was available for a limited time only, and that time is over. Contact "
        "the sender if you still need it."
    ),
    "signed_out_title": N_("You are signed out"),
    "signed_out_text": N_("To read the message again, open the link in your email."),
    "csrf_title": N_("The form has expired"),
    "csrf_text": N_(
        "For your security this form could not be accepted. Go back, reload the page and try again."
    ),
    "reply_too_big_title": N_("Reply too large"),
    "reply_too_big_text": N_(
        "A reply with its attachments may be at most {mb} MB. Go back and leave out some files."
    ),
    "code_mail_subject": N_("Your verification code"),
}

# the message's Date, in the sender's own time (context.message_date): a CLDR date pattern
# (the language's order of weekday, day, month and year), then that date with its time
DATE_PATTERN = N_("EEEE d MMMM y")
DATE_FORMAT = N_("{date}, {time} (UTC{offset})")

_ALL: dict[str, str] = {**MESSAGES, **SENT}


@functools.cache
def texts(language: str) -> Mapping[str, str]:
    """The texts of one language by key (English for an unknown one)."""
    if language not in defaults.LANGUAGES:
        language = defaults.LANGUAGES[0]
    return {key: translate(language, msgid) for key, msgid in _ALL.items()}


def minutes(language: str, n: int) -> str:
    """`n` minutes in words of `language`, singular or plural as the language's rule asks."""
    return translations(language).ngettext("%(num)d minute", "%(num)d minutes", n) % {"num": n}


def catalogue() -> Mapping[str, Mapping[str, str]]:
    return {language: texts(language) for language in defaults.LANGUAGES}
