"""Prometheus metrics of the milter and the portal: the counters and histograms an admin
alerts on, in prometheus_client's text format.

Every hook is one call from the code it measures and does nothing until `enable()`: the milter
enables them with `metrics.listen` (its own HTTP listener), the portal with `metrics.token`
(`/metrics`, for that bearer token only). Label values come from small fixed sets (outcomes,
methods, levels; anything else counts as "other"): never an address, a domain or a message id.
A kernel module with no framework in it, so the gateway, the prober and the portal can all
call it; the portal's endpoint is a bare ASGI app. `zivmilter maintenance`, a one-shot job,
writes its own gauges for node_exporter's textfile collector (`metrics.textfile`).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

OUTCOMES = ("secured", "passed", "refused", "tempfail")
METHODS = (
    "account",
    "nta7516",
    "direct_delivery",
    "custom_access_right",
    "transport_security",
    "sms",
    "access_code",
    "email_verification",
    "none",
)
DELIVERIES = ("notification", "direct", "failed", "pass")
LEVELS = ("none", "tls", "pkix", "pane", "dane")
VERIFY_METHODS = ("sms", "email", "access_code", "account")
VERIFY_OUTCOMES = ("ok", "wrong", "locked", "enrol")
REPLY_RESULTS = ("delivered", "refused", "deferred")

# Seconds: an end of message takes milliseconds, a slow store commit or probe far longer.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_AGE_BUCKETS = (60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 7 * 86400)

_m: _Metrics | None = None


def _bounded(value: str, allowed: tuple[str, ...]) -> str:
    return value if value in allowed else "other"


class _Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector

        self.registry = r = CollectorRegistry()
        ProcessCollector(registry=r)
        self.messages = Counter(
            "zivmilter_messages", "Messages at end of data, by outcome", ["outcome"], registry=r
        )
        self.recipients = Counter(
            "zivmilter_recipients",
            "Recipients of secured messages, by method, delivery and transport level",
            ["method", "delivery", "level"],
            registry=r,
        )
        self.eom = Histogram(
            "zivmilter_end_of_message_seconds",
            "Time from end of data to the milter's answer",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.store_commit = Histogram(
            "zivmilter_store_commit_seconds",
            "Time to store a secured message durably (before the milter accepts it)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.store_batch = Histogram(
            "zivmilter_store_commit_batch_size",
            "Secured messages per durable commit (group commit: one fsync for the batch)",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64),
            registry=r,
        )
        self.reinject_failures = Counter(
            "zivmilter_reinject_failures", "Re-injections the MTA did not take", registry=r
        )
        self.probes = Counter(
            "zivmilter_transport_probes", "Transport probes, by level found", ["level"], registry=r
        )
        self.answer_age = Histogram(
            "zivmilter_transport_answer_age_seconds",
            "Age of the cached probe result a decision used",
            buckets=_AGE_BUCKETS,
            registry=r,
        )
        self.verifications = Counter(
            "zivmilter_portal_verifications",
            "Answers to the portal's verification, by method and outcome",
            ["method", "outcome"],
            registry=r,
        )
        self.lockouts = Counter(
            "zivmilter_portal_lockouts", "Links locked after repeated wrong answers", registry=r
        )
        self.replies = Counter(
            "zivmilter_portal_replies",
            "Replies written in the portal, by what the MTA did with them",
            ["result"],
            registry=r,
        )


def enable() -> None:
    """Start counting (idempotent). Needs prometheus_client."""
    global _m
    if _m is None:
        _m = _Metrics()


def enabled() -> bool:
    return _m is not None


# --- hooks: one call each from the code they measure --------------------------------------------


def message(outcome: str, started: float) -> None:
    """A message's end of data is answered (`started`: time.monotonic() at its start)."""
    if _m is not None:
        _m.messages.labels(_bounded(outcome, OUTCOMES)).inc()
        _m.eom.observe(time.monotonic() - started)


def recipients(decided: Iterable[tuple[str, str, str]]) -> None:
    """(method, delivery, level) of each recipient of a secured message."""
    if _m is not None:
        for method, delivery, level in decided:
            _m.recipients.labels(
                _bounded(method, METHODS),
                _bounded(delivery, DELIVERIES),
                _bounded(level or "none", LEVELS),
            ).inc()


@contextmanager
def store_commit() -> Iterator[None]:
    if _m is None:
        yield
        return
    started = time.monotonic()
    try:
        yield
    finally:
        _m.store_commit.observe(time.monotonic() - started)


def store_batch(size: int) -> None:
    """A group commit of the store wrote `size` saves with one fsync."""
    if _m is not None:
        _m.store_batch.observe(size)


def reinject_failed() -> None:
    if _m is not None:
        _m.reinject_failures.inc()


def probe(level: str) -> None:
    if _m is not None:
        _m.probes.labels(_bounded(level, LEVELS)).inc()


def answer_age(seconds: float) -> None:
    if _m is not None:
        _m.answer_age.observe(max(0.0, seconds))


def verification(method: str, outcome: str) -> None:
    if _m is not None:
        _m.verifications.labels(
            _bounded(method, VERIFY_METHODS), _bounded(outcome, VERIFY_OUTCOMES)
        ).inc()


def lockout() -> None:
    if _m is not None:
        _m.lockouts.inc()


def reply(result: str) -> None:
    if _m is not None:
        _m.replies.labels(_bounded(result, REPLY_RESULTS)).inc()


# --- exposition ------------------------------------------------------------------------------


def exposition() -> tuple[bytes, str]:
    """(body, content type) of a scrape."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    enable()
    assert _m is not None
    return generate_latest(_m.registry), CONTENT_TYPE_LATEST


def serve(listen: str) -> None:
    """The milter's /metrics on `metrics.listen` (HOST:PORT), in a thread; "" = metrics off."""
    if not listen:
        return
    from prometheus_client import start_http_server

    enable()
    assert _m is not None
    host, _, port = listen.rpartition(":")
    start_http_server(int(port), addr=host.strip("[]"), registry=_m.registry)


Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[Mapping[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]


class PortalEndpoint:
    """The portal's /metrics as an ASGI app: the page for `Authorization: Bearer TOKEN`, 404
    for everyone else (recipients never learn it exists). No token configured: always 404, and
    the portal counts nothing. A class, not a function: Starlette mounts an instance as ASGI."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode() if token else None
        if token:
            enable()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        given = dict(scope.get("headers") or []).get(b"authorization", b"")
        if self._expected is not None and hmac.compare_digest(given, self._expected):
            status, (body, ctype) = 200, exposition()
        else:
            status, body, ctype = 404, b"Not Found", "text/plain; charset=utf-8"
        headers = [(b"content-type", ctype.encode()), (b"cache-control", b"no-store")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def portal_endpoint(token: str) -> PortalEndpoint:
    return PortalEndpoint(token)


def write_textfile(path: str, values: Mapping[str, float]) -> None:
    """A one-shot job's gauges (`zivmilter_maintenance_...`) for node_exporter's textfile
    collector, written atomically; "" = off."""
    if not path:
        return
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    registry = CollectorRegistry()
    last = Gauge(
        "zivmilter_maintenance_last_run_timestamp_seconds",
        "When zivmilter maintenance last finished",
        registry=registry,
    )
    last.set(time.time())
    items = Gauge(
        "zivmilter_maintenance_items",
        "What the last maintenance run did, by kind",
        ["kind"],
        registry=registry,
    )
    for kind, value in values.items():
        items.labels(kind).set(value)
    write_to_textfile(path, registry)  # a temporary file renamed into place
