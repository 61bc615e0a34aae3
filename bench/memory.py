"""Benchmark: peak RSS of the zivmilter process for one 50 MB message (target below 200 MB).

Run inside the sandbox: `scripts/sandbox .venv/bin/python bench/memory.py [--mb 50]`.
The message goes to two direct-delivery levels and one notification recipient, so the milter
spools it, encrypts it into the store, keeps one copy in the transaction and re-injects a second
50 MB copy over SMTP: the heaviest path it has. Peak RSS is the kernel's VmHWM of the process.
"""

from __future__ import annotations

import argparse
import os
import smtplib
import sys
import tempfile
import time
from pathlib import Path

import trustme

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.harness.postfix import PostfixInstance  # noqa: E402
from tests.harness.sandbox import bind_mounted  # noqa: E402
from tests.harness.sink import Sink, server_tls_context  # noqa: E402
from tests.harness.zivmilter import attach  # noqa: E402

TARGET_MB = 200
HOSTS = (
    "127.0.0.1 localhost\n127.0.0.30 oldmail.example hospital.example\n"
    "127.0.0.40 partner.example\n127.0.0.41 tlsonly.example\n"
)


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def big_message(mb: int, attachment: bool) -> bytes:
    line = b"A" * 76 + b"\r\n"  # base64 lines, as a large attachment has them
    lines = line * (mb * 1024 * 1024 // len(line))
    head = (
        b"From: alice@hospital.example\r\nTo: bob@partner.example, t@tlsonly.example\r\n"
        b"Cc: carol@oldmail.example\r\nSubject: big\r\nMIME-Version: 1.0\r\n"
    )
    if not attachment:
        return head + b"Content-Type: text/plain\r\n\r\n" + lines
    return (
        head + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: text/plain\r\n\r\nsee the scan\r\n--b\r\n"
        b'Content-Type: application/pdf; name="scan.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="scan.pdf"\r\n\r\n' + lines + b"--b--\r\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument(
        "--attachment",
        action="store_true",
        help="one large attachment (direct copies then carry a download link instead)",
    )
    args = parser.parse_args()
    data = big_message(args.mb, args.attachment)
    ca = trustme.CA()
    ca_file = Path(tempfile.mkdtemp(prefix="zivmilter-bench-")) / "ca.pem"
    ca_file.parent.chmod(0o755)
    ca_file.write_bytes(ca.cert_pem.bytes())
    ca_file.chmod(0o644)
    strange = trustme.CA()
    with (
        bind_mounted("/etc/hosts", HOSTS),
        Sink("127.0.0.30", 25) as plain,
        Sink("127.0.0.40", 25, tls=server_tls_context(ca.issue_cert("partner.example"))) as pkix,
        Sink(
            "127.0.0.41", 25, tls=server_tls_context(strange.issue_cert("tlsonly.example"))
        ) as tls,
    ):
        size = str(200 * 1024 * 1024)
        pf = PostfixInstance(
            tls_ca_file=str(ca_file),
            extra={"message_size_limit": size, "mailbox_size_limit": size},
        )
        z = attach(
            pf,
            facts={"transport": {"partner.example": "pkix", "tlsonly.example": "tls"}},
            config={"policy": {"transport_security_compliance": "tls"}},
        )
        with z, pf:
            assert z.proc is not None
            idle = vm_hwm_mb(z.proc.pid)
            start = time.perf_counter()
            with smtplib.SMTP("127.0.0.1", pf.smtp_port, timeout=300) as s:
                s.sendmail(
                    "alice@hospital.example",
                    ["bob@partner.example", "t@tlsonly.example", "carol@oldmail.example"],
                    data,
                )
            accepted = time.perf_counter() - start
            try:
                for sink in (plain, pkix, tls):
                    sink.wait_for(1, timeout=120)
            except AssertionError:
                print(pf.log()[-4000:], z.log()[-3000:])
                raise
            peak = vm_hwm_mb(z.proc.pid)
    ok = peak < TARGET_MB
    print(f"message size          {len(data) / 1e6:8.1f} MB")
    print(f"milter RSS idle       {idle:8.1f} MB")
    verdict = "met" if ok else "NOT met"
    print(f"milter peak RSS       {peak:8.1f} MB   (target < {TARGET_MB} MB: {verdict})")
    print(f"accepted after        {accepted:8.1f} s  (store + re-injection of a {args.mb} MB copy)")
    print(
        f"direct copies at the sinks: pkix {len(pkix.received[0].data) / 1e6:.1f} MB, "
        f"tls {len(tls.received[0].data) / 1e6:.1f} MB"
    )
    os.unlink(ca_file)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
