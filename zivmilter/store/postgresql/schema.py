"""The PostgreSQL schema: versioned migrations, run by `zivmilter store migrate`, never at start.

Migration 1 is a mirror of sqlite/schema.py's version 7, in PostgreSQL's types (BYTEA, BIGINT epoch
seconds, identity columns), with one difference: a message's wrapped data key lives in a small
table of its own (`message_keys`), not in `messages`, so that revocation deletes it and maintenance
can rewrite that small table (README "Several nodes": what revocation guarantees on PostgreSQL).
Large contents are rows of `blob_chunks` (postgresql/blobs.py). Each later SQLite version is one
more migration here (SQLite 8 is PostgreSQL 2; SQLite 9, 10 and 11 are PostgreSQL 3, 4 and 5).

Each migration runs in one transaction under an advisory lock, so two nodes migrating at once
apply it once. A store whose schema is older than this zivmilter is refused at start (run
`zivmilter store migrate`); one newer is refused too. Never edit an applied entry: add one.
"""

from __future__ import annotations

from typing import Any

import psycopg

from zivmilter.errors import StoreError
from zivmilter.store.postgresql.connection import connect, describe

# Advisory lock keys of zivmilter (any bigint; named here so they never collide).
MIGRATION_LOCK = 0x7A69_7601
MAINTENANCE_LOCK = 0x7A69_7602  # the key table's rewrite (messages.py shred_keys)
HOUSEKEEPING_LOCK = 0x7A69_7603  # one `zivmilter maintenance` run at a time (housekeeping_lock)

_MIGRATIONS: tuple[str, ...] = (
    # 1: sqlite/schema.py versions 1-7
    """
    CREATE TABLE messages (
        id          TEXT PRIMARY KEY,      -- random: appears in portal URLs, must not be guessable
        rfc822_id   TEXT,                  -- Message-ID header
        queue_id    TEXT NOT NULL DEFAULT '',
        sender      TEXT NOT NULL,
        subject     BYTEA,                 -- sealed with the message field key; NULL once revoked
        created_at  BIGINT NOT NULL,
        expires_at  BIGINT,
        revoked_at  BIGINT,
        portal_view BYTEA                  -- sealed with the message field key
    );
    CREATE INDEX messages_sender ON messages (sender, created_at);
    CREATE INDEX messages_expiry ON messages (expires_at)
        WHERE expires_at IS NOT NULL AND revoked_at IS NULL;
    CREATE INDEX messages_rfc822 ON messages (rfc822_id);

    -- The destroyable part: a message's data key, AES-KW under the KEK; deleted on revocation.
    -- Kept apart so that the rows holding keys are few and small, and the table cheap to rewrite.
    CREATE TABLE message_keys (
        message_id  TEXT PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
        wrapped_key BYTEA NOT NULL
    );

    CREATE TABLE conversations (
        id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        message_id TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        number     INTEGER NOT NULL,
        UNIQUE (message_id, number)
    );

    CREATE TABLE recipients (
        id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        message_id       TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        address          TEXT NOT NULL,
        conversation     INTEGER NOT NULL,
        method           TEXT NOT NULL,
        delivery         TEXT NOT NULL CHECK (delivery IN ('notification', 'direct')),
        rule             TEXT NOT NULL,
        level            TEXT,
        token_hash       TEXT UNIQUE,      -- SHA-256 of the link token; the token is never stored
        verification     TEXT CHECK (verification IN ('account', 'sms', 'access_code', 'email')),
        phone            BYTEA,            -- sealed with the message field key
        access_code_hash TEXT,             -- crypto.hash_secret (scrypt)
        hint             BYTEA,            -- sealed with the message field key
        notified_at      BIGINT,
        opened_at        BIGINT,
        failed_attempts  INTEGER NOT NULL DEFAULT 0,
        lockouts         INTEGER NOT NULL DEFAULT 0,
        locked_until     BIGINT,
        revoked_at       BIGINT,           -- this recipient's link revoked
        failed_streak    INTEGER NOT NULL DEFAULT 0,
        otp_secret       BYTEA,            -- sealed with the KEK field key
        otp_sent_at      BIGINT,
        otp_sends        INTEGER NOT NULL DEFAULT 0,
        UNIQUE (message_id, address),
        FOREIGN KEY (message_id, conversation)
            REFERENCES conversations (message_id, number) ON DELETE CASCADE
    );
    CREATE INDEX recipients_address ON recipients (address);

    CREATE TABLE blobs (
        id          TEXT PRIMARY KEY,      -- also names the content key (HKDF info)
        message_id  TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        kind        TEXT NOT NULL,         -- 'message', 'reply', 'attachment'
        path        TEXT NOT NULL,         -- the BlobStore reference; '' when `data` holds it
        size        BIGINT NOT NULL,       -- plaintext bytes
        cipher_size BIGINT NOT NULL,
        sha256      TEXT NOT NULL,         -- of the ciphertext
        deleted_at  BIGINT,
        data        BYTEA                  -- the ciphertext when path is ''; NULL once deleted
    );
    CREATE INDEX blobs_message ON blobs (message_id);

    -- Contents larger than store inline_max, in chunks (postgresql/blobs.py). No foreign key:
    -- written and committed before the rows that refer to them (as blob files are).
    CREATE TABLE blob_chunks (
        ref        TEXT NOT NULL,
        seq        INTEGER NOT NULL,
        data       BYTEA NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (ref, seq)
    );

    CREATE TABLE contacts (                -- the organization's contact book (SPEC 8)
        address          TEXT PRIMARY KEY,
        sms              BYTEA,            -- sealed with the KEK field key
        access_code_hash TEXT,
        used_at          BIGINT
    );

    CREATE TABLE accounts (
        address        TEXT PRIMARY KEY,
        kind           TEXT NOT NULL CHECK (kind IN ('sender', 'recipient')),
        active         BOOLEAN NOT NULL DEFAULT TRUE,
        password_hash  TEXT,
        totp_secret    BYTEA,              -- sealed with the KEK field key
        created_at     BIGINT NOT NULL,
        totp_last_step BIGINT              -- an authenticator code counts once
    );

    CREATE TABLE audit (                   -- no foreign key: the log outlives what it describes
        id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at         BIGINT NOT NULL,
        message_id TEXT,
        recipient  TEXT,
        event      TEXT NOT NULL,
        detail     TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX audit_message ON audit (message_id, id);

    CREATE TABLE replies (                 -- secure replies written in the portal
        seq          BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,  -- SQLite's rowid: the order
        id           TEXT PRIMARY KEY,
        message_id   TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        recipient_id BIGINT NOT NULL REFERENCES recipients (id) ON DELETE CASCADE,
        conversation INTEGER NOT NULL,
        blob_id      TEXT NOT NULL,        -- the reply as sent, sealed with the message's data key
        created_at   BIGINT NOT NULL,
        sent_at      BIGINT,
        refused_at   BIGINT                -- the MTA refused it for good (5xx)
    );
    CREATE INDEX replies_recipient ON replies (recipient_id, created_at);

    CREATE TABLE attachments (             -- large attachments of direct deliveries (SPEC 5)
        id           TEXT PRIMARY KEY,
        message_id   TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        blob_id      TEXT NOT NULL,
        filename     BYTEA,                -- sealed with the attachment's own field key
        content_type TEXT NOT NULL,
        token_hash   TEXT NOT NULL UNIQUE, -- SHA-256 of the download token
        created_at   BIGINT NOT NULL,
        wrapped_key  BYTEA                 -- its own data key, AES-KW under the KEK (SPEC 8)
    );

    CREATE TABLE idd_domains (             -- inbound direct delivery, kept by admins (SPEC 4)
        domain   TEXT PRIMARY KEY,         -- normalized, A-labels
        added_at BIGINT NOT NULL
    );
    """,
    # 2: sqlite/schema.py version 8, the sender's side of the portal (issue 19). Sent items
    # read messages by sender through messages_sender (schema 1). A sender signs in with the
    # account's password and authenticator, enrolled through a one-time invitation; wrong
    # sign-ins lock the account as wrong answers lock a link; a read receipt goes out once per
    # recipient.
    """
    ALTER TABLE accounts ADD COLUMN failed_attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE accounts ADD COLUMN failed_streak INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE accounts ADD COLUMN lockouts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE accounts ADD COLUMN locked_until BIGINT;
    ALTER TABLE recipients ADD COLUMN receipt_sent_at BIGINT;

    CREATE TABLE invites (                 -- one-time enrolment links of sender accounts
        token_hash TEXT PRIMARY KEY,       -- SHA-256 of the token; the token is never stored
        address    TEXT NOT NULL REFERENCES accounts (address) ON DELETE CASCADE,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        used_at    BIGINT
    );
    CREATE INDEX invites_address ON invites (address);
    """,
    # 3: sqlite/schema.py version 9. Signing out (a link) and disabling an account end their
    # sessions server-side: a pass names the generation it was issued under, and these counters
    # only go up.
    """
    ALTER TABLE recipients ADD COLUMN session_gen INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE accounts ADD COLUMN session_gen INTEGER NOT NULL DEFAULT 0;
    """,
    # 4: sqlite/schema.py version 10. A message's large attachments, decoded at save into blobs
    # of their own (kind 'part', under the message's key), so that a download streams one blob
    # instead of parsing the whole message (issue 15). Messages saved before have no rows: they
    # are parsed as before.
    """
    CREATE TABLE parts (
        message_id   TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        leaf         INTEGER NOT NULL,     -- index among the message's leaf parts (mail/parts.py)
        blob_id      TEXT NOT NULL,
        filename     BYTEA,                -- sealed with the message field key; NULL once revoked
        content_type TEXT NOT NULL,
        PRIMARY KEY (message_id, leaf)
    );
    """,
    # 5: sqlite/schema.py version 11. A client's retry of a tempfailed message reuses what the
    # first try stored and leaves out the copies the MTA already took (postgresql/handovers.py).
    """
    CREATE TABLE handovers (
        message_id TEXT PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
        retry_key  TEXT NOT NULL,          -- SHA-256 of envelope, decisions, Message-ID, content
        tokens     BYTEA NOT NULL,         -- the link tokens, sealed with the message field key
        created_at BIGINT NOT NULL
    );
    CREATE INDEX handovers_key ON handovers (retry_key, created_at);
    CREATE TABLE handed_copies (           -- copies of a message the MTA took
        message_id TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        copy       TEXT NOT NULL,          -- the gateway's key of the copy
        at         BIGINT NOT NULL,
        PRIMARY KEY (message_id, copy)
    );
    """,
    # 6: sqlite/schema.py version 12. Browsers a recipient asked to remember after an SMS or
    # emailed code (issue 25, postgresql/devices.py); a digest of each token, never the token.
    """
    CREATE TABLE devices (
        digest     TEXT PRIMARY KEY,       -- SHA-256 of the browser's token
        address    TEXT NOT NULL,          -- normalized: the only address it opens links of
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        used_at    BIGINT
    );
    CREATE INDEX devices_address ON devices (address);
    CREATE INDEX devices_expiry ON devices (expires_at);
    """,
    # 7: sqlite/schema.py version 13. A shared download link (/d/) verifies claims, not
    # addresses: each visitor's claim has its own one-time code and lockout, and an address's
    # codes per hour over all claims are capped (postgresql/claims.py).
    """
    CREATE TABLE download_claims (
        id            BIGINT PRIMARY KEY,  -- random: a pass names it
        attachment_id TEXT NOT NULL REFERENCES attachments (id) ON DELETE CASCADE,
        address       TEXT NOT NULL,       -- normalized, as claimed (a recipient or not)
        recipient_id  BIGINT REFERENCES recipients (id) ON DELETE CASCADE,  -- NULL: not one
        created_at    BIGINT NOT NULL,
        otp_secret    BYTEA,               -- sealed with the field key; NULL when none or spent
        otp_sent_at   BIGINT,
        otp_sends     INTEGER NOT NULL DEFAULT 0,
        funded        INTEGER NOT NULL DEFAULT 0,  -- account answers: this round has its share
        failed_streak INTEGER NOT NULL DEFAULT 0,
        lockouts      INTEGER NOT NULL DEFAULT 0,
        locked_until  BIGINT
    );
    CREATE INDEX download_claims_created ON download_claims (created_at);
    CREATE TABLE claim_budget (            -- one row per code (or answer round) an address got
        address TEXT NOT NULL,
        at      BIGINT NOT NULL
    );
    CREATE INDEX claim_budget_address ON claim_budget (address, at);
    CREATE INDEX claim_budget_at ON claim_budget (at);
    """,
    # 8: sqlite/schema.py version 14. Recipients' public keys the organization imported
    # (issue 26, `zivmilter keys`, postgresql/recipientkeys.py); judged at each use.
    """
    CREATE TABLE recipient_keys (
        ident       TEXT PRIMARY KEY,      -- OpenPGP fingerprint or S/MIME certificate serial
        kind        TEXT NOT NULL,         -- openpgp | smime
        material    BYTEA NOT NULL,        -- OpenPGP certificate (binary) or X.509 DER
        imported_at BIGINT NOT NULL
    );
    CREATE TABLE recipient_key_addresses (
        ident   TEXT NOT NULL REFERENCES recipient_keys (ident) ON DELETE CASCADE,
        address TEXT NOT NULL,             -- normalized
        PRIMARY KEY (address, ident)
    );
    CREATE INDEX recipient_key_addresses_ident ON recipient_key_addresses (ident);
    """,
    # 9: sqlite/schema.py version 15. The access-code peppers of previous key-encryption keys,
    # carried over by `rekey` (an access-code hash cannot be re-peppered without its code):
    # sealed under the current key, they let those hashes match once the previous key file is
    # gone (store/rekey.py)
    """
    CREATE TABLE peppers (
        key_id TEXT PRIMARY KEY,  -- hex id of the key-encryption key the pepper belongs to
        sealed BYTEA NOT NULL     -- the pepper, sealed with the current key's field key
    );
    """,
    # 10: sqlite/schema.py version 16. The language a recipient chose in the portal (issue 25),
    # for the next notification to them (contacts.remember_language); NULL: none chosen
    """
    ALTER TABLE contacts ADD COLUMN language TEXT;
    """,
    # 11: sqlite/schema.py version 17. When maintenance first found a carried pepper named by
    # no access-code hash (NULL: some hash names it); it prunes the pepper a grace later
    # (store/peppers.py)
    """
    ALTER TABLE peppers ADD COLUMN unused_since BIGINT;
    """,
    # 12: sqlite/schema.py version 18. The sign-in lockout of addresses without a sender
    # account (store/senders.py), named by an HMAC under the KEK, not the address
    """
    CREATE TABLE sign_in_counts (
        tag           TEXT PRIMARY KEY,   -- sealing.sign_in_tag(address): no address in here
        failed_streak INTEGER NOT NULL DEFAULT 0,
        lockouts      INTEGER NOT NULL DEFAULT 0,
        locked_until  BIGINT,
        failed_at     BIGINT NOT NULL     -- the last wrong sign-in counted
    );
    """,
    # 13: sqlite/schema.py version 19. The large attachments a try of a message kept for its
    # direct copies, while the message's handover lasts: a client's retry puts the same links
    # in its copies instead of storing them again (postgresql/handovers.py).
    """
    CREATE TABLE handover_attachments (
        attachment_id TEXT PRIMARY KEY REFERENCES attachments (id) ON DELETE CASCADE,
        message_id    TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        link          BYTEA NOT NULL       -- the gateway's key and the token, sealed
    );                                     -- under the attachment's own key
    CREATE INDEX handover_attachments_message ON handover_attachments (message_id);
    """,
)

SCHEMA_VERSION = len(_MIGRATIONS)
MIGRATE_HINT = "run `zivmilter store migrate --config FILE`"


def current_version(cur: psycopg.Cursor[Any]) -> int:
    """The database's schema version; 0 when it holds no zivmilter schema yet."""
    cur.execute("SELECT to_regclass('schema_version') IS NOT NULL")
    row = cur.fetchone()
    if row is None or not row[0]:
        return 0
    cur.execute("SELECT version FROM schema_version")
    row = cur.fetchone()
    return 0 if row is None else int(row[0])


def check_version(cur: psycopg.Cursor[Any], dsn: str) -> None:
    """Refuse a database whose schema is not this zivmilter's (at start, before any work)."""
    version = current_version(cur)
    where = describe(dsn)
    if version == 0:
        raise StoreError(f"PostgreSQL {where}: no zivmilter schema yet: {MIGRATE_HINT}")
    if version < SCHEMA_VERSION:
        raise StoreError(
            f"PostgreSQL {where}: store schema version {version} is older than this zivmilter"
            f" ({SCHEMA_VERSION}): {MIGRATE_HINT}"
        )
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"PostgreSQL {where}: store schema version {version} is newer than this zivmilter"
            f" ({SCHEMA_VERSION})"
        )


def migrate_database(dsn: str, passfile: str | None = None) -> tuple[int, int]:
    """Bring the database up to SCHEMA_VERSION: (version before, version after)."""
    conn = connect(dsn, passfile)
    try:
        with conn.transaction(), conn.cursor() as cur:
            # Two nodes upgrading at once: the second waits, then finds nothing left to do.
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            before = current_version(cur)
            if before > SCHEMA_VERSION:
                raise StoreError(
                    f"PostgreSQL {describe(dsn)}: store schema version {before} is newer than"
                    f" this zivmilter ({SCHEMA_VERSION})"
                )
            for version in range(before, SCHEMA_VERSION):
                cur.execute(_MIGRATIONS[version].encode())
            cur.execute("DELETE FROM schema_version")
            cur.execute("INSERT INTO schema_version (version) VALUES (%s)", (SCHEMA_VERSION,))
    except psycopg.Error as exc:
        raise StoreError(f"PostgreSQL {describe(dsn)}: migration failed: {exc}") from None
    finally:
        conn.close()
    return before, SCHEMA_VERSION
