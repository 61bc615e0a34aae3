"""Whatever header fields a client writes, the gateway decides: a plan, or a 5xx refusal with a
reason. Never an exception, which the milter would answer with a tempfail: the MTA would retry
that message until it bounces, days later (SPEC 10: a malformed header is reported and
ignored). And the secret body never reaches a notification or a DSN."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from tests.budget import examples
from tests.fakes import Collecting, make_config
from zivmilter import crypto
from zivmilter.core.facts import facts_from_mapping
from zivmilter.gateway import Gateway, Transaction
from zivmilter.store import SqliteStore

SECRET = b"SECRET-BODY-7f3a"
_FIELD_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 ftext

_NAMES = [
    "From", "To", "Cc", "Bcc", "Sender", "Reply-To", "Subject", "Date", "Message-ID",
    "In-Reply-To", "References", "Content-Type", "MIME-Version", "X-Zivmilter-Route",
    "zivver-access-right", "zivver-direct-delivery", "zivver-minimum-recipient-verification",
]  # fmt: skip
_PIECES = st.sampled_from(
    [
        "alice@hospital.example", "<alice@hospital.example>", "Dr. Alice <alice@hospital.example>",
        "bob@partner.example", "carol@oldmail.example", '"Carol, C." <carol@oldmail.example>',
        "jörg@partner.example", "=?utf-8?q?J=C3=B6rg?=", "=?bogus?q?x?=", "=?utf-8?b?###?=",
        "undisclosed-recipients:;", "ß@", ":;", "<>", "@", ",", ";", '"', "(comment", "[",
        "sms", "sms:+31612345678", "access-code:Secret1", "account", "email", "none",
        "tls", "pkix", "dane", "tls=1.2", "bob@partner.example sms", "\udcc3\udcb6", "\t",
    ]
)  # fmt: skip
_WORD = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E)
    | st.sampled_from(
        ["é", "€", "日", "\x7f", "\x01", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\r"]
    ),
    max_size=12,
)
_VALUE = st.lists(_PIECES | _WORD, max_size=5).map(" ".join) | st.lists(
    _PIECES | _WORD, min_size=2, max_size=4
).map("\n ".join)  # as the MTA hands a folded field over
_RECIPIENTS = st.lists(
    st.sampled_from(
        [
            "bob@partner.example",
            "carol@oldmail.example",
            "Bob@Partner.Example",
            "jörg@partner.example",
            '"odd local"@oldmail.example',
            "dave@[192.0.2.1]",
            "not-an-address",
            "x@",
            "eve@hospital.example",
        ]
    ),
    min_size=1,
    max_size=4,
)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    folder: Path = tmp_path_factory.mktemp("fuzz")
    crypto.keygen(str(folder / "k"))
    store = SqliteStore.open(str(folder / "s"), crypto.load_kek(str(folder / "k")))
    cfg = make_config(
        {
            "submission": {"any_address_of_own_domains": True},
            "policy": {"outbound_direct_delivery": {"domains": ["partner.example"]}},
        }
    )
    facts = facts_from_mapping({"transport": {"partner.example": "pkix"}})
    yield Gateway(cfg, facts, store, Collecting(), hostname="gw.test")
    store.close()


def _transaction(headers: list[tuple[str, str]], sender: str, rcpts: list[str]) -> Transaction:
    head = b"".join(
        name.encode() + b": " + value.replace("\n", "\r\n").encode("utf-8", "surrogateescape")
        + b"\r\n"
        for name, value in headers
    ) + b"\r\n"  # fmt: skip
    raw = head + SECRET + b"\r\n"
    return Transaction(
        "QFUZZ", sender, [f"<{r}>" for r in rcpts], headers, io.BytesIO(raw), len(head),
        "127.0.0.1",
    )  # fmt: skip


@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", examples(300))),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    fields=st.lists(st.tuples(st.sampled_from(_NAMES), _VALUE), max_size=9),
    sender=st.sampled_from(["<alice@hospital.example>", "<>", "<bounce@hospital.example>"]),
    rcpts=_RECIPIENTS,
)
# Faults this test found, kept as examples: each held its message in tempfail until it bounced.
@example(  # raw 8-bit bytes in the Message-ID: the store could not keep it
    fields=[("Message-ID", "<\udcc3\udcb6@hospital.example>")],
    sender="<alice@hospital.example>",
    rcpts=["bob@partner.example"],
)
@example(  # a folded Message-ID, and a recipient that fails: the DSN could not be built
    fields=[("Message-ID", "\n <0123456789.abcdef@hospital.example>")],
    sender="<alice@hospital.example>",
    rcpts=["dave@[192.0.2.1]", "carol@oldmail.example"],
)
@example(  # a folded raw UTF-8 address field: the notification could not be built
    fields=[("To", "Jöhn Ström\n <carol@oldmail.example>")],
    sender="<alice@hospital.example>",
    rcpts=["carol@oldmail.example"],
)
def test_any_header_fields_get_a_decision_never_a_fault(
    gateway: Gateway, fields: list[tuple[str, str]], sender: str, rcpts: list[str]
) -> None:
    fields = [("From", "Alice <alice@hospital.example>"), *fields]  # most get past submission
    reinjector = gateway.reinjector
    assert isinstance(reinjector, Collecting)
    reinjector.sent.clear()

    plan = gateway.process(_transaction(fields, sender, rcpts))

    event("refused" if plan.reject else plan.summary.split(" kept=")[-1].split(" ")[0])
    if plan.reject is not None:
        assert plan.reject.startswith("5"), plan.reject  # a reason, and no retries
        return
    for out in reinjector.sent:
        if isinstance(out.content, bytes):
            data = out.content
        else:
            out.content.seek(0)
            data = out.content.read()
        parsed = BytesParser(policy=policy.default).parsebytes(data)
        if out.what.startswith(("notification", "DSN")):
            assert SECRET not in data, out.what
        if out.what.startswith("notification"):
            # the header block holds to its end: a field that broke it early would drop these
            # into the body
            assert parsed.get_content_type() == "multipart/alternative", data[:300]
            assert parsed["X-Zivmilter-Notification"] == "1" and parsed["Message-ID"]
            assert not parsed.defects, parsed.defects
        elif out.what == "DSN":
            assert parsed.get_content_type() == "multipart/report", data[:300]
            assert not parsed.defects, parsed.defects
    # the kept copy's header edits: each a field name the MTA can write
    assert all(_FIELD_NAME.fullmatch(n) for n, _ in plan.add_headers), plan.add_headers
    if plan.replace_body is not None and any(
        n == "X-Zivmilter-Notification" for n, _ in plan.add_headers
    ):
        assert SECRET not in plan.replace_body
