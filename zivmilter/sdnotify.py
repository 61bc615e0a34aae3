"""systemd's readiness protocol (sd_notify) without a dependency: one datagram to $NOTIFY_SOCKET.

`zivmilter run` calls notify("READY=1") once the milter socket listens, which is what
systemd/zivmilter.service (Type=notify) waits for; outside systemd it is a harmless no-op.
"""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    """Send `state` (e.g. "READY=1", "STOPPING=1"); False when not under systemd or on failure.

    Failure is a value, not an exception: a service must not die because its supervisor's
    socket went away.
    """
    address = os.environ.get("NOTIFY_SOCKET")
    if not address or not address.startswith(("/", "@")):
        return False  # unset, or a kind we do not speak (vsock:...)
    if address.startswith("@"):
        address = "\0" + address[1:]  # Linux abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError:
        return False
    return True
