"""The SQLite schema: each migration moves a database one version up, in one transaction.

A database newer than this zivmilter is refused. Never edit an applied entry: add one. A read-only
open (`check_version`) migrates nothing: it refuses a database older than this zivmilter too.
"""

from __future__ import annotations

import sqlite3

from zivmilter.errors import StoreError

# Each entry moves the database one version up; never edit an applied entry.

_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE messages (
        id          TEXT PRIMARY KEY,      -- random: appears in portal URLs, must not be guessable
        rfc822_id   TEXT,                  -- Message-ID header
        queue_id    TEXT NOT NULL DEFAULT '',
        sender      TEXT NOT NULL,
        subject     BLOB,                  -- sealed with the message field key; NULL once revoked
        wrapped_key BLOB,                  -- data key, AES-KW under the KEK; NULL once revoked
        created_at  INTEGER NOT NULL,
        expires_at  INTEGER,
        revoked_at  INTEGER
    );
    CREATE INDEX messages_sender ON messages (sender, created_at);
    CREATE INDEX messages_expiry ON messages (expires_at)
        WHERE expires_at IS NOT NULL AND revoked_at IS NULL;

    CREATE TABLE conversations (
        id         INTEGER PRIMARY KEY,
        message_id TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        number     INTEGER NOT NULL,
        UNIQUE (message_id, number)
    );

    CREATE TABLE recipients (
        id               INTEGER PRIMARY KEY,
        message_id       TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        address          TEXT NOT NULL,
        conversation     INTEGER NOT NULL,
        method           TEXT NOT NULL,
        delivery         TEXT NOT NULL CHECK (delivery IN ('notification', 'direct')),
        rule             TEXT NOT NULL,
        level            TEXT,
        token_hash       TEXT UNIQUE,      -- SHA-256 of the link token; the token is never stored
        verification     TEXT CHECK (verification IN ('account', 'sms', 'access_code', 'email')),
        phone            BLOB,             -- sealed with the message field key
        access_code_hash TEXT,             -- crypto.hash_secret (scrypt)
        hint             BLOB,             -- sealed with the message field key
        notified_at      INTEGER,
        opened_at        INTEGER,
        failed_attempts  INTEGER NOT NULL DEFAULT 0,
        lockouts         INTEGER NOT NULL DEFAULT 0,
        locked_until     INTEGER,
        UNIQUE (message_id, address),
        FOREIGN KEY (message_id, conversation)
            REFERENCES conversations (message_id, number) ON DELETE CASCADE
    );
    CREATE INDEX recipients_address ON recipients (address);

    CREATE TABLE blobs (
        id          TEXT PRIMARY KEY,      -- also names the content key (HKDF info)
        message_id  TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        kind        TEXT NOT NULL,         -- 'message': the original; later 'attachment'
        path        TEXT NOT NULL,         -- relative to the store folder
        size        INTEGER NOT NULL,      -- plaintext bytes
        cipher_size INTEGER NOT NULL,
        sha256      TEXT NOT NULL,         -- of the blob file
        deleted_at  INTEGER
    );
    CREATE INDEX blobs_message ON blobs (message_id);

    CREATE TABLE contacts (                -- the organization's contact book (SPEC 8)
        address          TEXT PRIMARY KEY,
        sms              BLOB,             -- sealed with the KEK field key
        access_code_hash TEXT,
        used_at          INTEGER
    );

    CREATE TABLE accounts (
        address       TEXT PRIMARY KEY,
        kind          TEXT NOT NULL CHECK (kind IN ('sender', 'recipient')),
        active        INTEGER NOT NULL DEFAULT 1,
        password_hash TEXT,
        totp_secret   BLOB,                -- sealed with the KEK field key
        created_at    INTEGER NOT NULL
    );

    CREATE TABLE audit (                   -- no foreign key: the log outlives what it describes
        id         INTEGER PRIMARY KEY,
        at         INTEGER NOT NULL,
        message_id TEXT,
        recipient  TEXT,
        event      TEXT NOT NULL,
        detail     TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX audit_message ON audit (message_id, id);
    """,
    # 2: the guest portal (zivmilter/portal)
    """
    ALTER TABLE recipients ADD COLUMN revoked_at INTEGER;    -- this recipient's link revoked
    ALTER TABLE recipients ADD COLUMN failed_streak INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE recipients ADD COLUMN otp_secret BLOB;       -- sealed with the KEK field key
    ALTER TABLE recipients ADD COLUMN otp_sent_at INTEGER;
    ALTER TABLE recipients ADD COLUMN otp_sends INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN portal_view BLOB;        -- sealed with the message field key
    CREATE INDEX messages_rfc822 ON messages (rfc822_id);

    CREATE TABLE replies (                 -- secure replies written in the portal
        id           TEXT PRIMARY KEY,
        message_id   TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        recipient_id INTEGER NOT NULL REFERENCES recipients (id) ON DELETE CASCADE,
        conversation INTEGER NOT NULL,
        blob_id      TEXT NOT NULL,        -- the reply as sent, sealed with the message's data key
        created_at   INTEGER NOT NULL,
        sent_at      INTEGER
    );
    CREATE INDEX replies_recipient ON replies (recipient_id, created_at);

    CREATE TABLE attachments (             -- large attachments of direct deliveries (SPEC 5)
        id           TEXT PRIMARY KEY,
        message_id   TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        blob_id      TEXT NOT NULL,
        filename     BLOB,                 -- sealed with the message field key
        content_type TEXT NOT NULL,
        token_hash   TEXT NOT NULL UNIQUE, -- SHA-256 of the download token
        created_at   INTEGER NOT NULL
    );
    """,
    # 3: domains of organizations with inbound direct delivery, kept by admins (SPEC 4, rule 1)
    """
    CREATE TABLE idd_domains (
        domain       TEXT PRIMARY KEY,     -- normalized, A-labels
        added_at     INTEGER NOT NULL
    );
    """,
    # 4: an authenticator code counts once: the last time step used, per account
    """
    ALTER TABLE accounts ADD COLUMN totp_last_step INTEGER;
    """,
    # 5: small contents inline (path ''): one fsync per commit instead of three per message
    """
    ALTER TABLE blobs ADD COLUMN data BLOB;  -- the ciphertext when path is ''; NULL once deleted
    """,
    # 6: a large attachment of a direct delivery gets a data key of its own, so that revoking or
    # expiring the message (which ends its notification links) leaves the download links of the
    # direct copies working (SPEC 8). Attachments stored before were sealed under the message's
    # key and keep NULL here: they end with their message, because a copy of that key would
    # keep the revoked message's content readable.
    """
    ALTER TABLE attachments ADD COLUMN wrapped_key BLOB;  -- AES-KW under the KEK
    """,
    # 7: a secure reply the MTA refused for good (5xx) is not handed over again and again
    """
    ALTER TABLE replies ADD COLUMN refused_at INTEGER;
    """,
    # 8: the sender's side of the portal (issue 19). Sent items read messages by sender through
    # messages_sender (schema 1). A sender signs in with the account's password and
    # authenticator, enrolled through a one-time invitation; wrong sign-ins lock the account as
    # wrong answers lock a link; a read receipt goes out once per recipient.
    """
    ALTER TABLE accounts ADD COLUMN failed_attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE accounts ADD COLUMN failed_streak INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE accounts ADD COLUMN lockouts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE accounts ADD COLUMN locked_until INTEGER;
    ALTER TABLE recipients ADD COLUMN receipt_sent_at INTEGER;

    CREATE TABLE invites (                 -- one-time enrolment links of sender accounts
        token_hash TEXT PRIMARY KEY,       -- SHA-256 of the token; the token is never stored
        address    TEXT NOT NULL REFERENCES accounts (address) ON DELETE CASCADE,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        used_at    INTEGER
    );
    CREATE INDEX invites_address ON invites (address);
    """,
    # 9: signing out (a link) and disabling an account end their sessions server-side: a pass
    # names the generation it was issued under, and these counters only go up
    """
    ALTER TABLE recipients ADD COLUMN session_gen INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE accounts ADD COLUMN session_gen INTEGER NOT NULL DEFAULT 0;
    """,
    # 10: a message's large attachments, decoded at save into blobs of their own (kind 'part',
    # under the message's key), so that a download streams one blob instead of parsing the
    # whole message (issue 15). Messages saved before have no rows: they are parsed as before.
    """
    CREATE TABLE parts (
        message_id   TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        leaf         INTEGER NOT NULL,     -- index among the message's leaf parts (mail/parts.py)
        blob_id      TEXT NOT NULL,
        filename     BLOB,                 -- sealed with the message field key; NULL once revoked
        content_type TEXT NOT NULL,
        PRIMARY KEY (message_id, leaf)
    );
    """,
    # 11: a client's retry of a tempfailed message reuses what the first try stored and leaves
    # out the copies the MTA already took (store/sqlite/handovers.py)
    """
    CREATE TABLE handovers (
        message_id TEXT PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
        retry_key  TEXT NOT NULL,          -- SHA-256 of envelope, decisions, Message-ID, content
        tokens     BLOB NOT NULL,          -- the link tokens, sealed with the message field key
        created_at INTEGER NOT NULL
    );
    CREATE INDEX handovers_key ON handovers (retry_key, created_at);
    CREATE TABLE handed_copies (           -- copies of a message the MTA took
        message_id TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        copy       TEXT NOT NULL,          -- the gateway's key of the copy
        at         INTEGER NOT NULL,
        PRIMARY KEY (message_id, copy)
    );
    """,
    # 12: browsers a recipient asked to remember after an SMS or emailed code (issue 25,
    # store/sqlite/devices.py); a digest of each browser's token, never the token
    """
    CREATE TABLE devices (
        digest     TEXT PRIMARY KEY,       -- SHA-256 of the browser's token
        address    TEXT NOT NULL,          -- normalized: the only address it opens links of
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        used_at    INTEGER
    );
    CREATE INDEX devices_address ON devices (address);
    CREATE INDEX devices_expiry ON devices (expires_at);
    """,
    # 13: a shared download link (/d/) verifies claims, not addresses: each visitor's claim on an
    # address has its own one-time code and lockout (so a stranger cannot lock a recipient
    # out), and an address's codes per hour over all claims are capped (store/sqlite/claims.py)
    """
    CREATE TABLE download_claims (
        id            INTEGER PRIMARY KEY, -- random: a pass names it
        attachment_id TEXT NOT NULL REFERENCES attachments (id) ON DELETE CASCADE,
        address       TEXT NOT NULL,       -- normalized, as claimed (a recipient or not)
        recipient_id  INTEGER REFERENCES recipients (id) ON DELETE CASCADE,  -- NULL: not one
        created_at    INTEGER NOT NULL,
        otp_secret    BLOB,                -- sealed with the field key; NULL when none or spent
        otp_sent_at   INTEGER,
        otp_sends     INTEGER NOT NULL DEFAULT 0,
        funded        INTEGER NOT NULL DEFAULT 0,  -- account answers: this round has its share
        failed_streak INTEGER NOT NULL DEFAULT 0,
        lockouts      INTEGER NOT NULL DEFAULT 0,
        locked_until  INTEGER
    );
    CREATE INDEX download_claims_created ON download_claims (created_at);
    CREATE TABLE claim_budget (            -- one row per code (or answer round) an address got
        address TEXT NOT NULL,
        at      INTEGER NOT NULL
    );
    CREATE INDEX claim_budget_address ON claim_budget (address, at);
    CREATE INDEX claim_budget_at ON claim_budget (at);
    """,
    # 14: recipients' public keys the organization imported (issue 26, `zivmilter keys`,
    # store/sqlite/recipientkeys.py); public material, stored as given and judged at each use
    """
    CREATE TABLE recipient_keys (
        ident       TEXT PRIMARY KEY,      -- OpenPGP fingerprint or S/MIME certificate serial
        kind        TEXT NOT NULL,         -- openpgp | smime
        material    BLOB NOT NULL,         -- OpenPGP certificate (binary) or X.509 DER
        imported_at INTEGER NOT NULL
    );
    CREATE TABLE recipient_key_addresses (
        ident   TEXT NOT NULL REFERENCES recipient_keys (ident) ON DELETE CASCADE,
        address TEXT NOT NULL,             -- normalized
        PRIMARY KEY (address, ident)
    );
    CREATE INDEX recipient_key_addresses_ident ON recipient_key_addresses (ident);
    """,
    # 15: the access-code peppers of previous key-encryption keys, carried over by `rekey` (an
    # access-code hash cannot be re-peppered without its code): sealed under the current key,
    # they let those hashes match once the previous key file is gone (store/rekey.py)
    """
    CREATE TABLE peppers (
        key_id TEXT PRIMARY KEY,  -- hex id of the key-encryption key the pepper belongs to
        sealed BLOB NOT NULL     -- the pepper, sealed with the current key's field key
    );
    """,
    # 16: the language a recipient chose in the portal (issue 25), for the next notification
    # to them (contacts.remember_language); NULL: none chosen
    """
    ALTER TABLE contacts ADD COLUMN language TEXT;
    """,
    # 17: when maintenance first found a carried pepper named by no access-code hash (NULL:
    # some hash names it); it prunes the pepper a grace later (store/peppers.py)
    """
    ALTER TABLE peppers ADD COLUMN unused_since INTEGER;
    """,
    # 18: the sign-in lockout of addresses without a sender account (store/senders.py), so it
    # locks them as an account's row locks it; named by an HMAC under the KEK, not the address
    # (sealing.sign_in_tag), and pruned by maintenance once lock and window have passed
    """
    CREATE TABLE sign_in_counts (
        tag           TEXT PRIMARY KEY,   -- sealing.sign_in_tag(address): no address in here
        failed_streak INTEGER NOT NULL DEFAULT 0,
        lockouts      INTEGER NOT NULL DEFAULT 0,
        locked_until  INTEGER,
        failed_at     INTEGER NOT NULL    -- the last wrong sign-in counted
    );
    """,
    # 19: the large attachments a try of a message kept for its direct copies, while the
    # message's handover lasts: a client's retry puts the same links in its copies instead of
    # storing them again (store/sqlite/handovers.py)
    """
    CREATE TABLE handover_attachments (
        attachment_id TEXT PRIMARY KEY REFERENCES attachments (id) ON DELETE CASCADE,
        message_id    TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        link          BLOB NOT NULL        -- the gateway's key and the token, sealed
    );                                     -- under the attachment's own key
    CREATE INDEX handover_attachments_message ON handover_attachments (message_id);
    """,
)

SCHEMA_VERSION = len(_MIGRATIONS)
DB_NAME = "store.sqlite3"


def migrate(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        current = 0 if row is None else int(row[0])
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"store schema version {current} is newer than this zivmilter ({SCHEMA_VERSION})"
            )
        for version in range(current, SCHEMA_VERSION):
            for statement in _statements(_MIGRATIONS[version]):
                conn.execute(statement)
        if row is None:
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        else:
            conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def check_version(conn: sqlite3.Connection, path: str) -> None:
    """A read-only open's check (it cannot migrate): refuse a database whose schema is not this
    zivmilter's. Its first read, so it is also where SQLite opens the write-ahead log."""
    try:
        row = conn.execute("SELECT version FROM schema_version").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        row = None
    if row is None:
        raise StoreError(f"{path}: no zivmilter store in {DB_NAME} (no schema yet)")
    current = int(row[0])
    if current < SCHEMA_VERSION:
        raise StoreError(
            f"{path}: store schema version {current} is older than this zivmilter"
            f" ({SCHEMA_VERSION}), and a read-only open does not migrate it: run"
            " `zivmilter store migrate --config FILE` (or start `zivmilter run`) first"
        )
    if current > SCHEMA_VERSION:
        raise StoreError(
            f"store schema version {current} is newer than this zivmilter ({SCHEMA_VERSION})"
        )


def _statements(script: str) -> list[str]:
    """Split a migration into statements (executescript would commit our transaction)."""
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
