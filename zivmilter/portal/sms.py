"""Sending SMS one-time codes through a provider adapter (`sms.*` in the config).

`webhook`: a generic HTTP POST of a JSON body rendered from the configured template, with an
optional auth header, for any SMS provider with a JSON API; `file`: one line per message appended
to a file, for development and tests. Failure is a DeliveryError; the portal tells the visitor.
"""

from __future__ import annotations

import fcntl
import json
import os
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Protocol

import jinja2

from zivmilter.core.config import SmsConfig, SmsWebhookConfig
from zivmilter.errors import ConfigError, DeliveryError


class SmsSender(Protocol):
    def send(self, phone: str, text: str) -> None: ...


class FileSms:
    """Appends `<ISO time>\t<phone>\t<text>` lines; the text's line breaks become spaces."""

    def __init__(self, path: str) -> None:
        self.path = path

    def send(self, phone: str, text: str) -> None:
        line = f"{datetime.now(UTC).isoformat()}\t{phone}\t{' '.join(text.split())}\n"
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as fh:
                # Several portal workers append: one lock per line keeps lines whole.
                fcntl.flock(fh, fcntl.LOCK_EX)
                fh.write(line)
        except OSError as exc:
            raise DeliveryError(f"sms file {self.path}: {exc.strerror or exc}") from None


class WebhookSms:
    """POSTs the configured JSON body (a Jinja2 template) to the provider's URL."""

    def __init__(self, cfg: SmsWebhookConfig, source: str = "<config>") -> None:
        if not cfg.url.startswith(("https://", "http://")):
            raise ConfigError(source, "sms.webhook.url", "an http(s) URL is required")
        self.url = cfg.url
        self.timeout = cfg.timeout
        self.header: tuple[str, str] | None = None
        if cfg.auth_header:
            name, sep, value = cfg.auth_header.partition(":")
            if not sep or not name.strip():
                raise ConfigError(source, "sms.webhook.auth_header", "expected 'Name: value'")
            self.header = (name.strip(), value.strip())
        try:
            self.template = jinja2.Environment(autoescape=False).from_string(cfg.body)
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigError(source, "sms.webhook.body", f"template error: {exc}") from None

    def body(self, phone: str, text: str) -> bytes:
        # Values go in JSON-encoded (quotes included), so a template cannot be broken by them.
        rendered = self.template.render(phone=json.dumps(phone), text=json.dumps(text))
        try:
            json.loads(rendered)
        except ValueError as exc:
            raise DeliveryError(f"sms.webhook.body does not render to JSON: {exc}") from None
        return rendered.encode("utf-8")

    def send(self, phone: str, text: str) -> None:
        request = urllib.request.Request(self.url, data=self.body(phone, text), method="POST")
        request.add_header("Content-Type", "application/json")
        if self.header is not None:
            request.add_header(*self.header)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            raise DeliveryError(f"sms webhook answered {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise DeliveryError(f"sms webhook unreachable: {exc}") from None
        if not 200 <= status < 300:
            raise DeliveryError(f"sms webhook answered {status}")


def sms_sender(cfg: SmsConfig, source: str = "<config>") -> SmsSender:
    if cfg.backend == "webhook":
        return WebhookSms(cfg.webhook, source)
    return FileSms(cfg.file)
