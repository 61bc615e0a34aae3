"""The portal's wiring from a configuration: the store, the keys, the SMS and mail senders, and
the ASGI app uvicorn serves.

`zivmilter portal` (cli/portal.py) serves `create_app(build_portal(cfg))` itself with one worker;
with several, each of uvicorn's worker processes calls `app_from_environment` (the factory string
`ASGI_FACTORY`), which finds the configuration file in `$ZIVMILTER_PORTAL_CONFIG`.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette

from zivmilter import crypto, logsetup, sdnotify
from zivmilter.core import config as config_mod
from zivmilter.delivery.reinject import SmtpReinjector
from zivmilter.delivery.replies import reply_reinjector
from zivmilter.errors import ConfigError
from zivmilter.portal.app import create_app
from zivmilter.portal.context import Portal
from zivmilter.portal.security import PortalKeys
from zivmilter.portal.sms import sms_sender
from zivmilter.store import open_store

ENV_CONFIG = "ZIVMILTER_PORTAL_CONFIG"
ASGI_FACTORY = "zivmilter.portal.asgi:app_from_environment"


def build_portal(cfg: config_mod.Config) -> Portal:
    """The app's wiring from the configuration (also used by uvicorn's worker processes)."""
    return Portal(
        cfg=cfg,
        store=open_store(cfg),
        keys=PortalKeys.from_kek(crypto.load_kek(cfg.store.key_file)),
        sms=sms_sender(cfg.sms, cfg.source),
        mailer=SmtpReinjector(cfg.reinject.host, cfg.reinject.port, cfg.reinject.timeout),
        reply_mailer=reply_reinjector(cfg.reinject),
    )


def app_from_environment() -> Starlette:
    """uvicorn's factory in worker processes (`--workers` > 1)."""
    cfg = config_mod.load(os.environ[ENV_CONFIG])
    logsetup.setup(cfg.logging.level, fmt=cfg.logging.format)
    return create_app(build_portal(cfg), on_ready=lambda: sdnotify.notify("READY=1"))


def parse_listen(value: str, source: str = "<config>") -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(source, "portal.listen", f"{value!r} is not HOST:PORT")
    return host, int(port)
