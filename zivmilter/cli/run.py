"""`zivmilter run` and `zivmilter keygen`: wiring of config, key, store, facts and milter."""

from __future__ import annotations

import argparse
import gc
from typing import Any

from zivmilter import crypto, logsetup, metrics
from zivmilter.core import config as config_mod
from zivmilter.core.facts import Facts, KeyedFacts, StaticFacts, load_facts, with_config
from zivmilter.core.submission import SpfChecker


def cmd_keygen(args: argparse.Namespace) -> int:
    crypto.keygen(args.file)
    print(f"{args.file}: new key-encryption key written (mode 0600); keep a backup apart")
    return 0


def _transport_source(cfg: config_mod.Config) -> Any:
    try:
        from zivmilter.transport.live import TransportFacts
    except ImportError:
        return None
    return TransportFacts(cfg).start()


def spf_checker(cfg: config_mod.Config) -> SpfChecker | None:
    """The SPF checker where any listener's rules use SPF (`submission.spf`, or
    `submission.listeners.NAME.spf`); each check still asks its own listener's rules whether
    SPF counts there. None (no SPF at all) otherwise."""
    from zivmilter.transport.spf import PySpfChecker

    if cfg.submission.spf or any(r.spf for r in cfg.submission.listeners.values()):
        return PySpfChecker.from_config(cfg)
    return None


def cmd_run(args: argparse.Namespace) -> int:
    from zivmilter.core.submission import SenderAccounts, StoreSenderAccounts
    from zivmilter.delivery.reinject import SmtpReinjector
    from zivmilter.gateway import Gateway
    from zivmilter.mta.livefacts import LiveFacts
    from zivmilter.mta.milter import serve
    from zivmilter.store import open_store

    cfg = config_mod.load(args.config)
    logsetup.setup(cfg.logging.level, fmt=cfg.logging.format)
    store = open_store(cfg)
    source: Facts = (
        load_facts(args.facts) if args.facts else LiveFacts(cfg, store, _transport_source(cfg))
    )
    if cfg.encryption.enabled:  # recipients' own keys: the key store, then discovery (issue 26)
        from zivmilter.keys.wiring import key_finder

        source = KeyedFacts(source, key_finder(cfg, store))
    # The config's IDD and NTA 7516 lists on top, once here rather than per message (assess.py
    # would add them otherwise): pinned and live facts alike, as `explain` does.
    facts = with_config(source, cfg)
    reinjector = SmtpReinjector(cfg.reinject.host, cfg.reinject.port, cfg.reinject.timeout)
    # Sender accounts: the facts file's `senders` with --facts, else the store's accounts.
    senders: SenderAccounts = (
        source if isinstance(source, StaticFacts) else StoreSenderAccounts(store)
    )
    spf = spf_checker(cfg)
    gateway = Gateway(cfg, facts, store, reinjector, spf=spf, senders=senders)
    content = cfg.selection.content
    if content.active and "attachment_text" in content.scope:
        import threading

        from zivmilter.gateway.attachtext import warm_up

        # The attachment reader's process server, started beside the milter (not in the way
        # of its start): the first message with an attachment need not wait for its imports.
        threading.Thread(target=warm_up, name="attachment-reader", daemon=True).start()
    metrics.serve(cfg.metrics.listen)  # no-op unless metrics.listen is set
    # Start-up's objects live as long as the process: out of the collector's sight, so that a
    # full collection does not walk them with the GIL held while messages wait (as the portal).
    gc.collect()
    gc.freeze()
    serve(
        gateway,
        cfg.milter.socket,
        cfg.milter.timeout,
        cfg.milter.spool_threshold,
        ready=_ready,
    )
    return 0


def _ready() -> None:
    from zivmilter import sdnotify

    sdnotify.notify("READY=1")  # no-op outside systemd


def add_commands(sub: Any) -> None:
    p = sub.add_parser("run", help="run the milter")
    p.add_argument("--config", required=True, metavar="FILE")
    p.add_argument("--facts", metavar="FILE", help="pin facts (testing, fixed answers)")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("keygen", help="create a key-encryption key file for the store")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(handler=cmd_keygen)
