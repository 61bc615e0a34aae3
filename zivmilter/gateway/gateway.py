"""The gateway: what happens to one message at end-of-data, independent of libmilter.

The milter adapter (milter.py) hands over a `Transaction` (envelope, macros, headers, spooled
message) and applies the `Plan` it gets back. In between, in this order:
1. the policy core decides per recipient (assess.py — the same path `explain` shows);
2. the content is encrypted into the store, durably, before anything is sent;
3. notifications (one per recipient, personal link), direct copies (one per transport level
   and next hop, tagged with the route header, see route.py) and a DSN for failed recipients
   are built;
4. one group stays in the current transaction; every other copy is re-injected and must be
   accepted, or a DeliveryError makes the milter tempfail (nothing is lost).
"""

from __future__ import annotations

import logging
import re
import shutil
import socket
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import Message
from typing import BinaryIO

from zivmilter import defaults
from zivmilter.core import submission
from zivmilter.core.addresses import normalize_address
from zivmilter.core.assess import Assessment, assess
from zivmilter.core.bodytext import parts_of_body
from zivmilter.core.config import Config
from zivmilter.core.content import Part
from zivmilter.core.directives import AccessKind
from zivmilter.core.facts import Facts
from zivmilter.core.headers import ROUTE_HEADER, is_directive
from zivmilter.core.levels import Level
from zivmilter.core.message import decoded_header, header_message, utf8_text
from zivmilter.core.policy import Delivery, Method, RecipientDecision
from zivmilter.core.route import route_value
from zivmilter.core.submission import SenderAccounts, SpfChecker, StoreSenderAccounts
from zivmilter.delivery.reinject import Outgoing, Reinjector
from zivmilter.errors import DeliveryError, MessageError
from zivmilter.gateway.transaction import Plan, Transaction
from zivmilter.mail import attachments, dsn, notification
from zivmilter.store import NewMessage, NewRecipient, SavedMessage, Store

log = logging.getLogger("zivmilter.gateway")

# Headers a stored or direct copy never carries: secrets, routing, and who else got a Bcc.
_STRIP = frozenset({"bcc", ROUTE_HEADER.lower()})
# Unselected mail passes as it is but for directive headers (and a client's route header, which
# Postfix's header_checks already drops: never obeyed).
_PASS_STRIP = frozenset({ROUTE_HEADER.lower()})
# Trace headers of our own MTA stay when the current transaction becomes a notification.
_KEEP_ON_REWRITE = frozenset({"received", "return-path"})


@dataclass(frozen=True)
class _Copy:
    """One outgoing message: who gets it and its headers + body."""

    recipients: tuple[str, ...]  # normalized addresses
    content: bytes | None  # a new message (CRLF); None: the original, with header edits only
    route: Level | None  # direct-delivery level, for the route header
    what: str
    next_hop: tuple[str, ...] = ()  # ntamx hosts instead of the recipients' MX (NTA 7516)

    @property
    def route_value(self) -> str | None:
        return None if self.route is None else route_value(self.route, self.next_hop)


class Gateway:
    def __init__(
        self,
        cfg: Config,
        facts: Facts,
        store: Store,
        reinjector: Reinjector,
        hostname: str | None = None,
        clock: type[datetime] = datetime,
        spf: SpfChecker | None = None,
        senders: SenderAccounts | None = None,
    ) -> None:
        self.spf: SpfChecker = spf or submission.NoSpf()
        self.senders: SenderAccounts = senders or StoreSenderAccounts(store)
        self.cfg = cfg
        self.facts = facts
        self.store = store
        self.reinjector = reinjector
        self.hostname = hostname or socket.getfqdn()
        self.clock = clock

    # ------------------------------------------------------------------------------------
    def process(self, tx: Transaction) -> Plan:
        if self.cfg.milter.mta == "postfix" and tx.mta and tx.mta[:1].isdigit():
            # Sendmail names itself by its version alone. It cannot route a direct copy on the
            # route header, so with milter.mta: postfix that copy would leave under Sendmail's
            # own TLS settings: hold the mail (4xx) until the configuration says sendmail.
            reply = (
                f"451 4.3.5 zivmilter: the MTA is Sendmail {tx.mta}, but milter.mta is"
                " postfix; set milter.mta: sendmail"
            )
            log.error("%s", reply, extra=_ctx(tx))
            return Plan(reject=reply, summary=f"refused: {reply}")
        verdict = submission.check(
            self.cfg,
            tx.headers,
            client_ip=tx.client_address,
            auth_login=tx.auth_login,
            envelope_sender=_bare(tx.sender),
            spf=self.spf,
            accounts=self.senders,
            rules=submission.rules_for(self.cfg, tx.listener),
            helo=tx.helo,
        )
        if not verdict.accepted:
            log.warning("submission refused: %s", verdict.reason, extra=_ctx(tx))
            return Plan(reject=verdict.reply, summary=f"refused: {verdict.reply}")
        raw_by_norm, unusable = _raw_recipients(tx.recipients)
        text = _text(tx, self.cfg)
        result = assess(tx.headers, _bare(tx.sender), list(raw_by_norm), self.cfg, self.facts, text)
        for m in result.selection.matches:  # masked: never the number itself in the log
            log.info("content rule %s matched in %s: %s", m.rule, m.where, m.masked, extra=_ctx(tx))
        if not result.selection.selected:
            # Not secured: it passes as it is, but never with its directive headers (SPEC 2).
            log.info("not selected: %s", result.selection.reason, extra=_ctx(tx))
            return Plan(
                delete_headers=self._strip_plan(tx, _PASS_STRIP), summary="not selected: passed"
            )
        subject_change: list[tuple[str, int, str]] = []
        if result.selection.new_subject is not None:
            _set_subject(tx, result.selection.new_subject)
            subject_change = [("Subject", 1, result.selection.new_subject)]
        for warning in result.decision.warnings:
            log.warning("%s", warning, extra=_ctx(tx))
        stripped = self._strip_plan(tx, _STRIP)
        delivered = [d for d in result.decision.recipients if d.delivery is not Delivery.FAILED]
        # Decisions use the normalized form; the MTA and reports get the address as given
        # (RFC 5321: a local part may be case-sensitive).
        as_given = {norm: _bare(raws[0]) for norm, raws in raw_by_norm.items()}
        failed = [
            (raw_by_norm[d.address][0], "5.7.1", d.reason)
            for d in result.decision.recipients
            if d.delivery is Delivery.FAILED
        ]
        # An envelope recipient the MTA took but that is no valid address fails alone: a
        # tempfail would only hold the whole message until it bounces.
        for raw, problem in unusable:
            log.warning("to=%s failed: %s", raw, problem, extra=_ctx(tx))
            failed.append((raw, "5.1.3", problem))
        reported = _reported_failures(tx, failed)
        for d in result.decision.recipients:
            log.info(
                "to=<%s> delivery=%s method=%s level=%s rule=%s conversation=%s%s",
                d.address,
                d.delivery.value,
                d.method.value,
                d.level.value if d.level else "-",
                d.rule,
                d.conversation,
                f" nexthop={','.join(d.next_hop)}" if d.next_hop else "",
                extra=_ctx(tx),
            )

        original = _original_headers(tx, result.selection.new_subject)
        saved: SavedMessage | None = None
        if delivered:
            author = _author(verdict.claimed, result.envelope.sender, self.cfg)
            saved = self._store(tx, result, delivered, original, author)
        try:
            copies = self._copies(tx, delivered, original, saved)
            outgoing: list[Outgoing] = []
            sender = _bare(tx.sender)
            kept = self._choose_kept(copies)
            for copy in copies:
                if copy is not kept:
                    outgoing.append(self._outgoing(tx, copy, sender, as_given))
            if reported and sender:
                report = dsn.build_dsn(
                    original,
                    sender,
                    reported,
                    self.hostname,
                    self.clock.now(UTC),
                )
                data = report.as_bytes(policy=dsn.WIRE_POLICY)
                outgoing.append(Outgoing("", [sender], data, "DSN"))
            replies = self.reinjector.send(outgoing)
        except BaseException as exc:
            if saved is not None:
                if isinstance(exc, DeliveryError) and exc.accepted:
                    # Copies the MTA took will go out: their links must keep working. The
                    # client's retry stores and notifies again (a second notification at worst).
                    log.warning(
                        "re-injection failed after %d accepted copies; stored copy %s kept",
                        exc.accepted,
                        saved.id,
                        extra=_ctx(tx),
                    )
                else:
                    self.store.discard(saved.id)  # the client retries; no second copy
            raise
        for out, reply in zip(outgoing, replies, strict=True):
            log.info("re-injected %s: %s", out.what, reply, extra=_ctx(tx))

        plan = self._plan_for_kept(tx, kept, raw_by_norm, stripped)
        plan.delete_recipients += [raw for raw, _problem in unusable]
        if kept is not None and kept.content is None:  # the original stays: fix its Subject
            plan.change_headers = subject_change
        plan.summary = (
            f"stored={saved.id if saved else '-'} delivered={len(delivered)} failed={len(failed)} "
            f"reinjected={len(outgoing)} kept={kept.what if kept else 'nothing (discard)'}"
        )
        return plan

    # ------------------------------------------------------------------------------------
    def _store(
        self,
        tx: Transaction,
        result: Assessment,
        delivered: list[RecipientDecision],
        original: Message,
        author: str,
    ) -> SavedMessage:
        # Only notification messages expire: a direct copy is delivered and read (SPEC 8).
        expiry = self.cfg.policy.expiry_days
        notifies = any(d.delivery is Delivery.NOTIFICATION for d in delivered)
        expires = self.clock.now(UTC) + timedelta(days=expiry) if expiry and notifies else None
        with _clean_copy(tx) as content:
            return self.store.save_message(
                NewMessage(
                    sender=author,
                    subject=decoded_header(original.get("Subject", "")),
                    content=content,
                    recipients=[_new_recipient(d) for d in delivered],
                    rfc822_id=tx.message_id if tx.message_id != "-" else None,
                    queue_id=tx.queue_id,
                    expires_at=expires,
                )
            )

    def _copies(
        self,
        tx: Transaction,
        delivered: list[RecipientDecision],
        original: Message,
        saved: SavedMessage | None,
    ) -> list[_Copy]:
        """Direct groups first (one per level and next hop, strongest level first, the MX
        before ntamx hosts), then one notification per recipient."""
        copies: list[_Copy] = []
        groups: dict[tuple[Level, tuple[str, ...]], list[str]] = {}
        for d in delivered:
            if d.delivery is Delivery.DIRECT and d.level is not None:
                groups.setdefault((d.level, d.next_hop), []).append(d.address)
        direct = self._direct_content(tx, saved) if groups else None
        for level, next_hop in sorted(groups, key=lambda g: (-g[0].rank, g[1])):
            what = f"direct-{level.value} copy"
            if next_hop:
                what += f" via {', '.join(next_hop)}"
            copies.append(_Copy(tuple(groups[level, next_hop]), direct, level, what, next_hop))
        for d in delivered:
            if d.delivery is not Delivery.NOTIFICATION or saved is None:
                continue
            note = notification.notification_for(
                original, d.address, saved.tokens[d.address], _verification_text(d), self.cfg
            )
            copies.append(_Copy((d.address,), note.wire(), None, f"notification to {d.address}"))
        return copies

    def _choose_kept(self, copies: list[_Copy]) -> _Copy | None:
        """The copy that stays in the current transaction; the others are re-injected.

        Sendmail cannot route one message to a TLS-enforcing transport on a header, so with
        `milter.mta: sendmail` direct copies always go through the re-injection relay.
        """
        if self.cfg.milter.mta == "sendmail":
            return next((c for c in copies if c.route is None), None)
        return copies[0] if copies else None

    def _direct_content(self, tx: Transaction, saved: SavedMessage | None) -> bytes | None:
        """The direct copy with large attachments replaced by links, or None to send it as is."""
        if saved is None:
            return None
        base = self.cfg.portal.base_url.rstrip("/") + "/d/"

        def keep(filename: str, content_type: str, data: bytes) -> str:
            kept = self.store.save_attachment(saved.id, filename, content_type, data)
            log.info("large attachment %s kept for download", filename, extra=_ctx(tx))
            return base + kept.token

        with _clean_copy(tx) as content:
            found = attachments.replace_large(content, self.cfg.policy.large_attachment_bytes, keep)
        return None if found is None else found[0]

    def _outgoing(
        self, tx: Transaction, copy: _Copy, sender: str, as_given: dict[str, str]
    ) -> Outgoing:
        route = b"" if copy.route_value is None else _route_field(copy.route_value)
        rcpts = tuple(as_given.get(r, r) for r in copy.recipients)
        if copy.content is not None:
            return Outgoing(sender, rcpts, route + copy.content, copy.what)
        # closed with the Outgoing once the batch is sent (its content is read once)
        spool = tempfile.SpooledTemporaryFile(max_size=self.cfg.milter.spool_threshold)  # noqa: SIM115
        spool.write(route)
        with _clean_copy(tx) as content:
            shutil.copyfileobj(content, spool)
        return Outgoing(sender, rcpts, spool, copy.what)  # type: ignore[arg-type]

    def _strip_plan(self, tx: Transaction, strip: frozenset[str]) -> list[tuple[str, int]]:
        """Deletions of the directive headers, and of the headers named in `strip`."""
        counts: dict[str, int] = {}
        deletions: list[tuple[str, int]] = []
        for name, _value in tx.headers:
            key = name.lower()
            counts[key] = counts.get(key, 0) + 1
            if is_directive(name) or key in strip:
                deletions.append((name, counts[key]))
        return deletions

    def _plan_for_kept(
        self,
        tx: Transaction,
        kept: _Copy | None,
        raw_by_norm: dict[str, list[str]],
        stripped: list[tuple[str, int]],
    ) -> Plan:
        if kept is None:
            return Plan(delete_headers=stripped, discard=True)
        keep = set(kept.recipients)
        # Not kept: every form goes. Kept: one form stays, its duplicates in other case go.
        drop = [
            raw
            for norm, raws in raw_by_norm.items()
            for raw in (raws if norm not in keep else raws[1:])
        ]
        route = [] if kept.route_value is None else [(ROUTE_HEADER, kept.route_value)]
        if kept.content is None:
            return Plan(delete_headers=stripped, add_headers=route, delete_recipients=drop)
        # A new message (a notification, or a direct copy whose large attachments became links)
        # replaces this one: its headers and body come in, every original header goes but our
        # trace headers and those it carries unchanged (From, To, Cc, Date, threading): fewer
        # edits for the MTA to apply.
        head, _, body = kept.content.partition(b"\r\n\r\n")
        wanted = _header_fields(head)
        unchanged = {(n.lower(), _unfolded(v)) for n, v in wanted}
        counts: dict[str, int] = {}
        deletions: list[tuple[str, int]] = []
        kept_fields: set[tuple[str, str]] = set()
        for name, value in tx.headers:
            key = name.lower()
            counts[key] = counts.get(key, 0) + 1
            field = (key, _unfolded(value))
            if key in _KEEP_ON_REWRITE or (field in unchanged and field not in kept_fields):
                kept_fields.add(field)
                continue
            deletions.append((name, counts[key]))
        additions = [(n, v) for n, v in wanted if (n.lower(), _unfolded(v)) not in kept_fields]
        additions += route
        return Plan(
            delete_headers=deletions,
            add_headers=additions,
            replace_body=body,
            delete_recipients=drop,
        )


# ----------------------------------------------------------------------------------------------
# helpers


def _route_field(value: str) -> bytes:
    return f"{ROUTE_HEADER}: {value}\r\n".encode()


def _text(tx: Transaction, cfg: Config) -> list[Part]:
    """The message's text for the content rules, when any is on (bounded: bodytext.py)."""
    content = cfg.selection.content
    if not content.active:
        return []
    tx.message.seek(0)
    data = tx.message.read(tx.body_offset + defaults.CONTENT_MAX_MESSAGE_BYTES)
    return parts_of_body(tx.headers, data, tx.body_offset, content.scope)


def _ctx(tx: Transaction) -> dict[str, str]:
    return {"queue_id": tx.queue_id or "-", "message_id": tx.message_id}


def _reported_failures(
    tx: Transaction, failed: list[tuple[str, str, str]]
) -> list[tuple[str, str, str, str | None]]:
    """The failures the DSN reports, from (RCPT argument, status, reason): a recipient given
    with NOTIFY=NEVER, or a NOTIFY without FAILURE, is left out (RFC 3461 4.1); its ORCPT
    becomes the Original-Recipient field."""
    out: list[tuple[str, str, str, str | None]] = []
    for raw, status, reason in failed:
        params: dict[str, str] = {}
        for param in tx.recipient_params.get(raw, ()):
            key, _, value = param.partition("=")
            params.setdefault(key.strip().upper(), value.strip())
        notify = {n.strip().upper() for n in params.get("NOTIFY", "FAILURE").split(",")}
        if "FAILURE" not in notify:
            continue
        original = None
        if "ORCPT" in params:
            kind, _, xtext = params["ORCPT"].partition(";")
            original = f"{kind.strip()}; {_xtext_decoded(xtext.strip())}"
        out.append((utf8_text(_bare(raw)), status, utf8_text(reason), original))
    return out


def _xtext_decoded(text: str) -> str:
    """RFC 3461 xtext: "+" and two upper-case hex digits stand for one byte (UTF-8 for an
    internationalized address)."""
    raw = text.encode("utf-8", "surrogateescape")
    decoded = re.sub(rb"\+([0-9A-F]{2})", lambda m: bytes([int(m.group(1), 16)]), raw)
    return decoded.decode("utf-8", "replace")


def _bare(address: str) -> str:
    a = address.strip()
    if a.startswith("<") and a.endswith(">"):
        a = a[1:-1].strip()
    return a


def _author(claimed: Sequence[str], envelope_sender: str, cfg: Config) -> str:
    """Who wrote the message, as the store keeps it: secure replies go there, and the portal
    and the codes it sends name it. The first From mailbox (`claimed`: the addresses
    submission checked); not the envelope sender, which for an application relay is a bounce
    or null address. That is only the fallback, for a message without a usable From."""
    if claimed:
        return claimed[0]
    return envelope_sender or "mailer-daemon@" + cfg.organization.domains[0]


def _raw_recipients(raw: Sequence[str]) -> tuple[dict[str, list[str]], list[tuple[str, str]]]:
    """Normalized address -> the RCPT TO forms the MTA gave (delrcpt needs them as given);
    and the forms that are no valid address, each with the reason."""
    out: dict[str, list[str]] = {}
    unusable: list[tuple[str, str]] = []
    for r in raw:
        try:
            norm = normalize_address(_bare(r))
        except MessageError as exc:
            unusable.append((r, str(exc)))
            continue
        out.setdefault(norm, []).append(r)
    return out, unusable


def _new_recipient(d: RecipientDecision) -> NewRecipient:
    verification: str | None
    phone = code = None
    if d.delivery is Delivery.DIRECT:
        verification = None
    elif d.method is Method.ACCOUNT:
        verification = "account"
    elif d.access_right is AccessKind.SMS:
        verification, phone = "sms", d.secret
    elif d.access_right is AccessKind.ACCESS_CODE:
        verification, code = "access_code", d.secret
    else:
        verification = "email"
    return NewRecipient(
        address=d.address,
        conversation=d.conversation or 1,
        method=d.method.value,
        delivery="direct" if d.delivery is Delivery.DIRECT else "notification",
        rule=d.rule,
        level=d.level.value if d.level else None,
        verification=verification,  # type: ignore[arg-type]
        phone=phone,
        access_code=code,
    )


def _verification_text(d: RecipientDecision) -> notification.Verification:
    if d.method is Method.ACCOUNT:
        return notification.Verification("account")
    if d.access_right is AccessKind.SMS:
        return notification.Verification("sms", phone=d.secret)
    if d.access_right is AccessKind.ACCESS_CODE:
        return notification.Verification("access_code")
    return notification.Verification("email")


def _original_headers(tx: Transaction, new_subject: str | None) -> Message:
    """The fields the milter collected (compat32: raw values), not the header block parsed
    again; with the first Subject as `_set_subject` rewrote it in the spool, if it did."""
    original = header_message(tx.headers)
    if new_subject is not None and "Subject" in original:
        original.replace_header("Subject", new_subject)  # the first one, as _set_subject does
    return original


class _clean_copy:
    """The message without directive headers, Bcc and route headers, as a readable file (the
    message's own spool when it has none of them: left open)."""

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx
        self.spool: BinaryIO | None = None

    def __enter__(self) -> BinaryIO:
        tx = self.tx
        tx.message.seek(0)
        head = tx.message.read(tx.body_offset)
        fields = head[:-2] if head.endswith(b"\r\n\r\n") else head  # the blank line apart
        kept = b"".join(f for f in _raw_fields(fields) if not _field_is_stripped(f))
        if len(kept) == len(fields):  # nothing to strip: the message itself, read from its start
            tx.message.seek(0)
            return tx.message
        spool = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)
        spool.write(kept + b"\r\n")
        shutil.copyfileobj(tx.message, spool)
        spool.seek(0)
        self.spool = spool  # type: ignore[assignment]
        return spool  # type: ignore[return-value]

    def __exit__(self, *exc: object) -> None:
        if self.spool is not None:
            self.spool.close()


_FIELD_START = re.compile(rb"(?m)^(?![ \t])")


def _raw_fields(head: bytes) -> list[bytes]:
    """Split a header block into whole fields (with their folded lines and line ends)."""
    parts = [p for p in _FIELD_START.split(head) if p]
    return parts


def _field_is_stripped(raw_field: bytes) -> bool:
    name = raw_field.split(b":", 1)[0].decode("ascii", "replace").strip()
    return not name or is_directive(name) or name.lower() in _STRIP


_FOLDING_WHITE_SPACE = re.compile(r"(?:[ \t]|\r?\n(?=[ \t]))+")


def _unfolded(value: str) -> str:
    """A field value unfolded, its runs of spaces and tabs one space: how folding may differ.
    (Not str.split(): a form feed or vertical tab in a value is no white space to fold.)"""
    return " ".join(_FOLDING_WHITE_SPACE.split(value.strip(" \t\r\n")))


def _header_fields(head: bytes) -> list[tuple[str, str]]:
    """(name, value) pairs of a generated header block, folding kept as LF + white space."""
    fields: list[tuple[str, str]] = []
    for raw in _raw_fields(head + b"\r\n"):
        text = raw.decode("utf-8", "surrogateescape").rstrip("\r\n")
        if not text:
            continue
        name, _, value = text.partition(":")
        fields.append((name, value.lstrip(" ").replace("\r\n", "\n")))
    return fields


def _set_subject(tx: Transaction, value: str) -> None:
    """Rewrite the first Subject field of the spooled message, so that the stored copy, the
    notifications and the direct copies all carry the subject without its trigger word.
    `tx.headers` stays as the MTA holds them: header edits refer to those."""
    tx.message.seek(0)
    head = tx.message.read(tx.body_offset)
    fields = _raw_fields(head[:-2] if head.endswith(b"\r\n\r\n") else head)
    out: list[bytes] = []
    done = False
    for f in fields:
        if not done and f.split(b":", 1)[0].strip().lower() == b"subject":
            out.append(b"Subject: " + value.replace("\n", "\r\n").encode() + b"\r\n")
            done = True
        else:
            out.append(f)
    new_head = b"".join(out) + b"\r\n"
    spool = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)  # noqa: SIM115 - replaces tx.message
    spool.write(new_head)
    shutil.copyfileobj(tx.message, spool)
    tx.message.close()
    tx.message = spool  # type: ignore[assignment]
    tx.body_offset = len(new_head)
