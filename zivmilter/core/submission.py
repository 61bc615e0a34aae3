"""Who may submit (SPEC 7): the decision for one message, from what the MTA told the milter.

Pure: the SPF lookup and the account lookup come in behind two small Protocols (`SpfChecker`,
implemented by spf.py; `SenderAccounts`, implemented by `StoreSenderAccounts` below over the
store, and by facts.StaticFacts for `explain`). The milter calls `check` at end-of-message, where
the headers are known; `explain` calls it with the client address and login given on its command
line.

A message is accepted when both hold:
1. the client may submit, by the first of
   - SMTP AUTH: the login (Postfix's `{auth_authen}` macro) is a key of `submission.logins` and
     its list covers every claimed address (below), by address or by domain. A login listed there
     is bound to its list: claiming any other address is refused (5.7.1) whatever network the
     client is in, because a login is the strongest word on who sends. A login that is not listed
     is treated as no login at all (the MTA may authenticate users for other purposes);
   - trusted networks: the client address is in `submission.trusted_networks`. A message without
     a network client (sendmail(1) on this host, a unix socket) counts as coming from 127.0.0.1;
   - SPF (`submission.spf`): every claimed domain (the envelope sender's, each From address's and
     the Sender's) is one of `organization.domains` and SPF gives `pass` for the client address
     with that domain (the envelope sender as identity where it is in that domain, the claimed
     address otherwise; for `<>` the From address). Any other verdict fails; `temperror` alone
     answers 451 4.7.1 (the client retries) instead of 550.
   Acceptance is an OR: trusted networks are checked before SPF so a local application never
   waits on DNS; the outcome is the same in any order.
2. every claimed address is an active sender account (`zivmilter account add`), or, with
   `submission.any_address_of_own_domains`, an address of `organization.domains`. Unknown or
   disabled: 550 5.7.1 naming the address.

Claimed addresses, and the three awkward cases:
- multiple From addresses (RFC 5322 allows a list): every one of them is claimed; all must pass.
- a Sender header that differs from the From addresses: the Sender is the one who really
  submitted (a secretary for a doctor), so it is claimed too and must pass like a From address.
  A Sender equal to a From address adds nothing.
- no From header, or one without any address: refused (550 5.7.1); the gateway must know whose
  message it secures (notifications and replies go to that address). An entry of a From header
  that contains `@` but is no valid address is refused as well; fragments without `@` (a display
  name with an unquoted comma) are ignored.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import getaddresses
from typing import Protocol

from zivmilter import defaults
from zivmilter.core.addresses import bare_address, domain_of, normalize_address
from zivmilter.core.config import Config, SubmissionRules
from zivmilter.errors import MessageError

Headers = Sequence[tuple[str, str]]

LOCAL_CLIENT = defaults.LOCAL_CLIENT_ADDRESS  # stands for a message without a network client


class SpfVerdict(enum.Enum):
    """RFC 7208 results."""

    PASS = "pass"
    FAIL = "fail"
    SOFTFAIL = "softfail"
    NEUTRAL = "neutral"
    NONE = "none"
    PERMERROR = "permerror"
    TEMPERROR = "temperror"


@dataclass(frozen=True, slots=True)
class SpfResult:
    verdict: SpfVerdict
    explanation: str = ""


class SpfChecker(Protocol):
    def check(self, client_ip: str, sender: str, helo: str | None = None) -> SpfResult:
        """The SPF verdict for `client_ip` sending as `sender` (an address); never raises for
        DNS trouble (that is TEMPERROR)."""
        ...


class SenderAccounts(Protocol):
    def is_active_sender(self, address: str) -> bool | None:
        """True: an active sender account; False: an account, disabled; None: no account."""
        ...


@dataclass(frozen=True, slots=True)
class SubmissionResult:
    accepted: bool
    reply: str | None  # "550 5.7.1 text" / "451 4.7.1 text" when not accepted
    reason: str
    # The From (then Sender) addresses the message claims, normalized, as checked
    claimed: tuple[str, ...] = ()

    @property
    def code(self) -> str | None:
        return self.reply.split(" ", 2)[0] if self.reply else None

    @property
    def status(self) -> str | None:
        """The enhanced status code, e.g. 5.7.1."""
        return self.reply.split(" ", 2)[1] if self.reply else None

    @property
    def text(self) -> str | None:
        return self.reply.split(" ", 2)[2] if self.reply else None

    @property
    def tempfail(self) -> bool:
        return self.reply is not None and self.reply.startswith("4")


# ---------------------------------------------------------------------------------------------


def check(
    cfg: Config,
    headers: Headers,
    *,
    client_ip: str | None,
    auth_login: str | None,
    envelope_sender: str,
    spf: SpfChecker,
    accounts: SenderAccounts,
    helo: str | None = None,
    rules: SubmissionRules | None = None,
) -> SubmissionResult:
    """May this message be submitted? See the module docstring for the rules.

    `rules` replaces `cfg.submission`, for a listener with rules of its own.
    """
    sub = rules if rules is not None else cfg.submission
    claimed_or_problem = claimed_addresses(headers)
    if isinstance(claimed_or_problem, str):
        return _reject("5", claimed_or_problem)
    claimed = claimed_or_problem
    env = _envelope_address(envelope_sender)

    how = _authorize(cfg, sub, claimed, env, client_ip, auth_login, spf, helo)
    if isinstance(how, SubmissionResult):
        return how

    why_active: list[str] = []
    own = set(cfg.organization.domains)
    for address in claimed:
        if sub.any_address_of_own_domains and domain_of(address) in own:
            why_active.append(f"{address}: any address of {domain_of(address)} may send")
            continue
        state = accounts.is_active_sender(address)
        if state is None:
            return _reject("5", f"sender {address} has no account at this gateway", how)
        if not state:
            return _reject("5", f"sender account {address} is disabled", how)
        why_active.append(f"{address} is an active sender account")
    return SubmissionResult(True, None, f"{how}; {'; '.join(why_active)}", claimed)


def claimed_addresses(headers: Headers) -> tuple[str, ...] | str:
    """The addresses a message claims to be from (From, then a differing Sender), normalized;
    or the reason why it cannot be accepted (a problem text)."""
    from_values = [v for n, v in headers if n.strip().lower() == "from"]
    if not from_values:
        return "message has no From header"
    found = _mailboxes(from_values, "From")
    if isinstance(found, str):
        return found
    if not found:
        return "the From header names no address"
    sender_values = [v for n, v in headers if n.strip().lower() == "sender"]
    extra = _mailboxes(sender_values, "Sender")
    if isinstance(extra, str):
        return extra
    return tuple(found + [a for a in extra if a not in found])


def _mailboxes(values: list[str], header: str) -> list[str] | str:
    out: list[str] = []
    for _name, addr in getaddresses(values):
        if "@" not in addr:
            continue  # a display-name fragment (unquoted comma) or an empty group
        try:
            norm = normalize_address(addr)
        except MessageError:
            return f"{header} address {_printable(addr)} is not valid"
        if norm not in out:
            out.append(norm)
    return out


def _envelope_address(sender: str) -> str | None:
    bare = bare_address(sender)
    if not bare:
        return None
    try:
        return normalize_address(bare)
    except MessageError:
        return None


def _authorize(
    cfg: Config,
    sub: SubmissionRules,
    claimed: tuple[str, ...],
    env: str | None,
    client_ip: str | None,
    auth_login: str | None,
    spf: SpfChecker,
    helo: str | None,
) -> str | SubmissionResult:
    """How the client may submit (a reason), or the rejection."""
    why_not: list[str] = []
    login = (auth_login or "").strip()
    if login:
        logins = {k.casefold(): v for k, v in sub.logins.items()}
        allowed = logins.get(login.casefold())
        if allowed is not None:
            denied = [a for a in claimed if a not in allowed and domain_of(a) not in allowed]
            if denied:
                return _reject("5", f"login {login} may not send as {', '.join(denied)}")
            return f"SMTP AUTH login {login} may send as {', '.join(claimed)}"
        why_not.append(f"login {login} is not in submission.logins")
    else:
        why_not.append("not authenticated")

    shown_ip = client_ip if client_ip is not None else f"local ({LOCAL_CLIENT})"
    ip = _parse_ip(client_ip if client_ip is not None else LOCAL_CLIENT)
    if ip is not None:
        for text in sub.trusted_networks:
            net = _network(text)
            if ip.version == net.version and ip in net:
                return f"client {shown_ip} is in trusted network {text}"
    why_not.append(f"client {shown_ip} is not in submission.trusted_networks")

    if not sub.spf:
        why_not.append("SPF is off (submission.spf)")
    elif client_ip is None or ip is None:
        why_not.append("no client address for SPF")
    else:
        outcome = _spf(cfg, claimed, env, str(ip), spf, helo)
        if outcome.passed:
            return outcome.reason
        if outcome.temporary:
            return _reject("4", f"SPF check failed temporarily, try again later: {outcome.reason}")
        why_not.append(outcome.reason)
    return _reject("5", f"not allowed to submit: {'; '.join(why_not)}")


@dataclass(frozen=True, slots=True)
class _SpfOutcome:
    passed: bool
    temporary: bool  # only temperror verdicts stood in the way
    reason: str


def _spf(
    cfg: Config,
    claimed: tuple[str, ...],
    env: str | None,
    ip: str,
    spf: SpfChecker,
    helo: str | None,
) -> _SpfOutcome:
    """SPF over every claimed domain: passed only when every one passes."""
    identities: dict[str, str] = {}  # domain -> the address checked for it
    for address in ([env] if env else []) + list(claimed):
        identities.setdefault(domain_of(address), address)
    own = set(cfg.organization.domains)
    foreign = [d for d in identities if d not in own]
    if foreign:
        return _SpfOutcome(
            False, False, f"SPF not used: {', '.join(foreign)} is not one of organization.domains"
        )
    passed: list[str] = []
    temporary: list[str] = []
    for domain, identity in identities.items():
        result = spf.check(ip, identity, helo)
        said = f"SPF {result.verdict.value} for {domain}"
        if result.explanation:
            said += f" ({result.explanation})"
        if result.verdict is SpfVerdict.PASS:
            passed.append(domain)
        elif result.verdict is SpfVerdict.TEMPERROR:
            temporary.append(said)
        else:
            return _SpfOutcome(False, False, said)  # definite: a retry would not change it
    if temporary:
        return _SpfOutcome(False, True, "; ".join(temporary))
    return _SpfOutcome(True, False, f"SPF pass for client {ip} and {', '.join(passed)}")


@functools.lru_cache(maxsize=256)
def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A trusted network of the configuration (validated at load), parsed once."""
    return ipaddress.ip_network(text, strict=False)


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    raw = text.strip().removeprefix("[").removesuffix("]")
    raw = raw[5:] if raw.lower().startswith("ipv6:") else raw
    try:
        ip = ipaddress.ip_address(raw)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _printable(text: str) -> str:
    """Printable ASCII only: libmilter drops or refuses reply texts with anything else."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)


def _reject(klass: str, text: str, authorized: str | None = None) -> SubmissionResult:
    """A rejection; the reason also says how the client was authorized, if it was."""
    code = "550" if klass == "5" else "451"
    clean = _printable(text)
    limit = defaults.SMTP_REPLY_TEXT_MAX
    if len(clean) > limit:
        clean = clean[: limit - 3] + "..."
    reason = f"{authorized}; but {text}" if authorized else text
    return SubmissionResult(False, f"{code} {klass}.7.1 {clean}", reason)


# ---------------------------------------------------------------------------------------------
# The store as `SenderAccounts`, without importing the store (this module stays pure).


class _AccountRecord(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def active(self) -> bool: ...


class _AccountSource(Protocol):
    def account(self, address: str) -> _AccountRecord | None: ...


class StoreSenderAccounts:
    """Sender accounts from the store's `accounts` table (kind `sender`); a recipient account
    (a partner's portal login) does not make its address a sender."""

    def __init__(self, store: _AccountSource) -> None:
        self._store = store

    def is_active_sender(self, address: str) -> bool | None:
        account = self._store.account(address)
        if account is None or account.kind != "sender":
            return None
        return bool(account.active)


class NoSpf:
    """An SpfChecker for where SPF is not looked up: it never passes (logins and trusted
    networks still can)."""

    def __init__(self, why: str = "SPF checks are off (submission.spf)") -> None:
        self.why = why

    def check(self, client_ip: str, sender: str, helo: str | None = None) -> SpfResult:
        return SpfResult(SpfVerdict.NONE, self.why)


def rules_for(cfg: Config, listener: str | None) -> SubmissionRules:
    """The submission rules of an MTA listener ({daemon_name}); the general ones by default."""
    if listener and listener in cfg.submission.listeners:
        return cfg.submission.listeners[listener]
    return cfg.submission
