"""Request and response counters of the DNS frontend, cheap enough for the hot path.

Plain dicts incremented from the event loop thread; readers (a metrics endpoint) take a
``snapshot()``, which copies them. Labels follow CoreDNS's metric names so dashboards
carry over: requests by (proto, type), responses by rcode.
"""

from __future__ import annotations

from typing import Any

from idstore.dns.wire import RCODE_NAMES, TYPE_NAMES


class DnsStats:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}  # (proto, qtype) -> count
        self.responses: dict[int, int] = {}  # rcode -> count
        self.dropped = 0  # malformed packets and responses (QR=1) we never answer
        self.rate_limited = 0  # answers dropped or slipped (TC=1) by response-rate limiting
        self.forwarded = 0
        self.forward_failures = 0

    def snapshot(self) -> dict[str, Any]:
        """Counters with readable labels, e.g. ``requests["udp"]["A"]``."""
        requests: dict[str, dict[str, int]] = {}
        for (proto, qtype), n in list(self.requests.items()):
            by_type = requests.setdefault(proto, {})
            name = TYPE_NAMES.get(qtype, f"TYPE{qtype}")
            by_type[name] = by_type.get(name, 0) + n
        return {
            "requests": requests,
            "responses": {RCODE_NAMES.get(r, str(r)): n for r, n in list(self.responses.items())},
            "dropped": self.dropped,
            "rate_limited": self.rate_limited,
            "forwarded": self.forwarded,
            "forward_failures": self.forward_failures,
        }
