"""Is the DKIM signer wired so that every message zivmilter writes leaves signed? (issue 23)

Pure: header lists and Postfix parameter values in, findings out. The milter adapter asks
`signed_before_rewrite` at end-of-message (Postfix hands a later milter the DKIM-Signature an
earlier one added, so a signer listed before zivmilter is visible there); `postfix_order_problems`
reads `postconf` output, for `zivmilter dns-check --postfix-config` and the future doctor.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

FIX = (
    "list zivmilter before the DKIM signer in smtpd_milters and non_smtpd_milters"
    " (README: DKIM and DMARC)"
)


def _tags(value: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for part in "".join(value.split()).split(";"):
        name, sep, text = part.partition("=")
        if sep:
            tags[name.lower()] = text
    return tags


def signing_domains(headers: Iterable[tuple[str, str]]) -> tuple[str, ...]:
    """The d= of each DKIM-Signature field, lower case, in order."""
    return tuple(
        _tags(value).get("d", "").lower().rstrip(".")
        for name, value in headers
        if name.lower() == "dkim-signature"
    )


def signed_before_rewrite(
    headers: Sequence[tuple[str, str]], own_domains: Iterable[str], rewrites: bool
) -> tuple[str, ...]:
    """Organization domains whose DKIM signature the message carried when zivmilter rewrote it.

    A signature at our own domain that zivmilter sees was made before it (a signer listed first,
    or a client that signs); when zivmilter replaces the body or edits signed fields, that
    signature no longer verifies and the message leaves without a valid one. Empty when the
    message is left as it is or carries no signature of ours.
    """
    if not rewrites:
        return ()
    own = {d.lower() for d in own_domains}
    found: list[str] = []
    for domain in signing_domains(headers):
        if (domain in own or any(domain.endswith("." + o) for o in own)) and domain not in found:
            found.append(domain)
    return tuple(found)


@dataclass(frozen=True)
class OrderProblem:
    """One finding about the milter wiring, with the change that fixes it."""

    parameter: str  # e.g. "smtpd_milters", "127.0.0.1:10026/inet/smtpd_milters"
    problem: str
    fix: str


def _milters(value: str) -> list[str]:
    # Postfix separates list elements with commas and/or whitespace; a {...} group is one milter
    # with per-milter settings (Postfix 3.0), its socket the first word inside.
    out: list[str] = []
    for group in re.findall(r"\{[^}]*\}|[^\s,{}]+", value):
        out.append(re.split(r"[\s,]+", group.strip("{} "))[0] if group.startswith("{") else group)
    return [m for m in out if m]


def postfix_order_problems(
    main: Mapping[str, str],
    services: Mapping[str, str],
    zivmilter_socket: str,
    reinject_service: str,
    replies_service: str | None = None,
) -> list[OrderProblem]:
    """What is wrong with the milter order for DKIM, from `postconf -h` values.

    main: smtpd_milters and non_smtpd_milters; services: `postconf -P` as {"SERVICE/TYPE/NAME":
    value}; zivmilter_socket as Postfix writes it (inet:HOST:PORT or unix:/PATH);
    reinject_service the re-injection listener's master.cf name (HOST:PORT); replies_service the
    secure replies' listener (HOST:PORT), checked for the signer when given.
    """
    problems: list[OrderProblem] = []
    signers: list[str] = []
    for parameter in ("smtpd_milters", "non_smtpd_milters"):
        milters = _milters(main.get(parameter, ""))
        if zivmilter_socket not in milters:
            problems.append(
                OrderProblem(
                    parameter,
                    f"zivmilter ({zivmilter_socket}) is not listed",
                    f"add {zivmilter_socket} first",
                )
            )
            continue
        before = milters[: milters.index(zivmilter_socket)]
        signers += [m for m in milters if m != zivmilter_socket and m not in signers]
        if before:
            fixed = [zivmilter_socket, *before, *milters[len(before) + 1 :]]
            problems.append(
                OrderProblem(
                    parameter,
                    f"{', '.join(before)} runs before zivmilter: a DKIM signature it adds does"
                    " not survive zivmilter's rewrite (notifications leave unsigned)",
                    f"{parameter} = {', '.join(fixed)}",
                )
            )
    prefix = f"{reinject_service}/inet/"
    listener = _milters(services.get(prefix + "smtpd_milters", main.get("smtpd_milters", "")))
    if zivmilter_socket in listener:
        problems.append(
            OrderProblem(prefix + "smtpd_milters", "zivmilter runs on its own re-injection"
                         " listener: every copy would be secured again",
                         f"-o smtpd_milters={','.join(signers) or '(the signer)'}")
        )  # fmt: skip
    elif not listener and signers:
        problems.append(
            OrderProblem(prefix + "smtpd_milters", "no DKIM signer on the re-injection listener:"
                         " re-injected notifications, copies, DSNs and portal mail leave unsigned",
                         f"-o smtpd_milters={','.join(signers)}")
        )  # fmt: skip
    override = services.get(prefix + "receive_override_options", "")
    if listener and "no_milters" in re.split(r"[\s,]+", override):
        kept = ",".join(o for o in re.split(r"[\s,]+", override) if o and o != "no_milters")
        problems.append(
            OrderProblem(prefix + "receive_override_options", "no_milters switches the signer"
                         " off on the re-injection listener",
                         f"-o receive_override_options={kept}")
        )  # fmt: skip
    if replies_service is not None and signers:
        key = f"{replies_service}/inet/smtpd_milters"
        replies = _milters(services.get(key, main.get("smtpd_milters", "")))
        missing = [m for m in signers if m not in replies]
        if missing:
            others = [m for m in replies if m != zivmilter_socket]
            problems.append(
                OrderProblem(key, f"{', '.join(missing)} not on the replies listener: secure"
                             " replies from the portal leave unsigned",
                             f"-o smtpd_milters={','.join([*others, *missing])}")
            )  # fmt: skip
    return problems
