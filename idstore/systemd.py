"""sd_notify without a dependency: one datagram to ``$NOTIFY_SOCKET``.

The protocol (sd_notify(3)) is newline-separated ``KEY=VALUE`` fields in a single datagram
on an AF_UNIX socket; a leading ``@`` names an abstract socket. Outside systemd the
variable is unset and every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

log = logging.getLogger(__name__)


def notify(*fields: str, environ: dict[str, str] | None = None) -> bool:
    """Send ``fields`` (e.g. ``"READY=1"``); False when not under systemd or on error."""
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        log.debug("NOTIFY_SOCKET %r is not a unix socket path; not notifying", address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(address)
            s.sendall("\n".join(fields).encode())
    except OSError as e:
        # Losing a status update must never affect the node; systemd times out instead.
        log.debug("sd_notify %s failed: %s", fields, e)
        return False
    return True


class Notifier:
    """READY=1 exactly once, STATUS= on every change, STOPPING=1 at shutdown."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready = False
        self._status = ""

    @property
    def is_ready(self) -> bool:
        return self._ready

    def ready(self, status: str) -> None:
        with self._lock:
            first = not self._ready
            self._ready = True
            self._status = status
        if first:
            notify("READY=1", f"STATUS={status}")
        else:
            notify(f"STATUS={status}")

    def status(self, status: str) -> None:
        with self._lock:
            if status == self._status:
                return
            self._status = status
        notify(f"STATUS={status}")

    def reloading(self) -> None:
        if self._ready:  # while still starting, systemd has no reload to track
            notify("RELOADING=1")

    def reloaded(self) -> None:
        # READY=1 ends the reload for systemd; before the first claim it would also end
        # start-up early, so a node still waiting for a slot sends only its status.
        if self._ready:
            notify("READY=1", f"STATUS={self._status}")
        else:
            notify(f"STATUS={self._status or 'starting'}")

    def stopping(self) -> None:
        notify("STOPPING=1", "STATUS=releasing the slot and stopping")
