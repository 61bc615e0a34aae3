"""Where the CPU of one verified portal view goes, in-process: the app (create_app, as
`zivmilter portal` serves it) driven by httpx's ASGITransport, no server, no wrk, under
cProfile; prints CPU per view and the functions that take it, and the store's statements per
view (PostgreSQL: counted at psycopg's cursor, transaction blocks at its connection; without
pipelining, each statement is a round trip).

    .venv/bin/python bench/portal_profile.py [--views N] [--top N]
    scripts/sandbox .venv/bin/python bench/portal_profile.py --postgresql

The views are those of bench/portal.sh: a text message page, and an HTML message page plus its
sandboxed frame (its own view: two requests). The thread pool is bypassed (see
`inline_thread_pool`): a server's thread hops and its HTTP parsing are py-spy's to show, on a
real `zivmilter portal` under bench/portal.sh. The session is verified over HTTP exactly as a
browser does it (open the link, submit the access code). Nothing leaves the process (PostgreSQL:
a private cluster, tests/harness/postgres.py, stopped at exit).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import re
import sys
import tempfile
import time
from collections import Counter
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio.to_thread
import httpx

from zivmilter import crypto
from zivmilter.core import config as config_mod
from zivmilter.portal.app import create_app
from zivmilter.portal.asgi import build_portal
from zivmilter.store import NewMessage, NewRecipient

BASE = "http://127.0.0.1:8025"


def message(html: bool) -> bytes:
    m = EmailMessage()
    m["From"], m["To"] = "Dr. Alice <alice@hospital.example>", "bob@example.net"
    m["Subject"], m["Message-ID"] = "Lab results", "<bench@hospital.example>"
    m.set_content("Dear Bob,\n\n" + "Your results are within the normal range. " * 40 + "\n")
    if html:
        m.add_alternative(
            "<h2>Results</h2><p>" + "Your results are <b>normal</b>. " * 40
            + "<img src='cid:logo@h'></p>", subtype="html",
        )  # fmt: skip
        m.get_body(("html",)).add_related(  # type: ignore[union-attr]
            b"\x89PNG\r\n\x1a\n" + bytes(600), maintype="image", subtype="png", cid="<logo@h>"
        )
    m.add_attachment(bytes(range(256)) * 200, maintype="application", subtype="pdf",
                     filename="results.pdf")  # fmt: skip
    return m.as_bytes(policy=SMTP)


async def verified(client: httpx.AsyncClient, token: str) -> str:
    """Open the link and answer the access code, as a browser; the link's page path."""
    first = (await client.get(f"/m/{token}")).text
    found = re.search(r'url=(/r/\d+/)"', first)
    assert found, first
    path = found.group(1)
    page = (await client.get(path)).text
    csrf = re.search(
        r'action="[^"]*verify"[^>]*>\s*<input type="hidden" name="csrf" value="([^"]+)"', page
    )
    assert csrf, page
    shown = await client.post(
        path + "verify", data={"csrf": csrf.group(1), "code": "bench-code-1"},
        headers={"Origin": BASE},
    )  # fmt: skip
    assert 'id="subject"' in shown.text, "verification failed"
    return path


def count_statements() -> Counter[str]:
    """Count what the PostgreSQL store executes (first words of each statement)."""
    import psycopg

    seen: Counter[str] = Counter()
    original = psycopg.Cursor.execute

    def execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        seen[" ".join(str(query).split()[:6])] += 1
        return original(self, query, *args, **kwargs)

    psycopg.Cursor.execute = execute  # type: ignore[method-assign]
    block = psycopg.Connection.transaction

    def transaction(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen["(BEGIN ... COMMIT)"] += 1
        return block(self, *args, **kwargs)

    psycopg.Connection.transaction = transaction  # type: ignore[method-assign]
    return seen


def inline_thread_pool() -> None:
    """Run the handlers' blocking halves on the loop's thread, where cProfile sees them (it
    profiles one thread); the thread hop they make in a server is not in these figures."""

    async def inline(func: Any, *args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    for name, module in list(sys.modules.items()):
        if name.startswith("zivmilter.portal") and hasattr(module, "run_in_threadpool"):
            module.run_in_threadpool = inline
    # Portal.run (the GET pages, inside a request scope) calls anyio with a limiter

    async def run_sync(func: Any, *args: Any, limiter: Any = None, **kwargs: Any) -> Any:
        return func(*args)

    anyio.to_thread.run_sync = run_sync  # type: ignore[assignment]


async def run(args: argparse.Namespace, work: Path) -> None:
    key = work / "store.key"
    crypto.keygen(str(key))
    store = f"{{path: {work}/store, key_file: {key}}}"
    if args.postgresql:
        import os

        from tests.harness.postgres import Cluster

        cluster = Cluster().start()
        import atexit

        atexit.register(cluster.stop)
        os.environ["PGPASSFILE"] = str(cluster.passfile)
        dsn = cluster.dsn(cluster.new_database())
        store = f'{{backend: postgresql, dsn: "{dsn}", path: {work}/store, key_file: {key}}}'
    (work / "z.yaml").write_text(
        "organization: {name: Bench Hospital, domains: [hospital.example]}\n"
        f"store: {store}\n"
        f'portal: {{base_url: "{BASE}/", listen: "127.0.0.1:8025"}}\n'
        f"sms: {{backend: file, file: {work}/sms.log}}\n"
        "logging: {level: warning}\n"
    )
    cfg = config_mod.load(str(work / "z.yaml"))
    portal = build_portal(cfg)
    app = create_app(portal)
    kinds = {}
    for kind in ("text", "html"):
        saved = portal.store.save_message(NewMessage(
            sender="alice@hospital.example", subject="Lab results",
            content=message(kind == "html"),
            recipients=[NewRecipient("bob@example.net", 1, "custom_access_right", "notification",
                                     "A3", verification="access_code",
                                     access_code="bench-code-1")]))  # fmt: skip
        kinds[kind] = saved.tokens["bob@example.net"]
    statements = count_statements() if args.postgresql else Counter[str]()
    inline_thread_pool()
    transport = httpx.ASGITransport(app=app)
    for kind, token in kinds.items():
        async with httpx.AsyncClient(
            transport=transport, base_url=BASE, follow_redirects=True
        ) as client:
            path = await verified(client, token)
            urls = [path] if kind == "text" else [path, path + "body"]

            async def views(n: int, urls: list[str] = urls, client: Any = client) -> None:
                for _ in range(n):
                    for url in urls:
                        r = await client.get(url)
                        assert r.status_code == 200, (url, r.status_code)

            await views(20)  # warm: the kept view, the templates, the pool
            statements.clear()
            profile = cProfile.Profile()
            cpu, wall = time.process_time(), time.perf_counter()
            profile.enable()
            await views(args.views)
            profile.disable()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            print(f"== {kind}: {args.views} views, CPU {cpu / args.views * 1000:.2f} ms per view"
                  f" (wall {wall / args.views * 1000:.2f} ms)")  # fmt: skip
            if statements:
                blocks = statements["(BEGIN ... COMMIT)"]
                per = (sum(statements.values()) + blocks) / args.views
                print(f"   statements to PostgreSQL per view, BEGIN and COMMIT counted: {per:.1f}")
                for stmt, n in statements.most_common():
                    print(f"     {n / args.views:4.1f}  {stmt}")
            out = io.StringIO()
            stats = pstats.Stats(profile, stream=out)
            # the app's side only (httpx's client side is the browser's work)
            stats.sort_stats(args.sort).print_stats(args.only, args.top)
            if args.callers:
                stats.print_callers(args.callers)
            print("\n".join(out.getvalue().splitlines()[4:]))
    portal.store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--views", type=int, default=300)
    parser.add_argument("--top", type=int, default=35)
    parser.add_argument("--sort", default="cumulative", help="tottime, cumulative")
    parser.add_argument("--postgresql", action="store_true")
    parser.add_argument(
        "--only", default="zivmilter|starlette|jinja2|nh3|psycopg|sqlite3|crypto|hmac|email",
        help="a regular expression of the functions to list",
    )  # fmt: skip
    parser.add_argument("--callers", help="a regular expression: who calls these functions")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zivmilter-portal-profile-") as tmp:
        asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    main()
