"""The policy core: per recipient, how may the content reach them (SPEC sections 3 and 5).

Pure: envelope, directives, configuration and `Facts` in, a frozen `Decision` out. No I/O and no
imports of milter, DNS, TLS, SMTP, SQL or web modules (a test keeps it that way). The milter, the
`explain` command and the benchmarks all call `decide()`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from zivmilter import defaults
from zivmilter.core.addresses import domain_of
from zivmilter.core.config import Config
from zivmilter.core.directives import (
    DEFAULT_DIRECT_DELIVERY,
    AccessKind,
    DirectDeliveryRequest,
    Directives,
)
from zivmilter.core.facts import Facts, TransportFact
from zivmilter.core.keys import RecipientKey, SkippedKey
from zivmilter.core.levels import Level


class Method(enum.Enum):
    ACCOUNT = "account"
    NTA7516 = "nta7516"
    DIRECT_DELIVERY = "direct_delivery"
    CUSTOM_ACCESS_RIGHT = "custom_access_right"
    TRANSPORT_SECURITY = "transport_security"
    SMS = "sms"
    ACCESS_CODE = "access_code"
    EMAIL_VERIFICATION = "email_verification"
    OWN_KEY = "own_key"  # encrypted to the recipient's own OpenPGP key or S/MIME certificate
    PDF = "pdf"  # an AES-256 PDF that opens with the sender's access code (encryption.pdf)
    NONE = "none"


class Delivery(enum.Enum):
    NOTIFICATION = "notification"
    DIRECT = "direct"
    FAILED = "failed"
    ENCRYPTED = "encrypted"  # a copy of its own, encrypted to the recipient's key (issue 26)
    PASS = "pass"  # message not selected for securing: delivered as it is


@dataclass(frozen=True, slots=True)
class RecipientDecision:
    address: str
    method: Method
    delivery: Delivery
    level: Level | None  # transport level of a direct delivery; None otherwise
    rule: str  # e.g. "A3", "B8"
    reason: str
    access_right: AccessKind | None = None  # what the recipient presents, for sms/access codes
    secret: str | None = field(default=None, repr=False)  # phone or access code from a directive
    conversation: int | None = None  # None for failed and pass-through recipients
    # Where a direct delivery goes instead of the domain's MX: the ntamx hosts of its NTA 7516
    # record, lowest preference first (rule 2); () for the domain's own MX.
    next_hop: tuple[str, ...] = ()
    # Rule K (issue 26): the key an encrypted copy goes to; and the keys found but not usable
    # (expired, revoked, untrusted...), whatever the delivery, for `explain`.
    key: RecipientKey | None = field(default=None, repr=False)
    skipped_keys: tuple[SkippedKey, ...] = ()
    # With encryption.pdf, an access-code recipient that keeps the portal: why no PDF was made.
    pdf_refused: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    recipients: tuple[RecipientDecision, ...]
    warnings: tuple[str, ...] = ()

    def of(self, address: str) -> RecipientDecision:
        for r in self.recipients:
            if r.address == address:
                return r
        raise KeyError(address)


@dataclass(frozen=True, slots=True)
class Envelope:
    """What the core needs of a message: normalized addresses only."""

    sender: str
    recipients: tuple[str, ...]  # envelope recipients, in order, without duplicates
    to_cc: frozenset[str]  # addresses named in the To and Cc headers


# ----------------------------------------------------------------------------------------------
# One recipient's evaluation context: the facts are fetched once, lazily, then shared by rules.


class _Ctx:
    __slots__ = ("_transport", "address", "cfg", "directives", "domain", "facts", "minimum")

    def __init__(
        self,
        address: str,
        cfg: Config,
        facts: Facts,
        directives: Directives,
        minimum: DirectDeliveryRequest | None,
    ) -> None:
        self.address = address
        self.domain = domain_of(address)
        self.cfg = cfg
        self.facts = facts
        self.directives = directives
        self.minimum = minimum  # the direct-delivery minimum in force for this recipient
        self._transport: TransportFact | None = None

    @property
    def transport(self) -> TransportFact:
        if self._transport is None:
            self._transport = self.facts.transport(self.domain)
        return self._transport

    def meets(self, minimum: DirectDeliveryRequest) -> bool:
        t = self.transport
        floor = Level.PKIX if minimum.certificate_validation else Level.TLS
        return (
            t.level >= floor and t.tls_version is not None and t.tls_version >= minimum.tls_version
        )


_Rule = Callable[[_Ctx, str], RecipientDecision | None]


def _direct(ctx: _Ctx, method: Method, rule: str, reason: str) -> RecipientDecision:
    return RecipientDecision(
        ctx.address, method, Delivery.DIRECT, ctx.transport.level, rule, reason
    )


def _notify(
    ctx: _Ctx,
    method: Method,
    rule: str,
    reason: str,
    kind: AccessKind | None = None,
    secret: str | None = None,
) -> RecipientDecision:
    return RecipientDecision(
        ctx.address, method, Delivery.NOTIFICATION, None, rule, reason, kind, secret
    )


def _account(ctx: _Ctx, rule: str) -> RecipientDecision | None:
    if not ctx.facts.has_account(ctx.address):
        return None
    if ctx.facts.idd_enabled(ctx.domain):
        level = ctx.transport.level
        if level >= Level.PKIX:  # IDD requirement (SPEC 4): CA-valid TLS 1.2+, PANE or DANE
            return _direct(
                ctx,
                Method.ACCOUNT,
                rule,
                f"recipient has an account; {ctx.domain} has inbound direct delivery and its MX "
                f"meets the IDD requirement ({level.value})",
            )
        return _notify(
            ctx,
            Method.ACCOUNT,
            rule,
            f"recipient has an account; {ctx.domain} has inbound direct delivery but its MX "
            f"does not meet the IDD requirement (found {level.value}, needs pkix or better)",
        )
    return _notify(ctx, Method.ACCOUNT, rule, "recipient has an account")


def _nta7516(ctx: _Ctx, rule: str) -> RecipientDecision | None:
    if not ctx.cfg.organization.nta7516:
        return None
    nta = ctx.facts.nta7516(ctx.domain)
    if not nta.compliant:
        return None
    if nta.mx:
        # The record's ntamx hosts replace the MX hosts for NTA delivery (SPEC 4a): their level
        # decides, and the copy goes to them. Not probed (None) counts as none: the safe side.
        hosts = nta.mx_transport
        if hosts is None or hosts.level < Level.TLS:
            return None
        return RecipientDecision(
            ctx.address,
            Method.NTA7516,
            Delivery.DIRECT,
            hosts.level,
            rule,
            f"sender and {ctx.domain} are NTA 7516 compliant ({nta.reason}); delivered to its "
            f"ntamx hosts {', '.join(nta.mx)} at their best level {hosts.level.value} "
            f"({hosts.reason})",
            next_hop=nta.mx,
        )
    level = ctx.transport.level
    if level < Level.TLS:  # NTA 7516 mandates TLS; never deliver in clear text on its word
        return None
    return _direct(
        ctx,
        Method.NTA7516,
        rule,
        f"sender and {ctx.domain} are NTA 7516 compliant ({nta.reason}); best level {level.value}",
    )


def _direct_delivery(ctx: _Ctx, rule: str) -> RecipientDecision | None:
    minimum = ctx.minimum
    if minimum is None or not ctx.meets(minimum):
        return None
    return _direct(
        ctx,
        Method.DIRECT_DELIVERY,
        rule,
        f"{ctx.domain} MX meets the requested minimum {minimum.describe()} "
        f"(found {ctx.transport.level.value})",
    )


def _custom(ctx: _Ctx, rule: str) -> RecipientDecision | None:
    right = ctx.directives.access_rights.get(ctx.address)
    if right is None:
        return None
    what = "SMS code" if right.kind is AccessKind.SMS else "access code"
    return _notify(
        ctx,
        Method.CUSTOM_ACCESS_RIGHT,
        rule,
        f"custom access right from zivver-access-right: {what}",
        right.kind,
        right.value,
    )


def _transport_security(ctx: _Ctx, rule: str) -> RecipientDecision | None:
    wanted = ctx.cfg.policy.transport_security_compliance
    if wanted is Level.NONE:
        return None
    level = ctx.transport.level
    if level < wanted:
        return None
    return _direct(
        ctx,
        Method.TRANSPORT_SECURITY,
        rule,
        f"transport security compliance: {ctx.domain} MX meets {wanted.value} "
        f"(found {level.value})",
    )


def _sms(ctx: _Ctx, rule: str) -> RecipientDecision | None:
    if not ctx.cfg.policy.methods.sms:
        return None
    contact = ctx.facts.contact(ctx.address)
    if contact is None or not contact.sms:
        return None
    return _notify(
        ctx,
        Method.SMS,
        rule,
        "contact book: SMS number this recipient used before",
        AccessKind.SMS,
        contact.sms,
    )


def _access_code(ctx: _Ctx, rule: str) -> RecipientDecision | None:
    if not ctx.cfg.policy.methods.access_code:
        return None
    contact = ctx.facts.contact(ctx.address)
    if contact is None or not contact.access_code:
        return None
    return _notify(
        ctx,
        Method.ACCESS_CODE,
        rule,
        "contact book: access code this recipient used before",
        AccessKind.ACCESS_CODE,
    )


def _email(ctx: _Ctx, rule: str) -> RecipientDecision | None:
    return _notify(ctx, Method.EMAIL_VERIFICATION, rule, "email verification (last resort)")


def _email_guarded(ctx: _Ctx, rule: str) -> RecipientDecision | None:
    minimum = ctx.minimum or DEFAULT_DIRECT_DELIVERY
    if ctx.directives.email_verification_allowed:
        return _notify(
            ctx,
            Method.EMAIL_VERIFICATION,
            rule,
            "email verification, allowed by zivver-minimum-recipient-verification",
        )
    if ctx.meets(minimum):
        return _notify(
            ctx,
            Method.EMAIL_VERIFICATION,
            rule,
            f"email verification: {ctx.domain} MX meets {minimum.describe()}",
        )
    found = ctx.transport.level.value
    return RecipientDecision(
        ctx.address,
        Method.NONE,
        Delivery.FAILED,
        None,
        rule,
        f"no delivery method allowed: {ctx.domain} MX does not meet the requested minimum "
        f"{minimum.describe()} (found {found}), and email verification over a weaker "
        "connection was not allowed (zivver-minimum-recipient-verification)",
    )


# The decision tables of SPEC 3, as data: (rule label, rule).
TABLE_A: tuple[tuple[str, _Rule], ...] = (
    ("A1", _account),
    ("A2", _nta7516),
    ("A3", _custom),
    ("A4", _transport_security),
    ("A5", _sms),
    ("A6", _access_code),
    ("A7", _email),
)
TABLE_B: tuple[tuple[str, _Rule], ...] = (
    ("B1", _account),
    ("B2", _nta7516),
    ("B3", _direct_delivery),
    ("B4", _custom),
    ("B5", _transport_security),
    ("B6", _sms),
    ("B7", _access_code),
    ("B8", _email_guarded),
)
# An ODD recipient of a message without the header: table B up to its direct-delivery rule, then
# table A from its custom access right on, without the email-verification guard (SPEC 3, ODD).
TABLE_ODD: tuple[tuple[str, _Rule], ...] = TABLE_B[:3] + TABLE_A[2:]


def _first(table: Sequence[tuple[str, _Rule]], ctx: _Ctx) -> RecipientDecision:
    for label, rule in table:
        result = rule(ctx, label)
        if result is not None:
            return result
    raise AssertionError("decision tables end in a rule that always applies")  # pragma: no cover


def _own_key(d: RecipientDecision, cfg: Config, facts: Facts) -> RecipientDecision:
    """Rule K (SPEC 3b, issue 26): with `encryption.enabled`, a trusted key of the recipient's
    own replaces a notification, except one the sender asked for with an access right
    (A3/B4), and a failure for a weak MX (B8); a direct delivery stays as it is. Keys are
    looked up only for the decisions they can change."""
    if not cfg.encryption.enabled or d.delivery is Delivery.DIRECT:
        return d
    if d.method is Method.CUSTOM_ACCESS_RIGHT:
        return d
    lookup = facts.recipient_key(d.address)
    key = lookup.key
    if key is None:
        if not lookup.skipped:
            return d
        return RecipientDecision(
            d.address, d.method, d.delivery, d.level, d.rule, d.reason, d.access_right,
            d.secret, d.conversation, d.next_hop, None, lookup.skipped, d.pdf_refused,
        )  # fmt: skip
    instead = "a failure" if d.delivery is Delivery.FAILED else "a notification"
    return RecipientDecision(
        d.address,
        Method.OWN_KEY,
        Delivery.ENCRYPTED,
        facts.transport(domain_of(d.address)).level,  # the route of its copy (SPEC 3b)
        "K",
        f"encrypted to the recipient's own {key.kind.value} key {key.ident}, found in"
        f" {key.source.value} ({key.trusted_because}); instead of {instead} by"
        f" {d.rule} ({d.reason})",
        skipped_keys=lookup.skipped,
        key=key,
    )


PDF_REMEMBERED = (
    "no encrypted PDF: a remembered access code is kept only as a hash, and a PDF needs the"
    " code itself; the recipient keeps the portal"
)
PDF_WEAK = (
    f"no encrypted PDF: the access code is shorter than {defaults.PDF_ACCESS_CODE_MIN_LENGTH}"
    " characters, and a PDF can be tried offline without an attempt limit; the recipient keeps"
    " the portal"
)


def pdf_too_large(message_bytes: int, limit: int) -> str:
    """Why a message over `encryption.pdf_max_bytes` keeps the portal (the gateway logs it)."""
    return (
        f"no encrypted PDF: the message is {message_bytes} bytes, more than"
        f" encryption.pdf_max_bytes ({limit}), and a PDF is built in memory at end of message;"
        " the recipient keeps the portal"
    )


def pdf_too_much_text(text_bytes: int, limit: int) -> str:
    """Why a message with more text than `encryption.pdf_max_text_bytes` keeps the portal (the
    gateway logs it)."""
    return (
        f"no encrypted PDF: the message's text is {text_bytes} bytes, more than"
        f" encryption.pdf_max_text_bytes ({limit}), and laying it out takes seconds at end of"
        " message; the recipient keeps the portal"
    )


def _pdf(
    d: RecipientDecision, cfg: Config, facts: Facts, message_bytes: int, text_bytes: int
) -> RecipientDecision:
    """Rule K with `encryption.pdf` (SPEC-ADDITIONS 3b): the sender's access code (A3/B4)
    opens an encrypted PDF instead of the portal. The code is the directive's, in hand at
    end-of-message and never stored for this; a remembered code (A6/B7) is only a hash, and a
    short code would fall to an offline search: both keep the portal, with the reason. So does
    a message over `encryption.pdf_max_bytes` (its size as the MTA passed it), and one whose
    text (bodytext.pdf_text_bytes) is over `encryption.pdf_max_text_bytes`."""
    if not cfg.encryption.pdf or d.access_right is not AccessKind.ACCESS_CODE:
        return d
    if d.delivery is not Delivery.NOTIFICATION:
        return d
    refused = ""
    if d.method is not Method.CUSTOM_ACCESS_RIGHT or not d.secret:
        refused = PDF_REMEMBERED
    elif len(d.secret.strip()) < defaults.PDF_ACCESS_CODE_MIN_LENGTH:
        refused = PDF_WEAK
    elif message_bytes > cfg.encryption.pdf_max_bytes:
        refused = pdf_too_large(message_bytes, cfg.encryption.pdf_max_bytes)
    elif text_bytes > cfg.encryption.pdf_max_text_bytes:
        refused = pdf_too_much_text(text_bytes, cfg.encryption.pdf_max_text_bytes)
    if refused:
        return RecipientDecision(
            d.address, d.method, d.delivery, d.level, d.rule, d.reason, d.access_right,
            d.secret, d.conversation, d.next_hop, d.key, d.skipped_keys, refused,
        )  # fmt: skip
    return RecipientDecision(
        d.address,
        Method.PDF,
        Delivery.ENCRYPTED,
        facts.transport(domain_of(d.address)).level,  # the route of its copy, as an own key's
        "K",
        f"an encrypted PDF that opens with the sender's access code; instead of a notification"
        f" by {d.rule} ({d.reason})",
        AccessKind.ACCESS_CODE,
        d.secret,
        skipped_keys=d.skipped_keys,
    )


def decide_recipient(
    address: str,
    cfg: Config,
    facts: Facts,
    directives: Directives,
    message_bytes: int = 0,
    text_bytes: int = 0,
) -> RecipientDecision:
    """One recipient's decision, without its conversation number. `message_bytes`: the
    message's size as the MTA passes it (header and body, CRLF), for encryption.pdf_max_bytes;
    `text_bytes`: the text a PDF of it lays out (bodytext.pdf_text_bytes), for
    encryption.pdf_max_text_bytes."""
    decision = _own_key(_by_tables(address, cfg, facts, directives), cfg, facts)
    return _pdf(decision, cfg, facts, message_bytes, text_bytes)


def _by_tables(
    address: str, cfg: Config, facts: Facts, directives: Directives
) -> RecipientDecision:
    header = directives.direct_delivery
    domain = domain_of(address)
    if header is not None:
        return _first(TABLE_B, _Ctx(address, cfg, facts, directives, header))
    if domain in cfg.policy.outbound_direct_delivery.domains or facts.odd_listed(domain):
        decision = _first(TABLE_ODD, _Ctx(address, cfg, facts, directives, DEFAULT_DIRECT_DELIVERY))
        if decision.rule == "B3":
            return _replace_reason(decision, f"ODD domain {domain}: {decision.reason}")
        return decision
    return _first(TABLE_A, _Ctx(address, cfg, facts, directives, None))


def _replace_reason(d: RecipientDecision, reason: str) -> RecipientDecision:
    return _copy(d, reason, d.conversation)


def _copy(d: RecipientDecision, reason: str, conversation: int | None) -> RecipientDecision:
    # The constructor, not dataclasses.replace: replace inspects the fields on every call and
    # made decide() a third slower (bench/policy.py).
    return RecipientDecision(
        d.address, d.method, d.delivery, d.level, d.rule, reason, d.access_right, d.secret,
        conversation, d.next_hop, d.key, d.skipped_keys, d.pdf_refused,
    )  # fmt: skip


def decide(
    envelope: Envelope,
    directives: Directives,
    cfg: Config,
    facts: Facts,
    message_bytes: int = 0,
    text_bytes: int = 0,
) -> Decision:
    """Every envelope recipient's decision, with conversations (SPEC 5) and warnings;
    `message_bytes` and `text_bytes` as for decide_recipient."""
    decisions = [
        decide_recipient(a, cfg, facts, directives, message_bytes, text_bytes)
        for a in envelope.recipients
    ]
    # To/Cc recipients share conversation 1; each Bcc recipient gets one of their own after it.
    live = [d for d in decisions if d.delivery is not Delivery.FAILED]
    next_number = 2 if any(d.address in envelope.to_cc for d in live) else 1
    numbered: list[RecipientDecision] = []
    for d in decisions:
        if d.delivery is Delivery.FAILED:
            numbered.append(d)
            continue
        if d.address in envelope.to_cc:
            number = 1
        else:
            number, next_number = next_number, next_number + 1
        numbered.append(_copy(d, d.reason, number))
    warnings = tuple(str(issue) for issue in (*directives.issues, *directives.weak_codes))
    return Decision(tuple(numbered), warnings)
