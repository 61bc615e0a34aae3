"""Every text of the portal's pages and mails, in English and Dutch.

Templates read `t.<key>`; a key missing in one language fails the template (StrictUndefined) and
the unit test that renders every page in every language. Placeholders are `str.format` fields.
"""

from __future__ import annotations

from collections.abc import Mapping

from zivmilter.portal.i18n_sent import SENT_EN, SENT_NL

LANGUAGE_NAMES: tuple[tuple[str, str], ...] = (("en", "English"), ("nl", "Nederlands"))

_EN: dict[str, str] = {
    "portal_title": "Secure message",
    "secure_mail": "Secure email",
    "language": "Language",
    "footer": "Secure email of {org}. Your connection and this message are encrypted.",
    "support": "Questions? Contact {org}:",
    "support_phone": "phone",
    "opening_title": "Opening your secure message…",
    "continue": "Continue",
    # verification
    "verify_title": "Confirm that this message is for you",
    "message_from": "A secure message from {sender}.",
    "access_code_intro": "Enter the access code that the sender gave you outside email.",
    "hint": "The sender's hint:",
    "access_code": "Access code",
    "open_message": "Open the message",
    "sms_intro": "We send a verification code by text message to {phone}.",
    "email_intro": "We send a verification code by email to {address}.",
    "send_code": "Send me a code",
    "send_again": "Send a new code",
    "code_label": "Verification code",
    # a trusted device (issue 25): offered after an SMS or emailed code only
    "remember_device_one": "Remember this browser for 1 day",
    "remember_device_other": "Remember this browser for {n} days",
    "remember_device_help": "Links for {address} then open in this browser without a code. "
    "Do not tick this on a shared or public computer.",
    "account_intro": "Sign in with your account at {org} ({address}).",
    "password": "Password",
    "totp_label": "Code from your authenticator app",
    "sign_in": "Sign in",
    "verify_why": "Only the intended recipient can open this message. Your link is personal: "
    "do not share it.",
    "locked_text": "Too many wrong attempts. This link is locked; try again in {minutes}.",
    # {minutes} of the lock texts: a count with its word in the right number (`minutes`)
    "minutes_one": "1 minute",
    "minutes_other": "{n} minutes",
    # a page's title names its state too, so that a screen reader tells the states apart:
    # "<state>: <page title>" (base.html)
    "title_error": "Error",
    "title_locked": "Locked",
    "title_notice": "Done",
    "title_code_sent": "Code sent",
    "title_note_replied": "Reply sent",
    "title_note_reply_later": "Reply saved",
    "note_code_sent": "A code is on its way: enter it below.",
    "note_replied": "Your reply was sent securely.",
    "note_reply_later": (
        "Your reply is saved. The mail server could not take it right now; it will be sent"
        " automatically, so you do not need to send it again."
    ),
    "err_wrong_code": "That code is not right. Check it and try again.",
    "err_wrong_password": "The password or the authenticator code is not right.",
    "err_code_wait": "A code was sent a moment ago. You can ask for a new one in {seconds} "
    "seconds.",
    "err_code_exhausted": "Too many codes were sent for this link. Ask the sender to send the "
    "message again.",
    "err_code_failed": "The code could not be sent right now. Please try again in a few minutes.",
    "err_no_account": "There is no active account for this address. Please contact the sender.",
    "err_already_enrolled": "An authenticator app is already set up for this account. Sign in "
    "with your password and the code it shows.",
    "err_reply_empty": "Write a reply or attach a file.",
    "err_reply_failed": "Your reply could not be sent right now. Please try again later.",
    "err_reply_refused": (
        "Your reply could not be delivered: the mail server refused it, so it has not been sent."
    ),
    "err_reply_bad_type": "Emails and multipart files cannot be attached to a reply. Attach the "
    "documents themselves instead.",
    "err_reply_quota_hour": "You have reached the limit for replies in one hour (their number or "
    "their size). Your reply was not sent; please try again in an hour.",
    "err_reply_quota_day": "You have reached the limit for replies in one day (their number or "
    "their size). Your reply was not sent; please try again tomorrow.",
    "err_reply_no_space": "Replies cannot be accepted right now: the secure mail service is out "
    "of storage space. Your reply was not sent; please try again later.",
    "err_bad_address": "That is not an email address.",
    # enrolment
    "enrol_title": "Set up your authenticator app",
    "enrol_intro": "Your password is right. To protect your account, scan this code with an "
    "authenticator app (for example FreeOTP, Aegis or Google Authenticator), then enter the "
    "6-digit code it shows.",
    "enrol_manual": "Cannot scan? Enter this key:",
    "enrol_confirm": "Confirm and open the message",
    # reading
    "no_subject": "(no subject)",
    "h_from": "From",
    "h_to": "To",
    "h_cc": "Cc",
    "h_date": "Date",
    # the message's Date, in the sender's own time (context.message_date)
    "date_format": "{weekday} {day} {month} {year}, {time} (UTC{offset})",
    "weekdays": "Monday Tuesday Wednesday Thursday Friday Saturday Sunday",
    "months": "January February March April May June July August September October November "
    "December",
    "remote_blocked": "Images from the internet are not shown, so nobody learns when you read "
    "this.",
    "remote_load": "Show them",
    "message_body": "Message",
    "attachments": "Attachments",
    # replying
    "reply_title": "Reply securely",
    "reply_item": "You replied on {when}.",
    "reply_sent": "Sent",
    "reply_pending": "Not sent yet",
    "reply_refused": "Refused by the mail server",
    "reply_label": "Your reply to the sender",
    "reply_files": "Attachments (up to {mb} MB in total)",
    "reply_send": "Send reply",
    "reply_via": "{author} via secure email",
    "sign_out": "Sign out",
    # large attachments
    "download_title": "Secure download",
    "download_from": "A file sent to you by {sender}.",
    "download_intro": "Enter your email address, the one this file was sent to.",
    "download_email_intro": "We send a verification code to your email address.",
    "your_address": "Your email address",
    "download_verify": "Confirm",
    "other_address": "Not your address? Enter another one:",
    "download_button": "Download {name}",
    # whole pages: <key>_title and <key>_text
    "not_found_title": "Page not found",
    "not_found_text": "There is nothing here. Open the link in your email again.",
    "unknown_link_title": "This link does not work",
    "unknown_link_text": "The link is incomplete or unknown. Copy the whole link from your "
    "email, or ask the sender to send the message again.",
    "no_pass_title": "Open your link first",
    "no_pass_text": "For your security, this page only opens through the personal link in your "
    "email (in the same browser). Open that link again.",
    "revoked_title": "This message was withdrawn",
    "revoked_text": "The sender withdrew this message. It can no longer be read. Contact the "
    "sender if you still need it.",
    "expired_title": "This message has expired",
    "expired_text": "This message was available for a limited time only, and that time is over. "
    "Contact the sender if you still need it.",
    "signed_out_title": "You are signed out",
    "signed_out_text": "To read the message again, open the link in your email.",
    "csrf_title": "The form has expired",
    "csrf_text": "For your security this form could not be accepted. Go back, reload the page "
    "and try again.",
    "reply_too_big_title": "Reply too large",
    "reply_too_big_text": "A reply with its attachments may be at most {mb} MB. Go back and "
    "leave out some files.",
    # mail
    "code_mail_subject": "Your verification code",
}

_NL: dict[str, str] = {
    "portal_title": "Beveiligd bericht",
    "secure_mail": "Beveiligde e-mail",
    "language": "Taal",
    "footer": "Beveiligde e-mail van {org}. Uw verbinding en dit bericht zijn versleuteld.",
    "support": "Vragen? Neem contact op met {org}:",
    "support_phone": "telefoon",
    "opening_title": "Uw beveiligde bericht wordt geopend…",
    "continue": "Verder",
    "verify_title": "Bevestig dat dit bericht voor u is",
    "message_from": "Een beveiligd bericht van {sender}.",
    "access_code_intro": "Vul de toegangscode in die de afzender u buiten e-mail om gaf.",
    "hint": "Hint van de afzender:",
    "access_code": "Toegangscode",
    "open_message": "Open het bericht",
    "sms_intro": "We sturen een verificatiecode per sms naar {phone}.",
    "email_intro": "We sturen een verificatiecode per e-mail naar {address}.",
    "send_code": "Stuur mij een code",
    "send_again": "Stuur een nieuwe code",
    "code_label": "Verificatiecode",
    "remember_device_one": "Deze browser 1 dag onthouden",
    "remember_device_other": "Deze browser {n} dagen onthouden",
    "remember_device_help": "Links voor {address} openen dan in deze browser zonder code. "
    "Vink dit niet aan op een gedeelde of openbare computer.",
    "account_intro": "Log in met uw account bij {org} ({address}).",
    "password": "Wachtwoord",
    "totp_label": "Code uit uw authenticator-app",
    "sign_in": "Inloggen",
    "verify_why": "Alleen de bedoelde ontvanger kan dit bericht openen. Uw link is persoonlijk: "
    "deel hem niet.",
    "locked_text": "Te veel onjuiste pogingen. Deze link is geblokkeerd; probeer het over "
    "{minutes} opnieuw.",
    "minutes_one": "1 minuut",
    "minutes_other": "{n} minuten",
    "title_error": "Fout",
    "title_locked": "Geblokkeerd",
    "title_notice": "Gelukt",
    "title_code_sent": "Code verstuurd",
    "title_note_replied": "Antwoord verstuurd",
    "title_note_reply_later": "Antwoord bewaard",
    "note_code_sent": "Er is een code onderweg: vul hem hieronder in.",
    "note_replied": "Uw antwoord is beveiligd verstuurd.",
    "note_reply_later": (
        "Uw antwoord is bewaard. De mailserver kon het nu niet aannemen; het wordt vanzelf"
        " verstuurd, u hoeft het niet opnieuw te sturen."
    ),
    "err_wrong_code": "Die code klopt niet. Controleer hem en probeer het opnieuw.",
    "err_wrong_password": "Het wachtwoord of de code uit de authenticator-app klopt niet.",
    "err_code_wait": "Er is net een code gestuurd. Over {seconds} seconden kunt u een nieuwe "
    "aanvragen.",
    "err_code_exhausted": "Er zijn te veel codes gestuurd voor deze link. Vraag de afzender het "
    "bericht opnieuw te sturen.",
    "err_code_failed": "De code kan nu niet worden verstuurd. Probeer het over een paar minuten "
    "opnieuw.",
    "err_no_account": "Er is geen actief account voor dit adres. Neem contact op met de afzender.",
    "err_already_enrolled": "Voor dit account is al een authenticator-app ingesteld. Log in met "
    "uw wachtwoord en de code die de app toont.",
    "err_reply_empty": "Schrijf een antwoord of voeg een bestand toe.",
    "err_reply_failed": "Uw antwoord kan nu niet worden verstuurd. Probeer het later opnieuw.",
    "err_reply_refused": (
        "Uw antwoord kon niet worden afgeleverd: de mailserver weigerde het, dus het is niet"
        " verstuurd."
    ),
    "err_reply_bad_type": "E-mails en samengestelde (multipart) bestanden kunnen niet aan een "
    "antwoord worden toegevoegd. Voeg de documenten zelf toe.",
    "err_reply_quota_hour": "U hebt de limiet voor antwoorden in één uur bereikt (hun aantal of "
    "hun grootte). Uw antwoord is niet verstuurd; probeer het over een uur opnieuw.",
    "err_reply_quota_day": "U hebt de limiet voor antwoorden op één dag bereikt (hun aantal of "
    "hun grootte). Uw antwoord is niet verstuurd; probeer het morgen opnieuw.",
    "err_reply_no_space": "Antwoorden kunnen nu niet worden aangenomen: de beveiligde maildienst "
    "heeft geen opslagruimte meer. Uw antwoord is niet verstuurd; probeer het later opnieuw.",
    "err_bad_address": "Dat is geen e-mailadres.",
    "enrol_title": "Stel uw authenticator-app in",
    "enrol_intro": "Uw wachtwoord klopt. Scan ter bescherming van uw account deze code met een "
    "authenticator-app (bijvoorbeeld FreeOTP, Aegis of Google Authenticator) en vul de "
    "6-cijferige code in die de app toont.",
    "enrol_manual": "Lukt scannen niet? Vul deze sleutel in:",
    "enrol_confirm": "Bevestig en open het bericht",
    "no_subject": "(geen onderwerp)",
    "h_from": "Van",
    "h_to": "Aan",
    "h_cc": "Cc",
    "h_date": "Datum",
    "date_format": "{weekday} {day} {month} {year} om {time} (UTC{offset})",
    "weekdays": "maandag dinsdag woensdag donderdag vrijdag zaterdag zondag",
    "months": "januari februari maart april mei juni juli augustus september oktober november "
    "december",
    "remote_blocked": "Afbeeldingen van internet worden niet getoond, zodat niemand ziet wanneer "
    "u dit leest.",
    "remote_load": "Toon ze",
    "message_body": "Bericht",
    "attachments": "Bijlagen",
    "reply_title": "Beveiligd antwoorden",
    "reply_item": "U antwoordde op {when}.",
    "reply_sent": "Verstuurd",
    "reply_pending": "Nog niet verstuurd",
    "reply_refused": "Geweigerd door de mailserver",
    "reply_label": "Uw antwoord aan de afzender",
    "reply_files": "Bijlagen (samen hoogstens {mb} MB)",
    "reply_send": "Verstuur antwoord",
    "reply_via": "{author} via beveiligde e-mail",
    "sign_out": "Uitloggen",
    "download_title": "Beveiligde download",
    "download_from": "Een bestand dat {sender} u stuurde.",
    "download_intro": "Vul uw e-mailadres in, het adres waar dit bestand naartoe is gestuurd.",
    "download_email_intro": "We sturen een verificatiecode naar uw e-mailadres.",
    "your_address": "Uw e-mailadres",
    "download_verify": "Bevestig",
    "other_address": "Niet uw adres? Vul een ander in:",
    "download_button": "Download {name}",
    "not_found_title": "Pagina niet gevonden",
    "not_found_text": "Hier is niets. Open de link in uw e-mail opnieuw.",
    "unknown_link_title": "Deze link werkt niet",
    "unknown_link_text": "De link is onvolledig of onbekend. Kopieer de hele link uit uw e-mail, "
    "of vraag de afzender het bericht opnieuw te sturen.",
    "no_pass_title": "Open eerst uw link",
    "no_pass_text": "Voor uw veiligheid opent deze pagina alleen via de persoonlijke link in uw "
    "e-mail (in dezelfde browser). Open die link opnieuw.",
    "revoked_title": "Dit bericht is ingetrokken",
    "revoked_text": "De afzender heeft dit bericht ingetrokken. Het kan niet meer worden gelezen. "
    "Neem contact op met de afzender als u het nog nodig heeft.",
    "expired_title": "Dit bericht is verlopen",
    "expired_text": "Dit bericht was beperkte tijd beschikbaar, en die tijd is voorbij. Neem "
    "contact op met de afzender als u het nog nodig heeft.",
    "signed_out_title": "U bent uitgelogd",
    "signed_out_text": "Open de link in uw e-mail om het bericht opnieuw te lezen.",
    "csrf_title": "Het formulier is verlopen",
    "csrf_text": "Voor uw veiligheid kon dit formulier niet worden aangenomen. Ga terug, laad "
    "de pagina opnieuw en probeer het nog eens.",
    "reply_too_big_title": "Antwoord te groot",
    "reply_too_big_text": "Een antwoord met bijlagen mag hoogstens {mb} MB zijn. Ga terug en "
    "laat enkele bestanden weg.",
    "code_mail_subject": "Uw verificatiecode",
}

_CATALOGUE: dict[str, dict[str, str]] = {"en": {**_EN, **SENT_EN}, "nl": {**_NL, **SENT_NL}}


def texts(language: str) -> Mapping[str, str]:
    """The texts of one language (English for an unknown one)."""
    return _CATALOGUE.get(language, _EN)


def minutes(language: str, n: int) -> str:
    """`n` minutes in words of `language`, singular or plural as the number asks."""
    t = texts(language)
    return t["minutes_one"] if n == 1 else t["minutes_other"].format(n=n)


def catalogue() -> Mapping[str, Mapping[str, str]]:
    return _CATALOGUE
