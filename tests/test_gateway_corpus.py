"""Every real-world message of the shared corpus through the gateway on every path at once: a
direct copy whose attachments above a (small) limit become links, a notification, and a DSN
for a recipient that fails. In-process (the Postfix run of the corpus, notification only, is in
tests/integration/test_milter_e2e.py): a decision for each, never a fault."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest

from tests.budget import sample
from tests.fakes import Collecting, make_config
from zivmilter import crypto
from zivmilter.core.facts import facts_from_mapping
from zivmilter.core.message import read_headers
from zivmilter.errors import MessageError
from zivmilter.gateway import Gateway, Transaction
from zivmilter.store import SqliteStore

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "maildir"
FILES = sorted(p for p in CORPUS.rglob("*") if p.is_file())


def as_sent(path: Path) -> tuple[bytes, list[tuple[str, str]], int]:
    """A corpus message as a client sends it and the MTA passes it to the milter (CRLF line
    ends): its bytes, its header fields and where its body starts. A file without header fields
    is no message a client can send: the test is skipped."""
    raw = re.sub(rb"\r\n|\r|\n", b"\r\n", path.read_bytes())
    head_end = raw.find(b"\r\n\r\n")
    head_end = len(raw) if head_end < 0 else head_end + 4
    try:
        headers = read_headers(raw[:head_end])
    except MessageError:
        pytest.skip("no header fields: not a message a client can send")
    return raw, headers, head_end


class _EveryoneSends:
    """Every From is an active sender account: every message reaches every path."""

    def is_active_sender(self, address: str) -> bool:
        return True


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    folder = tmp_path_factory.mktemp("corpus")
    crypto.keygen(str(folder / "k"))
    store = SqliteStore.open(str(folder / "s"), crypto.load_kek(str(folder / "k")))
    cfg = make_config(
        {
            "submission": {"spf": False},
            "policy": {
                "outbound_direct_delivery": {"domains": ["partner.example"]},
                "large_attachment_bytes": 2000,
            },
        }
    )
    facts = facts_from_mapping({"transport": {"partner.example": "pkix"}})
    yield Gateway(cfg, facts, store, Collecting(), hostname="gw.test", senders=_EveryoneSends())
    store.close()


def test_the_corpus_is_there() -> None:
    assert len(FILES) > 300, CORPUS


@pytest.mark.parametrize("path", sample(FILES), ids=lambda p: p.name)
def test_every_path_for_every_corpus_message(gateway: Gateway, path: Path) -> None:
    raw, headers, head_end = as_sent(path)
    rcpts = ["<bob@partner.example>", "<carol@oldmail.example>", "<not-an-address>"]
    tx = Transaction("QCORPUS", "<alice@hospital.example>", rcpts, headers, io.BytesIO(raw),
                     head_end, "127.0.0.1")  # fmt: skip
    reinjector = gateway.reinjector
    assert isinstance(reinjector, Collecting)
    reinjector.sent.clear()

    plan = gateway.process(tx)

    assert plan.reject is None or plan.reject.startswith("5"), plan.reject
    if plan.reject is None:
        assert [o.what for o in reinjector.sent] == ["notification to carol@oldmail.example", "DSN"]
    for out in reinjector.sent:
        assert isinstance(out.content, bytes)  # generated: the direct copy is the kept one
        parsed = BytesParser(policy=policy.default).parsebytes(out.content)
        assert not parsed.defects, (out.what, parsed.defects)
        if out.what == "DSN":
            assert parsed.get_content_type() == "multipart/report"
            assert "<not-an-address>" in out.content.decode("ascii", "replace")
        else:
            assert parsed.get_content_type() == "multipart/alternative"
            assert parsed["X-Zivmilter-Notification"] == "1"
    if plan.replace_body is not None:  # the direct copy stays: its large attachments are links
        assert b"/d/" in plan.replace_body
