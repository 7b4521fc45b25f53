"""Response-rate limiting per client prefix (/24 for IPv4, /56 for IPv6).

UDP source addresses can be forged, so an authoritative server can be made to send its
answers at a victim. Counting answers per prefix per second and dropping beyond the
limit caps that; every other limited answer is "slipped" as a tiny TC=1 reply so a real
client behind a busy prefix can still retry over TCP (as BIND's and NSD's RRL do).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable

ALLOW = 0
SLIP = 1
DROP = 2

_MAX_TRACKED = 100_000  # prefixes remembered; beyond this the table starts afresh


class RateLimiter:
    def __init__(self, per_second: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_second = per_second
        self._clock = clock
        self._windows: dict[str, list[int]] = {}  # prefix -> [second, answers in it]

    def check(self, host: str) -> int:
        """ALLOW, SLIP (answer with TC=1 only) or DROP an answer to ``host``."""
        prefix = _prefix(host)
        now = int(self._clock())
        window = self._windows.get(prefix)
        if window is None or window[0] != now:
            if len(self._windows) >= _MAX_TRACKED:
                self._windows.clear()
            self._windows[prefix] = [now, 1]
            return ALLOW
        window[1] += 1
        over = window[1] - self.per_second
        if over <= 0:
            return ALLOW
        return SLIP if over % 2 else DROP


def _prefix(host: str) -> str:
    if ":" not in host:
        return host.rsplit(".", 1)[0]
    try:
        net = ipaddress.IPv6Network((host.split("%", 1)[0], 56), strict=False)
    except ValueError:
        return host
    return str(net.network_address)
