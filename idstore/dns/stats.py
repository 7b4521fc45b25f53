"""Request and response counters of the DNS frontend, cheap enough for the hot path.

Plain dicts incremented from the event loop thread; readers (a metrics endpoint) take a
``snapshot()``, which copies them. Labels follow CoreDNS's metric names so dashboards
carry over: requests by (proto, type), responses by rcode.

Answers replayed from the whole-reply cache (the common UDP case) are counted once each,
in ``cached`` under one small int (``cached_code(qtype, rcode)``), instead of twice under
tuple keys; ``snapshot()`` folds them into the requests and responses it reports.

``durations`` is the request-duration histogram (``idstore_dns_request_duration_seconds``):
the time from a query's bytes to its reply's bytes, recorded by the server for one answer
in ``durations.every`` (see DurationHistogram).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from typing import Any

from idstore.dns.wire import RCODE_NAMES, TYPE_NAMES

# Upper bounds in seconds. Answers come from memory in microseconds; CoreDNS's buckets
# start at 250 us, which would put every answer in the first bucket. These resolve the
# fast path and still show a slow host (or a stalled loop) up to a second.
DURATION_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)  # fmt: skip
DURATION_EVERY = 8  # time one answer in this many (see DurationHistogram)


def cached_code(qtype: int, rcode: int) -> int:
    """The ``DnsStats.cached`` key of a UDP answer of ``qtype`` with ``rcode``."""
    return (qtype << 12) | (rcode & 0xFFF)


class DurationHistogram:
    """Histogram of answer durations, observed in integer nanoseconds from one thread.

    Timing costs two clock reads and a bucket search per answer, a few percent of the
    cached UDP path; so the server times one answer in ``every`` (1 = all) and each
    observation stands for ``every`` answers: bucket counts, count and sum are estimates
    scaled by ``every`` (exact when every = 1). ``samples()`` has the shape
    ``idstore.metrics.histogram_family`` renders.
    """

    def __init__(self, buckets: tuple[float, ...] = DURATION_BUCKETS, every: int = 1) -> None:
        if every < 1:
            raise ValueError("every must be at least 1")
        self.buckets = tuple(buckets)
        self.every = every
        self.bounds_ns = tuple(round(b * 1e9) for b in self.buckets)
        self.counts = [0] * (len(self.buckets) + 1)  # the last one is +Inf
        self.sum_ns = 0

    def observe_ns(self, ns: int) -> None:
        """Record one timed answer that took ``ns`` nanoseconds."""
        self.counts[bisect_left(self.bounds_ns, ns)] += 1
        self.sum_ns += ns

    def samples(self) -> tuple[list[tuple[float, int]], int, float]:
        """(le seconds, cumulative count) per bucket incl. +Inf, the count, the sum (s)."""
        scale = self.every
        counts, total = list(self.counts), 0
        out = []
        for le, n in zip((*self.buckets, math.inf), counts, strict=True):
            total += n * scale
            out.append((le, total))
        return out, total, self.sum_ns * scale / 1e9


class DnsStats:
    def __init__(self, duration_every: int = DURATION_EVERY) -> None:
        self.requests: dict[tuple[str, int], int] = {}  # (proto, qtype) -> count
        self.responses: dict[int, int] = {}  # rcode -> count
        self.cached: dict[int, int] = {}  # cached_code(qtype, rcode) -> UDP replays
        self.dropped = 0  # malformed packets and responses (QR=1) we never answer
        self.rate_limited = 0  # answers dropped or slipped (TC=1) by response-rate limiting
        self.forwarded = 0
        self.forward_failures = 0
        self.durations = DurationHistogram(every=duration_every)

    def snapshot(self) -> dict[str, Any]:
        """Counters with readable labels, e.g. ``requests["udp"]["A"]``."""
        requests: dict[str, dict[str, int]] = {}
        responses: dict[str, int] = {}

        def add(proto: str, qtype: int, n: int) -> None:
            by_type = requests.setdefault(proto, {})
            name = TYPE_NAMES.get(qtype, f"TYPE{qtype}")
            by_type[name] = by_type.get(name, 0) + n

        def add_rcode(rcode: int, n: int) -> None:
            name = RCODE_NAMES.get(rcode, str(rcode))
            responses[name] = responses.get(name, 0) + n

        for (proto, qtype), n in list(self.requests.items()):
            add(proto, qtype, n)
        for rcode, n in list(self.responses.items()):
            add_rcode(rcode, n)
        for code, n in list(self.cached.items()):
            add("udp", code >> 12, n)
            add_rcode(code & 0xFFF, n)
        return {
            "requests": requests,
            "responses": responses,
            "dropped": self.dropped,
            "rate_limited": self.rate_limited,
            "forwarded": self.forwarded,
            "forward_failures": self.forward_failures,
        }
