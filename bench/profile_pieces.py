"""Where the milter's CPU goes, piece by piece, from a py-spy raw profile.

The profile comes from bench/profile_zivmilter.sh.

    .venv/bin/python bench/profile_pieces.py PROFILE [MS_PER_MESSAGE]

Each sampled stack is charged to one piece: the innermost frame (leaf first) that names one of
the pieces below. Start-up (imports, the argument parser) is counted apart;
with MS_PER_MESSAGE (the milter's CPU per message without start-up), the other shares are also
printed as ms per message. Sampled with --gil, a stack is the thread holding the GIL: Python's
own CPU; SQLite and fsync release the GIL, so the commit's disk wait is not in it.
"""

from __future__ import annotations

import re
import sys
from collections import Counter

_STARTUP = r"^(?:main|cmd_run|_find_and_load|build_parser) "
_COMMIT = r"_commit_grouped|_write_batch|_transaction|_writer|write \(zivmilter/store"
_APPLY = r"ZivMilter\._apply|chgheader|addheader|replacebody|delrcpt"
# (piece, pattern over "function (file:line)") — checked leaf first, the first match wins.
PIECES: list[tuple[str, str]] = [
    ("start-up (imports, argument parser, opening)", _STARTUP),
    ("logging", r"\((?:logging/|zivmilter/logsetup)"),
    ("metrics", r"\(zivmilter/metrics"),
    (
        "store: blob encryption",
        "encrypt_stream|encrypt_content|_write_blob|seal_|_hkdf|new_data_key|field_key",
    ),
    ("store: link token + hashes", r"token_hash|token_urlsafe|verification_data"),
    ("store: commit (SQL + wait)", _COMMIT),
    ("store: other", r"\(zivmilter/store/"),
    ("gateway: notification", r"\(zivmilter/mail/notification|_copies"),
    ("gateway: large parts", r"\(zivmilter/mail/(?:parts|attachments)"),
    ("gateway: content spool copy", r"clean_copy|\(zivmilter/gateway/spool"),
    ("gateway: plan", r"_plan_for_kept|_strip_plan|header_fields"),
    ("submission check", r"\(zivmilter/core/submission"),
    ("policy (assess, selection, decide)", r"\(zivmilter/core/"),
    ("gateway: other", r"\(zivmilter/gateway/"),
    ("milter: eom apply (libmilter calls)", _APPLY),
    ("milter: eom other", r"ZivMilter\.eom"),
    ("milter: callbacks (connect..body)", r"\(zivmilter/mta/|\(Milter/"),
]


def main() -> None:
    counts: Counter[str] = Counter()
    total = 0
    with open(sys.argv[1]) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if not n.isdigit():
                continue
            frames = [f for f in stack.split(";") if f]
            total += int(n)
            if not frames:
                counts["pymilter C glue (a callback with no Python frame)"] += int(n)
                continue
            if any(re.match(PIECES[0][1], f) for f in frames):
                counts[PIECES[0][0]] += int(n)
                continue
            for frame in reversed(frames):
                piece = next((p for p, rx in PIECES[1:] if re.search(rx, frame)), None)
                if piece is not None:
                    break
            else:
                piece = "other (outside the milter's code)"
            counts[piece] += int(n)
    ms = float(sys.argv[2]) if len(sys.argv) > 2 else None
    startup = counts.pop(PIECES[0][0], 0)
    steady = total - startup
    print(f"{total} samples, {startup} of them start-up; shares of the other {steady}:")
    for piece, n in counts.most_common():
        share = n / steady
        extra = f"  {share * ms:5.2f} ms/msg" if ms is not None else ""
        print(f"  {piece:<52} {share * 100:5.1f} %{extra}")


if __name__ == "__main__":
    main()
