"""Every default and limit of zivmilter, in one place.

The config schema (config.py) takes its defaults from here; so do modules that need a limit.
"""

from __future__ import annotations

from typing import Literal

# --- files and sockets -------------------------------------------------------------------
CONFIG_FILE = "/etc/zivmilter/zivmilter.yaml"
MILTER_SOCKET = "unix:/run/zivmilter/zivmilter.sock"
STORE_PATH = "/var/lib/zivmilter"
STORE_KEY_FILE = "/etc/zivmilter/store.key"

# --- milter ------------------------------------------------------------------------------
MILTER_TIMEOUT = 600  # seconds libmilter waits on the MTA
SPOOL_THRESHOLD = 1024 * 1024  # message bytes kept in memory before spooling to disk
MAX_MESSAGE_BYTES = 200 * 1024 * 1024  # refuse (5.3.4) above this; Postfix default is 10 MB
# MIME parts within parts (multipart, message/*) deeper than this: refused (5.6.0), before the
# `email` package's recursive parser and generator walk them (core/limits.py); Postfix's own
# mime_nesting_limit is 100 too. Real mail seldom nests ten; Python's stack gives out near 250.
MIME_NESTING_LIMIT = 100

# --- re-injection to the milter-free Postfix listener -----------------------------------
REINJECT_HOST = "127.0.0.1"
REINJECT_PORT = 10026
REINJECT_TIMEOUT = 60.0
# Secure replies from the portal come in from outside: they go to a listener that runs the site's
# content filters (antivirus, spam), never zivmilter (postfix/master.cf.zivmilter ships it).
REINJECT_REPLIES_PORT = 10027
# SMTP sessions a batch of copies is spread over. Most of a copy's time is Postfix's smtpd and
# cleanup taking it (a queue file written and synced); sessions in parallel overlap those waits
# and each round trip's scheduling delay on a loaded machine: a message to 100 notification
# recipients went from 1.2 s to 0.69 s (README: Benchmarks; 8 sessions gained nothing over 4).
# A batch opens no more sessions than it has copies; one copy keeps to the caller's thread.
REINJECT_SESSIONS = 4
# How long a client's retry of a tempfailed message is recognized as the same message (same
# envelope, decisions, Message-ID and content), so the copies the MTA already took are not
# handed over again. 5 days: Postfix's maximal_queue_lifetime, the longest a client MTA
# commonly keeps retrying; a real new message has a new Message-ID and never matches.
RETRY_WINDOW_SECONDS = 5 * 24 * 3600

# --- policy ------------------------------------------------------------------------------
LARGE_ATTACHMENT_BYTES = 10 * 1024 * 1024  # SPEC 5: attachments above this become links
# An attachment of a stored message at least this large (decoded) is kept apart as a blob of its
# own at save, so that the portal streams it instead of parsing the whole message (issue 15);
# a message no larger than this is not parsed at save at all.
STORED_PART_MIN = 1024 * 1024
EXPIRY_DAYS = 0  # 0: notification messages do not expire
REMEMBER_DEVICE_DAYS = 0  # 0: no "remember this browser" after an SMS or emailed code
REMEMBER_DEVICE_MAX_DAYS = 400  # browsers cap a cookie's lifetime at 400 days

# --- portal and notifications ------------------------------------------------------------
PORTAL_BASE_URL = "https://secure.example.org/"
PORTAL_LISTEN = "127.0.0.1:8025"
LINK_TOKEN_BYTES = 24  # 192 bits from `secrets`; SPEC asks for at least 128
NOTIFICATION_LANGUAGE = "en"
LANGUAGES = ("en", "nl", "de")
TIMEZONE = "UTC"  # organization.timezone: the zone of the dates the portal and its mail show
# branding.logo: larger is refused at load (it is sent with every portal page and notification)
BRAND_LOGO_MAX_BYTES = 64 * 1024
NEUTRAL_SUBJECT = {"en": "Secure message", "nl": "Beveiligd bericht", "de": "Sichere Nachricht"}
LOCKOUT_AFTER = 5  # wrong codes before a link locks
LOCKOUT_BASE_SECONDS = 60  # doubles with each further lockout
OTP_VALIDITY_SECONDS = 600
SMS_RESEND_SECONDS = 60
# Shared download links (/d/): codes (and account answer rounds) one address may get in an hour
# over all claims on it; each allows LOCKOUT_AFTER answers before its claim locks and it is spent.
CLAIM_CODES_PER_HOUR = 10
CLAIM_KEEP_SECONDS = 24 * 3600  # a claim (one visitor's session on a link) is forgotten after
# The sign-in counters of an address without a sender account (store/senders.py) are pruned
# by maintenance this long after their last wrong sign-in, once no lock holds: long enough
# that a lockout's doubling (a day at most, LOCKOUT_MAX_SECONDS) shows alike on both.
SIGN_IN_COUNT_KEEP_SECONDS = 7 * 24 * 3600

# --- transport prober (SPEC 4) -----------------------------------------------------------
SMTP_PORT = 25
PROBE_TIMEOUT = 10.0  # per step (DNS query, connect, STARTTLS)
PROBE_DOMAIN_BUDGET = 45.0  # all steps of one domain
CACHE_TTL_SUCCESS = 24 * 3600
CACHE_TTL_FAILURE = 3600
CACHE_REFRESH_BEFORE = 3600  # refresh domains in use this long before expiry
FACTS_WAIT = 0.05  # seconds the milter waits on a cache miss before taking `none`

IDD_REFRESH_SECONDS = 60.0  # the milter rereads the store's IDD domains (zivmilter idd) this often

# --- recipients' own keys (issue 26) ------------------------------------------------------
KEY_CACHE_TTL = 3600  # a lookup's outcome (key found or not) is reused this long per address
KEY_LOOKUP_TIMEOUT = 10.0  # seconds for one network key lookup: DNS, connection, TLS, answer
WKD_MAX_BYTES = 256 * 1024  # a WKD answer larger than this is refused (a key, not a keyring)

# --- ODD lists (SPEC 9) ------------------------------------------------------------------
ODD_REFRESH_SECONDS = 24 * 3600
ODD_STALE_MAX_SECONDS = 7 * 24 * 3600

# --- submission (SPEC 7) -----------------------------------------------------------------
TRUSTED_NETWORKS = ("127.0.0.0/8", "::1/128")

# --- encrypted store (crypto.py, store/) -----------------------------------------------
STORE_RECORD_BYTES = 64 * 1024  # plaintext bytes per AES-GCM record of a stored blob
# An access code shorter than this is used (SPEC 10 does not let us refuse it) but reported as
# weak in the milter's log and in `explain`.
ACCESS_CODE_MIN_LENGTH = 6
# encryption.pdf: a PDF can be tried offline, with no attempt limit: a shorter code keeps the portal
PDF_ACCESS_CODE_MIN_LENGTH = 10
# encryption.pdf_max_bytes: a larger message (as the MTA passes it, attachments included) keeps
# the portal: the PDF is laid out and held in memory in the milter at end of message
PDF_MAX_BYTES = 10 * 1024 * 1024
# encryption.pdf_max_text_bytes: more text than this (decoded, UTF-8) keeps the portal: laying
# text out costs, attachments hardly do (bench/pdf.py on a loaded 2-core machine: about 1 s for
# 256 KiB, 23 s for 8 MB)
PDF_MAX_TEXT_BYTES = 256 * 1024
# that text is counted in a multipart message's first this many bytes when its plain-text body
# ends there (the usual case: attachments come after it); the whole message is parsed otherwise
PDF_TEXT_PARSE_BYTES = 1024 * 1024
SCRYPT_N = 2**15  # access-code hashes: scrypt cost (32 MiB with r=8), ~0.1 s per check
SCRYPT_R = 8
SCRYPT_P = 1
# A key rotation's carried access-code pepper that no stored hash names any more is pruned by the
# first maintenance run this long after one found it so (store/peppers.py: a hash read before
# may still be copied after it, by a request that lasts seconds)
PEPPER_PRUNE_GRACE = 24 * 3600
STORE_BUSY_TIMEOUT = 30.0  # seconds a writer waits for another process's SQLite lock
# After a revocation the old pages holding the destroyed key stay in SQLite's write-ahead log
# until a checkpoint folds it back and truncates it; a reader's open transaction holds that up.
# How long a revocation (and `maintenance`) waits for such readers before reporting it pending.
STORE_CHECKPOINT_WAIT = 1.0
# Encrypted contents up to this size live in the database row (one fsync at commit, shared by
# concurrent saves); larger ones get a blob file of their own under blobs/.
STORE_INLINE_MAX = 256 * 1024
STORE_POOL_SIZE = 10  # PostgreSQL connections per process (store.pool_size)

# --- transport prober: live side, cache and ODD lists (zivmilter/transport) -------------
TRANSPORT_DB_FILE = "transport.sqlite3"  # in store.path: probe cache and ODD list copies
PROBE_WORKERS = 8  # domains probed at once by the milter's background prober
PROBE_HOSTS_PARALLEL = 4  # MX hosts of one domain probed at once
PROBE_MAX_ADDRESSES = 5  # addresses tried per MX host (Postfix's smtp_mx_address_limit)
CACHE_REFRESH_INTERVAL = 60.0  # seconds between the refresher's passes
CACHE_IN_USE_SECONDS = 24 * 3600  # a domain looked up this recently is kept fresh
SQLITE_BUSY_TIMEOUT = 5.0  # seconds the transport cache waits on another process's lock
ODD_FETCH_TIMEOUT = 30.0
ODD_MAX_LIST_BYTES = 10 * 1024 * 1024
ODD_REFRESH_SLACK = 3600  # a list is due this much before 24 h, so a daily timer never skips it
ODD_RELOAD_SECONDS = 60.0  # the milter re-reads the lists `odd-refresh` stored this often

# --- submission and selection (SPEC 6, 7: submission.py, selection.py, spf.py) -----------
LOCAL_CLIENT_ADDRESS = "127.0.0.1"  # a message without a network client counts as from here
SPF_TIMEOUT = 20.0  # seconds for all DNS lookups of one SPF check (RFC 7208 4.6.4)
SMTP_REPLY_TEXT_MAX = 400  # characters of a rejection text; libmilter refuses 980 and more

# --- content rules (selection.content: content.py, bodytext.py) --------------------------
BSN_CONTEXT_WORDS = ("bsn", "burgerservicenummer", "sofinummer", "sofi-nummer")
CONTENT_CONTEXT_CHARS = 60  # how near (before or after) a context word must be to a BSN
CONTENT_SCOPE: tuple[Literal["subject", "text", "attachment_names"], ...] = (
    "subject",
    "text",
    "attachment_names",
)
CONTENT_MAX_MESSAGE_BYTES = 8 * 1024 * 1024  # message bytes parsed for text; the rest unread
CONTENT_MAX_TEXT_BYTES = 2 * 1024 * 1024  # text scanned per message (UTF-8), the first N
CONTENT_MAX_MATCHES = 20  # matches reported per message
CONTENT_PATTERN_MAX_MEM = 8 * 1024 * 1024  # RE2 memory per compiled site pattern: a size bound
# scope attachment_text (gateway/attachtext.py): what is read, and for how long
CONTENT_ATTACHMENT_MAX_BYTES = 10 * 1024 * 1024  # an attachment larger than this is not read
CONTENT_ATTACHMENT_TIMEOUT = 5.0  # seconds for all of a message's attachments; then stopped
CONTENT_ATTACHMENT_MEMORY = 1024 * 1024 * 1024  # the reader process's address space (bytes)

# --- guest portal (zivmilter/portal) ------------------------------------------------------
PORTAL_SESSION_SECONDS = 3600  # a verified session (cookie) lasts this long
PORTAL_LINK_SECONDS = 24 * 3600  # the proof of having opened the link, before verification
PORTAL_WORKERS = 1  # uvicorn worker processes (`zivmilter portal --workers`)
PORTAL_PURGE_SECONDS = 300.0  # how often the portal revokes messages past their expiry
DSN_MAIL_FROM = "MAILER-DAEMON"  # local part, at the first organization domain, of DSNs
PORTAL_MAIL_FROM = "noreply"  # local part, at the first organization domain, of portal mail
PORTAL_MAX_REPLY_BYTES = 25 * 1024 * 1024  # text and attachments of one secure reply
PORTAL_MAX_REPLY_FILES = 10
SENDER_INVITE_SECONDS = 7 * 24 * 3600  # `zivmilter account invite`: the enrolment link holds
SENT_PAGE_SIZE = 20  # messages per page of a sender's sent items
# Secure replies per link and per recipient address (all their links), by number and by bytes,
# in any hour and any day (portal.reply_limits): one recipient cannot fill the store's disk,
# which would hold the secured outgoing mail.
REPLY_LINK_PER_HOUR = 10
REPLY_LINK_PER_DAY = 30
REPLY_LINK_BYTES_PER_HOUR = 100 * 1024 * 1024
REPLY_LINK_BYTES_PER_DAY = 250 * 1024 * 1024
REPLY_RECIPIENT_PER_HOUR = 20
REPLY_RECIPIENT_PER_DAY = 60
REPLY_RECIPIENT_BYTES_PER_HOUR = 200 * 1024 * 1024
REPLY_RECIPIENT_BYTES_PER_DAY = 500 * 1024 * 1024
# A reply is refused while the store's file system has less than this free (besides the reply).
REPLY_MIN_FREE_BYTES = 1024 * 1024 * 1024
OTP_DIGITS = 6
OTP_MAX_SENDS = 10  # codes sent for one link before a successful verification
LOCKOUT_MAX_SECONDS = 24 * 3600  # the growing lockout stops growing here
TOTP_STEP_SECONDS = 30  # authenticator apps (RFC 6238 default)
TOTP_DRIFT_STEPS = 1  # steps of clock drift accepted either side
# An expired message keeps its key this long after a secure reply to it that the MTA has not
# taken yet was written, so that `zivmilter maintenance` can still send that reply.
UNSENT_REPLY_GRACE = 3 * 24 * 3600
