"""The quick-start demo: zivmilter on its embedded defaults, attached to a private Postfix.

Runs inside scripts/sandbox (a private network namespace): a loopback Postfix built from the
shipped postfix/ snippets, the real `zivmilter run` (SQLite store, fresh key), and local
receiving servers standing in for the recipients' mail servers. It sends
examples/secure-message.eml and shows what each recipient got and where the message is stored.
"""

from __future__ import annotations

import argparse
import os
import shutil
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

HOSTS = (
    "127.0.0.1 localhost\n"
    "127.0.0.30 oldmail.example x.example hospital.example\n"
    "127.0.0.40 partner.example care.example\n"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="keep running until Ctrl-C")
    args = parser.parse_args()

    workdir = REPO / "run" / "demo"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    ca = trustme.CA()
    ca_file = Path(tempfile.mkdtemp(prefix="zivmilter-demo-ca-")) / "ca.pem"
    ca_file.parent.chmod(0o755)
    ca_file.write_bytes(ca.cert_pem.bytes())
    ca_file.chmod(0o644)

    with (
        bind_mounted("/etc/hosts", HOSTS),
        Sink("127.0.0.30", 25) as plain,
        Sink(
            "127.0.0.40",
            25,
            tls=server_tls_context(ca.issue_cert("partner.example", "care.example")),
        ) as tls,
    ):
        pf = PostfixInstance(tls_ca_file=str(ca_file))
        import yaml

        example = yaml.safe_load((REPO / "examples" / "zivmilter.yaml").read_text())
        facts = yaml.safe_load((REPO / "examples" / "facts.yaml").read_text())
        # The demo has no DNSSEC resolver: its NTA 7516 partner gets a CA-valid MX (pkix).
        facts["transport"]["care.example"] = "pkix"
        z = attach(
            pf,
            config={
                "organization": example["organization"],
                "policy": example["policy"],
                "notification": example["notification"],
            },
            facts=facts,
            workdir=workdir,
        )
        with z, pf:
            print(
                f"Postfix (private instance) listens on 127.0.0.1:{pf.smtp_port}; "
                f"zivmilter on {z.socket}\n"
            )
            eml = (REPO / "examples" / "secure-message.eml").read_bytes()
            rcpts = [
                "bob@partner.example",
                "carol@oldmail.example",
                "care@care.example",
                "s@x.example",
            ]
            print("zivmilter explain says:")
            os.system(
                f"{sys.executable} -m zivmilter explain {REPO}/examples/secure-message.eml "
                f"--config {z.config_file} --facts {z.facts_file} | sed 's/^/  /'"
            )
            print("\nSending examples/secure-message.eml through Postfix ...")
            with smtplib.SMTP("127.0.0.1", pf.smtp_port) as s:
                s.sendmail("alice@hospital.example", rcpts, eml)
            deadline = time.monotonic() + 30
            while (
                len(plain.received) + len(tls.received) < len(rcpts) and time.monotonic() < deadline
            ):
                time.sleep(0.2)
            for r in sorted(plain.received + tls.received, key=lambda r: r.rcpt_tos):
                msg = r.message()
                over = f"over {r.tls_version}" if r.tls_version else "in clear text"
                if msg["X-Zivmilter-Notification"]:
                    body = msg.get_body(("plain",))
                    print(f"\n=== notification for {', '.join(r.rcpt_tos)} ({over}):")
                    print(f"Subject: {msg['Subject']}\n")
                    print(body.get_content().strip() if body else "")
                else:
                    print(
                        f"\n=== direct delivery to {', '.join(r.rcpt_tos)} ({over}); "
                        "the original, directive headers removed:"
                    )
                    print(r.data.decode("utf-8", "replace").strip())
            print(f"\nEncrypted store: {z.store_path} (SQLite + blobs/), key: {z.key_file}")
            print(f"zivmilter log: {z.log_file}")
            if args.keep:
                print(
                    "\nRunning; send more mail to "
                    f"127.0.0.1:{pf.smtp_port} from inside this namespace. Ctrl-C stops."
                )
                try:
                    while True:
                        time.sleep(3600)
                except KeyboardInterrupt:
                    pass
    shutil.rmtree(ca_file.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
