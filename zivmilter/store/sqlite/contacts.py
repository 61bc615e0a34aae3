"""SQL of the organization's contact book (SPEC 8) and of the admins' IDD domain list."""

from __future__ import annotations

from zivmilter.core.addresses import normalize_address
from zivmilter.core.facts import Contact
from zivmilter.store import contacts
from zivmilter.store.contacts import ENTRY_COLUMNS
from zivmilter.store.records import ContactEntry, address_key
from zivmilter.store.sqlite.connection import SqliteBase, audit


class ContactsMixin(SqliteBase):
    def contact(self, address: str) -> Contact | None:
        key = address_key(address)
        if key is None:
            return None
        with self._lock:
            row = self._conn.execute(
                "SELECT sms, access_code_hash, language FROM contacts WHERE address = ?", (key,)
            ).fetchone()
        return contacts.contact(self._sealing, key, row)

    def remember_contact(
        self, address: str, sms: str | None = None, access_code_hash: str | None = None
    ) -> None:
        """Remember an SMS number or access code (hash) the recipient used successfully."""
        new = contacts.remembered(self._sealing, address, sms, access_code_hash, self._now())
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO contacts (address, sms, access_code_hash, used_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (address) DO UPDATE SET sms = COALESCE(excluded.sms, sms),"
                " access_code_hash = COALESCE(excluded.access_code_hash, access_code_hash),"
                " used_at = excluded.used_at",
                (new.address, new.sms, new.access_code_hash, new.used_at),
            )
            audit(cur, new.used_at, None, new.address, "contact-remembered", new.detail)

    def remember_language(self, address: str, language: str) -> None:
        """The language the recipient chose in the portal, for their next notification. Not a
        use of the contact book (used_at stays); a new entry has no `used_at` until one."""
        key = normalize_address(address)
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO contacts (address, language) VALUES (?, ?)"
                " ON CONFLICT (address) DO UPDATE SET language = excluded.language",
                (key, language),
            )

    def contacts(self) -> list[ContactEntry]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {ENTRY_COLUMNS} FROM contacts ORDER BY address"
            ).fetchall()
        return contacts.entries(self._sealing, rows)

    def forget_contact(self, address: str) -> bool:
        key = normalize_address(address)
        with self._transaction() as cur:
            n = cur.execute("DELETE FROM contacts WHERE address = ?", (key,)).rowcount
            if n:
                audit(cur, int(self._now()), None, key, "contact-forgotten", "")
        return bool(n)


class IddMixin(SqliteBase):
    def idd_domains(self) -> list[str]:
        """Domains an admin listed as having inbound direct delivery (besides idd.domains)."""
        with self._lock:
            rows = self._conn.execute("SELECT domain FROM idd_domains ORDER BY domain").fetchall()
        return contacts.domains(rows)

    def set_idd_domain(self, domain: str, enabled: bool) -> bool:
        """Add (enabled) or remove a domain; False when nothing changed."""
        now = int(self._now())
        with self._transaction() as cur:
            if enabled:
                cur.execute(
                    "INSERT OR IGNORE INTO idd_domains (domain, added_at) VALUES (?, ?)",
                    (domain, now),
                )
            else:
                cur.execute("DELETE FROM idd_domains WHERE domain = ?", (domain,))
            changed = cur.rowcount > 0
            if changed:
                audit(cur, now, None, None, contacts.idd_event(enabled), domain)
        return changed
