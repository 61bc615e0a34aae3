"""The texts of the sender's side of the portal (sent.py, sentmail.py), in English and Dutch.

Kept apart from i18n.py, which merges them into its catalogue: the same keys in both languages,
the same `str.format` placeholders, read by the templates as `t.<key>`.
"""

from __future__ import annotations

SENT_EN: dict[str, str] = {
    "sent_title": "Sent secure messages",
    "sent_signin_title": "Sign in to your sent messages",
    "sent_signin_intro": "Sign in with your email address at {org}, your password and the code "
    "from your authenticator app.",
    "sent_address": "Email address",
    "sent_search": "Search by recipient or subject",
    "sent_search_button": "Search",
    "sent_none": "No messages found.",
    "sent_count": "{total} message(s)",
    "sent_newer": "Newer",
    "sent_older": "Older",
    "sent_page": "Page {page} of {pages}",
    "sent_sent_at": "Sent {when}",
    "sent_expires": "Expires {when}",
    "sent_subject_gone": "(withdrawn: the subject is no longer kept)",
    "sent_manage": "Details and actions",
    "sent_back": "Back to sent messages",
    "sent_signed_in_as": "Signed in as {address}",
    "sent_delivery_notification": "Secure link",
    "sent_delivery_direct": "Delivered directly",
    "sent_method": "Method",
    "sent_level": "Transport",
    "sent_notified": "Notified",
    "sent_opened": "Opened",
    "sent_not_opened": "Not opened yet",
    "sent_opened_direct": "At sending (direct delivery)",
    "sent_failed": "Failed attempts",
    "sent_locked": "Locked after wrong attempts",
    "sent_state_revoked": "Withdrawn",
    "sent_state_expired": "Expired",
    "sent_revoke_message": "Withdraw the message",
    "sent_revoke_recipient": "Withdraw for this recipient",
    "sent_set_expiry": "Set or change the expiry",
    "sent_direct_why": "Delivered directly into the recipient's mailbox: it cannot be withdrawn "
    "or expire, and counts as read at sending.",
    "sent_all_direct_why": "Every recipient got this message directly in their mailbox: it cannot "
    "be withdrawn and does not expire.",
    "sent_confirm_revoke_message": "Withdraw \u201c{subject}\u201d for every recipient with a "
    "secure link? They can no longer read it, and this cannot be undone.",
    "sent_confirm_revoke_recipient": "Withdraw \u201c{subject}\u201d for {recipient}? This "
    "recipient can no longer read it, and this cannot be undone.",
    "sent_confirm_expiry": "Let \u201c{subject}\u201d expire at {when}? After that no recipient "
    "can read it.",
    "sent_confirm": "Yes, do it",
    "sent_cancel": "Cancel",
    "sent_expiry_label": "Expires at (UTC)",
    "sent_expiry_next": "Continue",
    "sent_done_revoked": "The message is withdrawn.",
    "sent_done_revoked_recipient": "The message is withdrawn for {recipient}.",
    "sent_done_expiry": "The expiry is set.",
    "err_sent_nothing": "There was nothing left to withdraw.",
    "err_sent_expiry_past": "Choose a moment in the future.",
    "err_sent_expiry_bad": "That is not a date and time.",
    "err_sent_expiry_refused": "This message has no open secure link left, so it cannot expire.",
    "err_sent_wrong": "The address, the password or the authenticator code is not right.",
    "err_sent_locked": "Too many wrong attempts. Sign-in is locked; try again in {minutes}.",
    "err_sent_password_short": "Choose a password of at least {length} characters.",
    "err_sent_password_differs": "The two passwords differ.",
    "sent_invite_title": "Set up your sign-in",
    "sent_invite_intro": "Choose a password for {address}, then scan this code with an "
    "authenticator app (for example FreeOTP, Aegis or Google Authenticator) and enter the "
    "6-digit code it shows.",
    "sent_password_again": "Password again",
    "sent_invite_confirm": "Save and sign in",
    "invite_invalid_title": "This invitation does not work",
    "invite_invalid_text": "It was used already, it expired, or it was replaced by a newer one. "
    "Ask your administrator for a new invitation.",
    # mail
    "invite_mail_subject": "Sign in to your sent secure messages",
    "invite_mail_body": "Hello,\n\nyou can now see and manage the secure messages you sent "
    "through {org}: whether they were opened, and withdraw them or let them expire.\n\nSet up "
    "your sign-in (a password and an authenticator app) with this personal link, valid for "
    "{days} days and once:\n\n{link}\n\n{org}\n",
    "receipt_mail_subject": "Opened: your secure message to {recipient}",
    "receipt_mail_body": "{recipient} opened the secure message you sent on {sent}, at "
    "{opened}.\n\nYour sent messages: {link}\n\n{org}\n",
}

SENT_NL: dict[str, str] = {
    "sent_title": "Verzonden beveiligde berichten",
    "sent_signin_title": "Inloggen voor uw verzonden berichten",
    "sent_signin_intro": "Log in met uw e-mailadres bij {org}, uw wachtwoord en de code uit uw "
    "authenticator-app.",
    "sent_address": "E-mailadres",
    "sent_search": "Zoeken op ontvanger of onderwerp",
    "sent_search_button": "Zoeken",
    "sent_none": "Geen berichten gevonden.",
    "sent_count": "{total} bericht(en)",
    "sent_newer": "Nieuwer",
    "sent_older": "Ouder",
    "sent_page": "Pagina {page} van {pages}",
    "sent_sent_at": "Verzonden {when}",
    "sent_expires": "Verloopt {when}",
    "sent_subject_gone": "(ingetrokken: het onderwerp wordt niet meer bewaard)",
    "sent_manage": "Details en acties",
    "sent_back": "Terug naar verzonden berichten",
    "sent_signed_in_as": "Ingelogd als {address}",
    "sent_delivery_notification": "Beveiligde link",
    "sent_delivery_direct": "Direct afgeleverd",
    "sent_method": "Methode",
    "sent_level": "Verzending",
    "sent_notified": "Bericht gestuurd",
    "sent_opened": "Geopend",
    "sent_not_opened": "Nog niet geopend",
    "sent_opened_direct": "Bij verzending (directe aflevering)",
    "sent_failed": "Mislukte pogingen",
    "sent_locked": "Geblokkeerd na foute pogingen",
    "sent_state_revoked": "Ingetrokken",
    "sent_state_expired": "Verlopen",
    "sent_revoke_message": "Bericht intrekken",
    "sent_revoke_recipient": "Intrekken voor deze ontvanger",
    "sent_set_expiry": "Verloopdatum instellen of wijzigen",
    "sent_direct_why": "Direct in de mailbox van de ontvanger afgeleverd: dit kan niet worden "
    "ingetrokken of verlopen, en telt als gelezen bij verzending.",
    "sent_all_direct_why": "Elke ontvanger kreeg dit bericht direct in de mailbox: het kan niet "
    "worden ingetrokken en verloopt niet.",
    "sent_confirm_revoke_message": "\u201c{subject}\u201d intrekken voor iedere ontvanger met "
    "een beveiligde link? Zij kunnen het dan niet meer lezen; dit is niet terug te draaien.",
    "sent_confirm_revoke_recipient": "\u201c{subject}\u201d intrekken voor {recipient}? Deze "
    "ontvanger kan het dan niet meer lezen; dit is niet terug te draaien.",
    "sent_confirm_expiry": "\u201c{subject}\u201d laten verlopen op {when}? Daarna kan geen "
    "ontvanger het meer lezen.",
    "sent_confirm": "Ja, doorgaan",
    "sent_cancel": "Annuleren",
    "sent_expiry_label": "Verloopt op (UTC)",
    "sent_expiry_next": "Verder",
    "sent_done_revoked": "Het bericht is ingetrokken.",
    "sent_done_revoked_recipient": "Het bericht is ingetrokken voor {recipient}.",
    "sent_done_expiry": "De verloopdatum is ingesteld.",
    "err_sent_nothing": "Er was niets meer in te trekken.",
    "err_sent_expiry_past": "Kies een moment in de toekomst.",
    "err_sent_expiry_bad": "Dat is geen datum en tijd.",
    "err_sent_expiry_refused": "Dit bericht heeft geen open beveiligde link meer en kan dus niet "
    "verlopen.",
    "err_sent_wrong": "Het adres, het wachtwoord of de authenticator-code klopt niet.",
    "err_sent_locked": "Te veel foute pogingen. Inloggen is geblokkeerd; probeer het over "
    "{minutes} opnieuw.",
    "err_sent_password_short": "Kies een wachtwoord van minstens {length} tekens.",
    "err_sent_password_differs": "De twee wachtwoorden verschillen.",
    "sent_invite_title": "Uw inlog instellen",
    "sent_invite_intro": "Kies een wachtwoord voor {address}, scan dan deze code met een "
    "authenticator-app (bijvoorbeeld FreeOTP, Aegis of Google Authenticator) en vul de "
    "6-cijferige code in die de app toont.",
    "sent_password_again": "Wachtwoord nogmaals",
    "sent_invite_confirm": "Opslaan en inloggen",
    "invite_invalid_title": "Deze uitnodiging werkt niet",
    "invite_invalid_text": "Ze is al gebruikt, verlopen of vervangen door een nieuwere. Vraag uw "
    "beheerder om een nieuwe uitnodiging.",
    "invite_mail_subject": "Inloggen voor uw verzonden beveiligde berichten",
    "invite_mail_body": "Hallo,\n\nu kunt nu de beveiligde berichten zien en beheren die u via "
    "{org} verstuurde: of ze geopend zijn, en ze intrekken of laten verlopen.\n\nStel uw inlog "
    "in (een wachtwoord en een authenticator-app) met deze persoonlijke link, {days} dagen en "
    "eenmaal geldig:\n\n{link}\n\n{org}\n",
    "receipt_mail_subject": "Geopend: uw beveiligde bericht aan {recipient}",
    "receipt_mail_body": "{recipient} opende het beveiligde bericht dat u op {sent} verstuurde, "
    "om {opened}.\n\nUw verzonden berichten: {link}\n\n{org}\n",
}
