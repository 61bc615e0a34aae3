"""Every default and limit of zivmilter, in one place.

The config schema (config.py) takes its defaults from here; so do modules that need a limit.
"""

from __future__ import annotations

# --- files and sockets -------------------------------------------------------------------
CONFIG_FILE = "/etc/zivmilter/zivmilter.yaml"
MILTER_SOCKET = "unix:/run/zivmilter/zivmilter.sock"
STORE_PATH = "/var/lib/zivmilter"
STORE_KEY_FILE = "/etc/zivmilter/store.key"

# --- milter ------------------------------------------------------------------------------
MILTER_TIMEOUT = 600  # seconds libmilter waits on the MTA
SPOOL_THRESHOLD = 1024 * 1024  # message bytes kept in memory before spooling to disk
MAX_MESSAGE_BYTES = 200 * 1024 * 1024  # refuse (5.3.4) above this; Postfix default is 10 MB

# --- re-injection to the milter-free Postfix listener -----------------------------------
REINJECT_HOST = "127.0.0.1"
REINJECT_PORT = 10026
REINJECT_TIMEOUT = 60.0

# --- policy ------------------------------------------------------------------------------
LARGE_ATTACHMENT_BYTES = 10 * 1024 * 1024  # SPEC 5: attachments above this become links
EXPIRY_DAYS = 0  # 0: notification messages do not expire

# --- portal and notifications ------------------------------------------------------------
PORTAL_BASE_URL = "https://secure.example.org/"
PORTAL_LISTEN = "127.0.0.1:8025"
LINK_TOKEN_BYTES = 24  # 192 bits from `secrets`; SPEC asks for at least 128
NOTIFICATION_LANGUAGE = "en"
LANGUAGES = ("en", "nl")
NEUTRAL_SUBJECT = {"en": "Secure message", "nl": "Beveiligd bericht"}
LOCKOUT_AFTER = 5  # wrong codes before a link locks
LOCKOUT_BASE_SECONDS = 60  # doubles with each further lockout
OTP_VALIDITY_SECONDS = 600
SMS_RESEND_SECONDS = 60

# --- transport prober (SPEC 4) -----------------------------------------------------------
SMTP_PORT = 25
PROBE_TIMEOUT = 10.0  # per step (DNS query, connect, STARTTLS)
PROBE_DOMAIN_BUDGET = 45.0  # all steps of one domain
CACHE_TTL_SUCCESS = 24 * 3600
CACHE_TTL_FAILURE = 3600
CACHE_REFRESH_BEFORE = 3600  # refresh domains in use this long before expiry
FACTS_WAIT = 0.05  # seconds the milter waits on a cache miss before taking `none`

# --- ODD lists (SPEC 9) ------------------------------------------------------------------
ODD_REFRESH_SECONDS = 24 * 3600
ODD_STALE_MAX_SECONDS = 7 * 24 * 3600

# --- submission (SPEC 7) -----------------------------------------------------------------
TRUSTED_NETWORKS = ("127.0.0.0/8", "::1/128")
