"""Benchmark: the content rules (selection.content, issue 17) on one core.

1. scanning speed: MB/s of text (Dutch letters full of dates, phone numbers, amounts, postcodes,
   order numbers, and now and then a BSN, an IBAN or a card number) for the built-in rules
   (bsn, iban, payment_card), through `content.scan`; target at least 50 MB/s;
2. per message: reading the text of a 5 KB message as the gateway does (bodytext.py) and
   scanning it, for a plain-text and a multipart (text + HTML + attachment) message;
3. the added milter CPU per 5 KB message: the gateway's end-of-message use case in-process
   (real encrypted store, re-injection collected), CPU time (user + system) per message with
   every built-in rule on against none, both in `selection.mode: all` so that the same work is
   done but for the scan. Target: less than 5 % of the milter's CPU per message, which
   bench/throughput.sh reports for case (c) (about 1.8 ms/msg for 5 KB messages). In the same
   run, interleaved with those two, a third gateway has the rules on without content.py's
   pre-check (RE2 reads every text): the pre-check's effect, measured under the same load.

Run: .venv/bin/python bench/content.py   (ROUNDS=5 MESSAGES=300 to change the effort)
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from tests.fakes import Collecting
from zivmilter import crypto
from zivmilter.core import config
from zivmilter.core import content as content_mod
from zivmilter.core.bodytext import parts_of_body
from zivmilter.core.content import TEXT_PLAIN, Part, _builtin, bsn_valid, scan
from zivmilter.core.facts import facts_from_mapping
from zivmilter.core.message import read_headers
from zivmilter.gateway import Gateway, Transaction
from zivmilter.store import SqliteStore

TARGET_MB_S = 50.0
TARGET_ADDED = 0.05
MILTER_MS_PER_MSG = 1.8  # bench/throughput.sh, case (c), 5 KB messages
ROUNDS = int(os.environ.get("ROUNDS", "5"))
MESSAGES = int(os.environ.get("MESSAGES", "300"))
RULES = {"bsn": True, "iban": True, "payment_card": True}

SENTENCES = [
    "Geachte heer Jansen, hierbij ontvangt u de uitslag van het onderzoek van {d} maart 2024.",
    "Uw afspraak staat gepland op {d}-03-2024 om 10:{d}0 uur op de polikliniek Cardiologie.",
    "Bel ons gerust op 020-555{n4} of op 06-1234{n4} als u vragen heeft over de uitslag.",
    "Het eigen risico bedraagt EUR 385,00; uw factuur 2024-00{n4} van EUR 1.234,{d}0 volgt.",
    "Ordernummer 2024{n6} is verzonden naar Postbus {n4}, 1000 AB Amsterdam.",
    "Uw referentie is {n9}; vermeld die bij elke vraag over dit onderzoek.",
    "Met vriendelijke groet, Dr. A. de Vries, Afdeling Interne Geneeskunde, route {d}{d}.",
    "De medicatie (metoprolol 50 mg, 2x per dag) blijft ongewijzigd tot {d}-04-2024.",
    "Wij verzoeken u de nuchtere bloedafname uiterlijk {d} dagen voor het consult te laten doen.",
]
SECRETS = ["BSN: 1234.56.782", "IBAN NL91 ABNA 0417 1643 00", "kaart 4111 1111 1111 1111"]


def nine_digits(rnd: random.Random) -> int:
    """A nine-digit reference that fails the eleven-test: a candidate the BSN rule must check."""
    while True:
        n = rnd.randint(10**8, 10**9 - 1)
        if not bsn_valid(str(n)):
            return n


def letter_text(
    size: int, seed: int = 1, secrets: float = 0.0, references: bool = True
) -> tuple[str, int]:
    """About `size` characters of letters, and how many secrets (a `secrets` share of the
    sentences) were planted in them. `references`: with the sentence that carries a nine-digit
    number (about one sentence in nine), each a candidate the BSN rule must check."""
    rnd = random.Random(seed)
    sentences = SENTENCES if references else [s for s in SENTENCES if "{n9}" not in s]
    out: list[str] = []
    total = planted = 0
    while total < size:
        s = rnd.choice(sentences).format(
            d=rnd.randint(1, 9),
            n4=rnd.randint(1000, 9999),
            n6=rnd.randint(100000, 999999),
            n9=nine_digits(rnd),
        )
        if rnd.random() < secrets:
            s += " " + rnd.choice(SECRETS) + "."
            planted += 1
        out.append(s)
        total += len(s) + 1
    return "\n".join(out), planted


def best(fn: Any, rounds: int = ROUNDS) -> float:
    times = []
    for _ in range(rounds):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


def scanning_speed() -> float:
    cfg = config.from_mapping(
        {"organization": {"domains": ["h.example"]}, "selection": {"content": RULES}}
    )
    content = cfg.selection.content
    # 1 MB blocks, about 10 secrets each: fewer than the matches reported per message, so that
    # every block is read to its end (checked: every planted secret is found, nothing else)
    made = [letter_text(1024 * 1024, seed, secrets=0.001) for seed in range(4)]
    blocks = [text for text, _ in made]
    planted = sum(n for _, n in made)
    found = sum(len(_builtin(b.encode(), content)) for b in blocks)
    assert found == planted, (found, planted)
    size = sum(len(b.encode()) for b in blocks) / 1e6
    spent = best(lambda: [scan(content, [Part(TEXT_PLAIN, b)]) for b in blocks])
    rate = size / spent
    print(
        f"scan: {size:.1f} MB of text in {spent * 1000:.0f} ms: {rate:.0f} MB/s"
        f" ({found} planted secrets found, nothing else)"
    )
    return rate


# The 5 KB messages: a letter (dates, times, phone numbers, amounts, postcodes, order numbers:
# no nine-digit number), the same with nine-digit references (about 9 BSN candidates that fail
# the eleven-test), and a multipart/alternative one (text + HTML + a small PDF).
KINDS = ("letter", "references", "multipart")


def five_kb(kind: str) -> bytes:
    size = 2000 if kind == "multipart" else 4600
    text = letter_text(size, seed=7, references=kind == "references")[0]
    msg = EmailMessage()
    msg["From"] = "alice@hospital.example"
    msg["To"] = "bob@partner.example"
    msg["Subject"] = "Uitslag onderzoek"
    msg["Message-ID"] = "<bench@hospital.example>"
    msg.set_content(text)
    if kind == "multipart":
        msg.add_alternative("<p>" + text.replace("\n", "</p><p>") + "</p>", subtype="html")
        msg.add_attachment(b"x" * 600, maintype="application", subtype="pdf", filename="brief.pdf")
    return msg.as_bytes().replace(b"\n", b"\r\n")


def transaction(raw: bytes) -> Transaction:
    offset = raw.index(b"\r\n\r\n") + 4
    headers = read_headers(raw)
    return Transaction(
        "QBENCH", "<alice@hospital.example>", ["<bob@partner.example>"], headers,
        io.BytesIO(raw), offset, "127.0.0.1",
    )  # fmt: skip


def per_message() -> None:
    cfg = config.from_mapping(
        {"organization": {"domains": ["h.example"]}, "selection": {"content": RULES}}
    )
    content = cfg.selection.content
    for kind in KINDS:
        raw = five_kb(kind)
        headers = read_headers(raw)
        offset = raw.index(b"\r\n\r\n") + 4
        n = 2000

        def run(raw: bytes = raw, headers: Any = headers, offset: int = offset, n: int = n) -> None:
            for _ in range(n):
                scan(content, parts_of_body(headers, raw, offset, content.scope))

        spent = best(run)
        with no_precheck():
            full = best(run)
        print(
            f"per message ({kind}, {len(raw)} bytes): {spent / n * 1e6:.0f} us (read text + scan;"
            f" {full / n * 1e6:.0f} us without the pre-check)"
        )


@contextlib.contextmanager
def no_precheck() -> Iterator[None]:
    """content.py as if it had no pre-check: RE2 reads every text."""
    saved = content_mod._PRECHECK_MAX_BYTES
    content_mod._PRECHECK_MAX_BYTES = -1
    try:
        yield
    finally:
        content_mod._PRECHECK_MAX_BYTES = saved


def gateway_cpu(kind: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        crypto.keygen(f"{tmp}/k")
        store = SqliteStore.open(f"{tmp}/s", crypto.load_kek(f"{tmp}/k"))
        facts = facts_from_mapping({})
        base = {
            "organization": {"domains": ["hospital.example"]},
            "submission": {"any_address_of_own_domains": True},
        }
        gateways = {
            name: Gateway(
                config.from_mapping({**base, "selection": {"mode": "all", "content": rules}}),
                facts,
                store,
                Collecting(),
                hostname="gw.test",
            )
            for name, rules in (("off", {}), ("on", RULES), ("full", RULES))
        }
        raw = five_kb(kind)
        per: dict[str, list[float]] = {name: [] for name in gateways}
        order = list(gateways)
        for i in range(ROUNDS * MESSAGES):
            # message by message, in turn: the machine's other load hits all alike, and the
            # median of each is not moved by a few slow moments
            turn = i % len(order)
            for name in order[turn:] + order[:turn]:
                tx = transaction(raw)
                with no_precheck() if name == "full" else contextlib.nullcontext():
                    start = time.process_time()
                    gateways[name].process(tx)
                    per[name].append(time.process_time() - start)
        store.close()
    off, on, full = (statistics.median(per[name]) * 1000 for name in order)
    added = on - off
    print(
        f"gateway end-of-message CPU per 5 KB message ({kind}, {len(raw)} bytes), median of"
        f" {ROUNDS * MESSAGES}: rules off {off:.3f} ms, on {on:.3f} ms, added {added * 1000:.0f} us"
        f" (without the pre-check: {full:.3f} ms, added {(full - off) * 1000:.0f} us)"
    )
    share = added / MILTER_MS_PER_MSG
    print(
        f"added CPU per message ({kind}): {share:.1%} of the milter's {MILTER_MS_PER_MSG} ms/msg"
        f" (bench/throughput.sh case c); target < {TARGET_ADDED:.0%}"
    )
    return share


def main() -> int:
    rate = scanning_speed()
    per_message()
    shares = {kind: gateway_cpu(kind) for kind in ("letter", "references")}
    print(
        f"scanning speed >= {TARGET_MB_S:.0f} MB/s: {'met' if rate >= TARGET_MB_S else 'NOT met'}"
    )
    for kind, share in shares.items():
        verdict = "met" if share < TARGET_ADDED else "NOT met"
        print(f"added CPU < {TARGET_ADDED:.0%} ({kind}): {verdict}")
    ok = rate >= TARGET_MB_S and all(s < TARGET_ADDED for s in shares.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
