"""The gateway: what happens to one message at end-of-data, independent of libmilter.

The milter adapter (milter.py) hands over a `Transaction` (envelope, macros, headers, spooled
message) and applies the `Plan` it gets back. In between, in this order:
0. a message whose MIME parts nest deeper than the `email` package can walk is refused for good
   (core/limits.py; the milter refuses one over milter.max_message_bytes itself);
1. the policy core decides per recipient (assess.py — the same path `explain` shows);
2. the content is encrypted into the store, durably, before anything is sent;
3. notifications (one per recipient, personal link), direct copies (one per transport level
   and next hop, tagged with the route header, see route.py) and a DSN for failed recipients
   are built;
4. one group stays in the current transaction; every other copy is re-injected and must be
   accepted, or a DeliveryError makes the milter tempfail (nothing is lost).

A client retries a tempfailed message. Copies the MTA took before the tempfail go out all the
same, so the store remembers each one as it is taken, under a retry key (envelope, decisions,
Message-ID, content): the retry reuses the stored message and its links, the large attachments
kept for its direct copies among them, and hands over only what is still missing, one copy per
recipient.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.message import Message

from zivmilter import defaults, metrics
from zivmilter.core import limits, submission
from zivmilter.core.addresses import bare_address, envelope_recipients
from zivmilter.core.assess import Assessment, assess
from zivmilter.core.bodytext import parts_of_body, pdf_text_bytes
from zivmilter.core.config import Config
from zivmilter.core.content import Part
from zivmilter.core.directives import AccessKind
from zivmilter.core.facts import Facts
from zivmilter.core.header_block import header_fields, unfolded
from zivmilter.core.headers import ACCESS_RIGHT, NOT_COPIED, ROUTE_HEADER, is_directive
from zivmilter.core.levels import Level
from zivmilter.core.message import decoded_header, header_message
from zivmilter.core.policy import (
    Delivery,
    Method,
    RecipientDecision,
    pdf_too_large,
    pdf_too_much_text,
)
from zivmilter.core.route import route_value
from zivmilter.core.submission import SenderAccounts, SpfChecker, StoreSenderAccounts
from zivmilter.delivery.reinject import Outgoing, Reinjector
from zivmilter.errors import DeliveryError
from zivmilter.gateway.attachtext import attachment_parts
from zivmilter.gateway.spool import clean_copy, set_subject
from zivmilter.gateway.transaction import Plan, Transaction
from zivmilter.keys import formats
from zivmilter.mail import attachments, dsn, notification, parts
from zivmilter.spool import spool_file
from zivmilter.store import (
    GatewayStore,
    NewMessage,
    NewPart,
    NewRecipient,
    SavedAttachment,
    SavedMessage,
)

log = logging.getLogger("zivmilter.gateway")

# Unselected mail passes as it is but for directive headers (and a client's route header, which
# Postfix's header_checks already drops: never obeyed).
_PASS_STRIP = frozenset({ROUTE_HEADER.lower()})
# Trace headers of our own MTA stay when the current transaction becomes a notification.
_KEEP_ON_REWRITE = frozenset({"received", "return-path"})
# Fields the MTA may write anew for each try of a message (its queue id, the time: Postfix adds
# a Date the client left out): not part of a retry key. The Message-ID is.
_TRACE = frozenset({"received", "return-path", "x-original-to", "delivered-to", "date"})
_DSN_KEY = "DSN"


@dataclass(frozen=True)
class _Copy:
    """One outgoing message: who gets it and its headers + body."""

    recipients: tuple[str, ...]  # normalized addresses
    content: bytes | None  # a new message (CRLF); None: the original, with header edits only
    route: Level | None  # direct-delivery level, for the route header
    what: str
    next_hop: tuple[str, ...] = ()  # ntamx hosts instead of the recipients' MX (NTA 7516)

    @property
    def key(self) -> str:
        """Names this copy among a message's copies, the same in a retry (links differ not)."""
        return f"{self.what}: {','.join(self.recipients)}"

    @property
    def route_value(self) -> str | None:
        return None if self.route is None else route_value(self.route, self.next_hop)


class Gateway:
    def __init__(
        self,
        cfg: Config,
        facts: Facts,
        store: GatewayStore,
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
        if cfg.encryption.pdf:
            # The PDF stack (fpdf2, fontTools, Pillow, pikepdf: ~30 MB and most of a second
            # of the milter's start, bench/start.py) imported here, at start, and only where
            # PDFs are made: a broken install stops the start, not a message, and no import
            # runs in a libmilter thread (pikepdf is pybind11: see pdf._in_python_thread).
            from zivmilter.mail import pdf  # noqa: F401

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
        # Before anything reads its parts: a message nested too deep for them is refused for
        # good (5.6.0), not a fault to tempfail at every try (core/limits.py).
        if _too_deep(tx, clean=False):
            return _refused_too_deep()
        sender = bare_address(tx.sender)  # "" for the null sender
        verdict = submission.check(
            self.cfg,
            tx.headers,
            client_ip=tx.client_address,
            auth_login=tx.auth_login,
            envelope_sender=sender,
            spf=self.spf,
            accounts=self.senders,
            rules=submission.rules_for(self.cfg, tx.listener),
            helo=tx.helo,
        )
        if not verdict.accepted:
            log.warning("submission refused: %s", verdict.reason, extra=_ctx(tx))
            return Plan(reject=verdict.reply, summary=f"refused: {verdict.reply}")
        raw_by_norm, unusable = envelope_recipients(tx.recipients)
        text = _text(tx, self.cfg)
        if "attachment_text" in self.cfg.selection.content.scope:
            text = [*text, *self._attachment_text(tx)]
        size = _message_bytes(tx)
        text_size = self._pdf_text_bytes(tx, size)
        result = assess(
            tx.headers, sender, list(raw_by_norm), self.cfg, self.facts, text, size, text_size
        )
        for m in result.selection.matches:  # masked: never the number itself in the log
            log.info("content rule %s matched in %s: %s", m.rule, m.where, m.masked, extra=_ctx(tx))
        if not result.selection.selected:
            # Not secured: it passes as it is, but never with its directive headers (SPEC 2).
            log.info("not selected: %s", result.selection.reason, extra=_ctx(tx))
            return Plan(
                delete_headers=self._strip_plan(tx, _PASS_STRIP),
                summary="not selected: passed",
                selected=False,
            )
        subject_change: list[tuple[str, int, str]] = []
        if result.selection.new_subject is not None:
            set_subject(tx, result.selection.new_subject)
            subject_change = [("Subject", 1, result.selection.new_subject)]
        if _bare_cr(tx) and _too_deep(tx, clean=True):
            return _refused_too_deep()
        for warning in result.decision.warnings:
            log.warning("%s", warning, extra=_ctx(tx))
        self._log_pdf_refused(tx, result.decision.recipients, size, text_size)
        stripped = self._strip_plan(tx, NOT_COPIED)
        delivered = [d for d in result.decision.recipients if d.delivery is not Delivery.FAILED]
        # Decisions use the normalized form; the MTA and reports get the address as given
        # (RFC 5321: a local part may be case-sensitive).
        as_given = {norm: bare_address(raws[0]) for norm, raws in raw_by_norm.items()}
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
        reported = dsn.reported_failures(failed, tx.recipient_params)
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

        metrics.recipients(
            (d.method.value, d.delivery.value, d.level.value if d.level else "")
            for d in result.decision.recipients
        )
        original = _original_headers(tx, result.selection.new_subject)
        author = _author(verdict.claimed, result.envelope.sender, self.cfg)
        saved: SavedMessage | None = None
        handed: frozenset[str] = frozenset()
        taken: list[str] = []  # copies the MTA took in this try
        retry = False
        retry_key: str | None = None
        # Large attachments earlier tries kept, by the gateway's key; None: no handover
        remembered: Mapping[str, SavedAttachment] | None = None
        if delivered:
            several = _copy_count(delivered) > 1 or (reported and sender)
            if several or self._reinjects_all(delivered):
                # Copies are handed over before the answer: a retry must know which. (A single
                # copy stays in the transaction, but for Sendmail's direct and encrypted ones: a
                # retry stores and notifies anew, none twice.) The digest reads tx.headers (kept
                # as the MTA gave them) and the body, which the Subject rewrite leaves alone: the
                # same as the client sent
                retry_key = _retry_key(tx, sender, result.decision.recipients, _content_digest(tx))
            before = None
            if retry_key is not None:
                before = self.store.find_handover(retry_key, defaults.RETRY_WINDOW_SECONDS)
                remembered = {} if before is None else before.attachments
            if before is not None:
                retry = True
                saved, handed = SavedMessage(before.message_id, before.tokens, 0), before.handed
                log.info(
                    "a retry of stored message %s: %d copies were handed over before",
                    saved.id,
                    len(handed),
                    extra=_ctx(tx),
                )
            else:
                saved = self._store(tx, result, delivered, original, author, retry_key)
        try:
            made = self._copies(tx, delivered, original, saved, author, handed, remembered)
            copies = [c for c in made if c.key not in handed]
            outgoing: list[Outgoing] = []
            kept = self._choose_kept(copies)
            for copy in copies:
                if copy is not kept:
                    out = self._outgoing(tx, copy, sender, as_given)
                    outgoing.append(self._marked(out, saved, copy.key, taken))
            if reported and sender and _DSN_KEY not in handed:
                report = dsn.build_dsn(
                    original,
                    sender,
                    reported,
                    self.hostname,
                    self.clock.now(UTC),
                    from_address=self.cfg.organization.dsn_from,
                )
                data = report.as_bytes(policy=dsn.WIRE_POLICY)
                outgoing.append(
                    self._marked(Outgoing("", [sender], data, "DSN"), saved, _DSN_KEY, taken)
                )
            replies = self.reinjector.send(outgoing)
        except BaseException as exc:
            if saved is not None:
                self._after_failure(tx, exc, saved, retry, taken)
            raise
        for out, reply in zip(outgoing, replies, strict=True):
            log.info("re-injected %s: %s", out.what, reply, extra=_ctx(tx))
        if saved is not None and retry_key is not None:
            # Every copy is out or in the plan: the same message sent again is a new one (a
            # kill before the MTA has our answer leaves a copy twice, never one lost).
            self.store.end_handover(saved.id)

        plan = self._plan_for_kept(tx, kept, raw_by_norm, stripped)
        plan.delete_recipients += [raw for raw, _problem in unusable]
        if kept is not None and kept.content is None:  # the original stays: fix its Subject
            plan.change_headers = subject_change
        plan.summary = (
            f"stored={saved.id if saved else '-'} delivered={len(delivered)} failed={len(failed)} "
            f"reinjected={len(outgoing)} kept={kept.what if kept else 'nothing (discard)'}"
        )
        return plan

    def _pdf_text_bytes(self, tx: Transaction, size: int) -> int:
        """The text a PDF of the message would lay out (bodytext.pdf_text_bytes), counted only
        when a PDF can be made: with encryption.pdf, a message no larger than pdf_max_bytes
        (which the policy checks first), and a zivver-access-right field, since only a
        directive's access code opens a PDF (a remembered one is a hash). Otherwise 0."""
        enc = self.cfg.encryption
        if not enc.pdf or size > enc.pdf_max_bytes:
            return 0
        if not any(name.strip().lower() == ACCESS_RIGHT for name, _ in tx.headers):
            return 0
        tx.message.seek(0)
        data = tx.message.read()
        return pdf_text_bytes(tx.headers, data, tx.body_offset)

    def _log_pdf_refused(
        self, tx: Transaction, decisions: Sequence[RecipientDecision], size: int, text: int
    ) -> None:
        """One line per message whose size, or the size of its text, kept its access-code
        recipients from a PDF (the policy checks the size first: never both)."""
        enc = self.cfg.encryption
        if not enc.pdf:
            return
        if size > enc.pdf_max_bytes:
            why = pdf_too_large(size, enc.pdf_max_bytes)
            line = "the message is %d bytes, over encryption.pdf_max_bytes (%d)"
            figures = (size, enc.pdf_max_bytes)
        elif text > enc.pdf_max_text_bytes:
            why = pdf_too_much_text(text, enc.pdf_max_text_bytes)
            line = "the message's text is %d bytes, over encryption.pdf_max_text_bytes (%d)"
            figures = (text, enc.pdf_max_text_bytes)
        else:
            return
        kept = [d.address for d in decisions if d.pdf_refused == why]
        if kept:
            log.info(
                "no encrypted PDF: " + line + "; a notification instead to %s",
                *figures,
                ", ".join(kept),
                extra=_ctx(tx),
            )

    def _marked(
        self, out: Outgoing, saved: SavedMessage | None, key: str, taken: list[str]
    ) -> Outgoing:
        """The copy, recorded in the store as soon as the MTA takes it: a retry of this message
        leaves it out."""
        if saved is None:
            return out

        def accepted(_reply: str) -> None:
            taken.append(key)
            self.store.mark_handed(saved.id, key)

        return replace(out, on_accepted=accepted)

    def _after_failure(
        self,
        tx: Transaction,
        exc: BaseException,
        saved: SavedMessage,
        retry: bool,
        taken: list[str],
    ) -> None:
        """The milter tempfails: keep the stored message if anything may point to it."""
        uncertain = isinstance(exc, DeliveryError) and exc.uncertain
        if isinstance(exc, DeliveryError) and exc.accepted:
            # Copies the MTA took will go out: their links must keep working. The client's
            # retry reuses the stored message and hands over only the copies still missing.
            log.warning(
                "re-injection failed after %d accepted copies; stored copy %s kept",
                exc.accepted,
                saved.id,
                extra=_ctx(tx),
            )
        elif uncertain:
            # The MTA may have queued the last copy: its link must keep working too.
            log.warning(
                "re-injection lost its connection after a copy was sent; stored copy %s kept",
                saved.id,
                extra=_ctx(tx),
            )
        elif not retry and not taken:
            self.store.discard(saved.id)  # the client retries; no second copy

    # ------------------------------------------------------------------------------------
    def _store(
        self,
        tx: Transaction,
        result: Assessment,
        delivered: list[RecipientDecision],
        original: Message,
        author: str,
        retry_key: str | None,
    ) -> SavedMessage:
        # Only notification messages expire: a direct copy is delivered and read (SPEC 8).
        expiry = self.cfg.policy.expiry_days
        notifies = any(d.delivery is Delivery.NOTIFICATION for d in delivered)
        expires = self.clock.now(UTC) + timedelta(days=expiry) if expiry and notifies else None
        with clean_copy(tx) as content:
            # Large attachments apart too: the portal then streams one instead of parsing all.
            found = parts.large_attachments(content, defaults.STORED_PART_MIN) if notifies else []
            content.seek(0)
            with metrics.store_commit():
                return self.store.save_message(
                    NewMessage(
                        sender=author,
                        subject=decoded_header(original.get("Subject", "")),
                        content=content,
                        recipients=[_new_recipient(d) for d in delivered],
                        rfc822_id=tx.message_id if tx.message_id != "-" else None,
                        queue_id=tx.queue_id,
                        expires_at=expires,
                        parts=[NewPart(p.index, p.filename, p.content_type, p.data) for p in found],
                        retry_key=retry_key,
                    )
                )

    def _copies(
        self,
        tx: Transaction,
        delivered: list[RecipientDecision],
        original: Message,
        saved: SavedMessage | None,
        author: str,
        handed: frozenset[str],
        remembered: Mapping[str, SavedAttachment] | None,
    ) -> list[_Copy]:
        """Direct groups first (one per level and next hop, strongest level first, the MX
        before ntamx hosts), then one notification per recipient. The direct copies' content
        is made only when one of them is still to go (`handed`: the keys of those an earlier
        try handed over): a retry keeps no large attachment for a copy nobody gets."""
        copies: list[_Copy] = []
        groups: dict[tuple[Level, tuple[str, ...]], list[str]] = {}
        for d in delivered:
            if d.delivery is Delivery.DIRECT and d.level is not None:
                groups.setdefault((d.level, d.next_hop), []).append(d.address)
        for level, next_hop in sorted(groups, key=lambda g: (-g[0].rank, g[1])):
            what = f"direct-{level.value} copy"
            if next_hop:
                what += f" via {', '.join(next_hop)}"
            copies.append(_Copy(tuple(groups[level, next_hop]), None, level, what, next_hop))
        if any(c.key not in handed for c in copies):
            direct = self._direct_content(tx, saved, remembered)
            copies = [replace(c, content=direct) for c in copies]
        copies += self._encrypted(tx, delivered, original, author)
        for d in delivered:
            if d.delivery is not Delivery.NOTIFICATION or saved is None:
                continue
            contact = self.facts.contact(d.address)  # the language they chose in the portal
            note = notification.notification_for(
                original,
                d.address,
                saved.tokens[d.address],
                _verification_text(d),
                self.cfg,
                sender=author,  # the brand of the author's unit, as the portal finds it
                chosen_language=contact.language if contact is not None else None,
            )
            copies.append(_Copy((d.address,), note.wire(), None, f"notification to {d.address}"))
        return copies

    def _encrypted(
        self,
        tx: Transaction,
        delivered: list[RecipientDecision],
        original: Message,
        author: str,
    ) -> list[_Copy]:
        """One copy per recipient with a trusted key of its own (rule K, SPEC 3b): the whole
        message encrypted to that key; or, for an access code with `encryption.pdf`, in an
        AES-256 PDF that opens with the code, inside a mail that says how. Routed at the level
        found for its MX (the default relay below tls). A failure to encrypt raises: the
        milter tempfails, nothing leaves."""
        wanted = [d for d in delivered if d.delivery is Delivery.ENCRYPTED]
        if not wanted:
            return []
        with clean_copy(tx) as content:
            data = content.read()
        sender_key = None
        if self.cfg.encryption.copy_to_sender and any(d.key for d in wanted):
            sender_key = self.facts.recipient_key(author).key
        out = []
        for d in wanted:
            if d.method is Method.PDF:
                out.append(self._pdf_copy(tx, d, data, original, author))
                continue
            if d.key is None:  # an encrypted decision always has one of the two
                raise ValueError(f"encrypted delivery to {d.address} without a key")
            neutral = defaults.NEUTRAL_SUBJECT[
                notification.language_for(d.address, self.cfg.notification)
            ]
            subject = formats.outer_subject(self.cfg.notification.subject, neutral)
            keys = formats.recipients_keys(d.key, sender_key)
            sealed = formats.encrypt_message(data, keys, subject)
            route = d.level if d.level is not None and d.level >= Level.TLS else None
            what = f"{d.key.kind.value}-encrypted copy to {d.address}"
            log.info(
                "encrypted to %s key %s (%s)%s",
                d.key.kind.value,
                d.key.ident,
                d.key.source.value,
                " and the sender's" if len(keys) > 1 else "",
                extra=_ctx(tx),
            )
            out.append(_Copy((d.address,), sealed, route, what))
        return out

    def _pdf_copy(
        self, tx: Transaction, d: RecipientDecision, data: bytes, original: Message, author: str
    ) -> _Copy:
        """The encrypted PDF (SPEC-ADDITIONS 3b): built here from the directive's access code,
        which is never stored for it; the mail around it in the recipient's language."""
        if not d.secret:  # the policy makes a PDF only from a code in hand
            raise ValueError(f"encrypted PDF for {d.address} without an access code")
        from zivmilter.mail import pdf  # imported already (__init__): encryption.pdf is on

        language = notification.language_for(d.address, self.cfg.notification)
        sealed = pdf.encrypted_pdf(data, d.secret, labels=pdf.labels(language))
        mail = notification.pdf_mail(original, d.address, sealed, self.cfg, sender=author)
        route = d.level if d.level is not None and d.level >= Level.TLS else None
        log.info("encrypted PDF (AES-256, the access code) for %s", d.address, extra=_ctx(tx))
        return _Copy((d.address,), mail, route, f"pdf-encrypted copy to {d.address}")

    def _reinjects_all(self, delivered: Sequence[RecipientDecision]) -> bool:
        """Whether even a single copy may be re-injected (`_choose_kept`): with Sendmail a
        direct copy, and an encrypted one routed at a level, leaves through the relay, and a
        retry must know whether it was taken and which attachments it links to."""
        return self.cfg.milter.mta == "sendmail" and any(
            d.delivery is not Delivery.NOTIFICATION for d in delivered
        )

    def _choose_kept(self, copies: list[_Copy]) -> _Copy | None:
        """The copy that stays in the current transaction; the others are re-injected.

        Sendmail cannot route one message to a TLS-enforcing transport on a header, so with
        `milter.mta: sendmail` direct copies always go through the re-injection relay.
        """
        if self.cfg.milter.mta == "sendmail":
            return next((c for c in copies if c.route is None), None)
        return copies[0] if copies else None

    def _direct_content(
        self,
        tx: Transaction,
        saved: SavedMessage | None,
        remembered: Mapping[str, SavedAttachment] | None,
    ) -> bytes | None:
        """The direct copy with large attachments replaced by links, or None to send it as is.

        With a handover (`remembered`: what earlier tries of this message kept, by key; None:
        no handover), each attachment is kept under a key of its own bytes, name and type, and
        one an earlier try kept is not kept again: its link is the same as then, which a copy
        of that try may carry (an uncertain hand-over), and the store holds it once."""
        if saved is None:
            return None
        base = self.cfg.portal.base_url.rstrip("/") + "/d/"
        seen: dict[str, int] = {}  # the same attachment twice in a message: two, as ever

        def keep(filename: str, content_type: str, data: bytes) -> str:
            mark = None
            if remembered is not None:
                digest = _attachment_digest(filename, content_type, data)
                seen[digest] = seen.get(digest, 0) + 1
                mark = f"{digest}/{seen[digest]}"
                earlier = remembered.get(mark)
                if earlier is not None:
                    log.info(
                        "large attachment %s kept by an earlier try: its link again",
                        earlier.id,
                        extra=_ctx(tx),
                    )
                    return base + earlier.token
            kept = self.store.save_attachment(saved.id, filename, content_type, data, mark)
            # Its id, never its name: file names often name a patient (and outlive revoke here).
            log.info("large attachment %s kept for download", kept.id, extra=_ctx(tx))
            return base + kept.token

        with clean_copy(tx) as content:
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
        spool = spool_file(self.cfg.milter.spool_threshold)
        spool.write(route)
        with clean_copy(tx) as content:
            shutil.copyfileobj(content, spool)
        return Outgoing(sender, rcpts, spool, copy.what)

    def _attachment_text(self, tx: Transaction) -> list[Part]:
        """The text of the message's attachments (scope attachment_text), read in a child
        process bounded in time and memory; one that cannot be read is logged and skipped."""
        content = self.cfg.selection.content
        if not content.active:
            return []
        tx.message.seek(0)
        data = tx.message.read(tx.body_offset + defaults.CONTENT_MAX_MESSAGE_BYTES)
        found, problems = attachment_parts(data, content)
        for problem in problems:
            log.warning("%s", problem, extra=_ctx(tx))
        return found

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
        # Not kept: every form goes. Kept: one form stays, its duplicates in other case go; the
        # same form given twice is not removed, since the MTA removes every recipient of that
        # address at once (Postfix's cleanup_del_rcpt): the kept copy would have none left.
        drop = [
            raw
            for norm, raws in raw_by_norm.items()
            for raw in (
                raws
                if norm not in keep
                else [r for r in raws[1:] if bare_address(r) != bare_address(raws[0])]
            )
        ]
        route = [] if kept.route_value is None else [(ROUTE_HEADER, kept.route_value)]
        if kept.content is None:
            return Plan(delete_headers=stripped, add_headers=route, delete_recipients=drop)
        # A new message (a notification, or a direct copy whose large attachments became links)
        # replaces this one: its headers and body come in, every original header goes but our
        # trace headers and those it carries unchanged (From, To, Cc, Date, threading): fewer
        # edits for the MTA to apply.
        head, _, body = kept.content.partition(b"\r\n\r\n")
        wanted = header_fields(head)
        unchanged = {(n.lower(), unfolded(v)) for n, v in wanted}
        counts: dict[str, int] = {}
        deletions: list[tuple[str, int]] = []
        kept_fields: set[tuple[str, str]] = set()
        for name, value in tx.headers:
            key = name.lower()
            counts[key] = counts.get(key, 0) + 1
            field = (key, unfolded(value))
            if key in _KEEP_ON_REWRITE or (field in unchanged and field not in kept_fields):
                kept_fields.add(field)
                continue
            deletions.append((name, counts[key]))
        additions = [(n, v) for n, v in wanted if (n.lower(), unfolded(v)) not in kept_fields]
        additions += route
        return Plan(
            delete_headers=deletions,
            add_headers=additions,
            replace_body=body,
            delete_recipients=drop,
        )


# ----------------------------------------------------------------------------------------------
# helpers


def _content_digest(tx: Transaction) -> str:
    """SHA-256 of the message as the client sent it, but for what our MTA adds (`_TRACE`)."""
    digest = hashlib.sha256()
    for name, value in tx.headers:
        if name.lower() not in _TRACE:
            digest.update(f"{name}:{value}\r\n".encode("utf-8", "surrogateescape"))
    digest.update(b"\r\n")
    tx.message.seek(tx.body_offset)
    for chunk in iter(lambda: tx.message.read(64 * 1024), b""):
        digest.update(chunk)
    tx.message.seek(0)
    return digest.hexdigest()


def _attachment_digest(filename: str, content_type: str, data: bytes) -> str:
    """What makes a large attachment the same in a retry: its name, type and bytes (kept
    sealed in the store, never in the clear: it would confirm a guessed file)."""
    digest = hashlib.sha256()
    for field in (filename, content_type):
        digest.update(field.encode("utf-8", "surrogateescape") + b"\0")
    digest.update(data)
    return digest.hexdigest()


def _too_deep(tx: Transaction, clean: bool) -> bool:
    """Whether the message's MIME parts nest deeper than defaults.MIME_NESTING_LIMIT: the
    message as the MTA passed it (`clean`: the copy that is stored and sent)."""
    limit = defaults.MIME_NESTING_LIMIT
    if clean:
        with clean_copy(tx) as content:
            deeper = limits.deeper_than(content, limit)
    else:
        tx.message.seek(0)
        deeper = limits.deeper_than(tx.message, limit)
    tx.message.seek(0)
    return deeper


def _bare_cr(tx: Transaction) -> bool:
    """A CR without its LF in a header field: a line end to the `email` parser, so taking fields
    out of the header block (directives, Bcc) or rewriting the Subject may change how the copy
    that is stored and sent parses; that copy is measured again (never for ordinary mail)."""
    return any("\r" in value.replace("\r\n", "") for _, value in tx.headers)


def _refused_too_deep() -> Plan:
    reply = limits.too_deep(defaults.MIME_NESTING_LIMIT)
    return Plan(reject=reply, summary=f"refused: {reply}")


def _message_bytes(tx: Transaction) -> int:
    """The message's size as the MTA passed it (header block and body)."""
    tx.message.seek(0, os.SEEK_END)
    size = tx.message.tell()
    tx.message.seek(0)
    return size


def _copy_count(delivered: Sequence[RecipientDecision]) -> int:
    """How many copies `_copies` makes: one per notification recipient, one per direct group."""
    groups = {(d.level, d.next_hop) for d in delivered if d.delivery is Delivery.DIRECT}
    return len(groups) + sum(
        d.delivery in (Delivery.NOTIFICATION, Delivery.ENCRYPTED) for d in delivered
    )


def _retry_key(
    tx: Transaction, sender: str, decisions: Sequence[RecipientDecision], content: str
) -> str | None:
    """What makes a retry the same message: envelope, each recipient's decision, Message-ID and
    content. None without a Message-ID: two messages with the same text are then told apart by
    nothing, and a second one must not be taken for a retry of the first."""
    if tx.message_id == "-":
        return None
    parts = [sender, tx.message_id, content]
    for d in sorted(decisions, key=lambda d: d.address):
        level = d.level.value if d.level else "-"
        parts.append(f"{d.address} {d.delivery.value} {level} {','.join(d.next_hop)}")
    return hashlib.sha256("\n".join(parts).encode("utf-8", "surrogateescape")).hexdigest()


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


def _author(claimed: Sequence[str], envelope_sender: str, cfg: Config) -> str:
    """Who wrote the message, as the store keeps it: secure replies go there, and the portal
    and the codes it sends name it. The first From mailbox (`claimed`: the addresses
    submission checked); not the envelope sender, which for an application relay is a bounce
    or null address. That is only the fallback, for a message without a usable From."""
    if claimed:
        return claimed[0]
    return envelope_sender or "mailer-daemon@" + cfg.organization.domains[0]


def _new_recipient(d: RecipientDecision) -> NewRecipient:
    verification: str | None
    phone = code = None
    if d.delivery in (Delivery.DIRECT, Delivery.ENCRYPTED):  # delivered: nothing to verify
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
        delivery="notification" if d.delivery is Delivery.NOTIFICATION else "direct",
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
    again; with the first Subject as `set_subject` rewrote it in the spool, if it did."""
    original = header_message(tx.headers)
    if new_subject is not None and "Subject" in original:
        original.replace_header("Subject", new_subject)  # the first one, as set_subject does
    return original
