"""Prometheus text exposition (format 0.0.4) of a running node, with the stdlib only.

The counters live where the work happens (``Zone.stats``, the allocator, the store); when
``/metrics`` is scraped the node copies them into one idstore.status.NodeReport and this
module renders that, so the hot path pays nothing for metrics except timing one DNS
answer in N (idstore.dns.stats). This module never sees the Node itself.

Metric names (all prefixed ``idstore_``; counters end in ``_total``, times are seconds):

=========================================  =========  ==================================
name                                       type       labels
=========================================  =========  ==================================
idstore_build_info                         gauge      version, python
idstore_start_time_seconds                 gauge
idstore_dns_requests_total                 counter    proto (udp/tcp), type (A, AAAA ...)
idstore_dns_responses_total                counter    rcode (NOERROR, NXDOMAIN ...)
idstore_dns_request_duration_seconds       histogram  (time to build the answer)
idstore_dns_dropped_total                  counter
idstore_dns_rate_limited_total             counter
idstore_dns_forwarded_total                counter
idstore_dns_forward_failures_total         counter
idstore_slot_held                          gauge      pool (1 while this node holds a slot)
idstore_slot_number                        gauge      pool (-1 while none is held)
idstore_slot_state                         gauge      pool, state (1 for the current one)
idstore_claim_attempts_total               counter    pool
idstore_pool_slots_used                    gauge      pool
idstore_pool_slots_limit                   gauge      pool
idstore_store_connected                    gauge      backend
idstore_store_state                        gauge      backend, state (1 for the current)
idstore_store_state_changes_total          counter    backend, state (entered)
idstore_store_operations_total             counter    backend
idstore_store_session_renewals_total       counter    backend (when the backend counts)
idstore_store_session_renewal_failures_total counter  backend (when the backend counts)
idstore_mirror_resyncs_total               counter
=========================================  =========  ==================================
"""

from __future__ import annotations

import math
import platform
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from idstore.allocator import Status
from idstore.backends.base import ConnectionState
from idstore.status import NodeReport, Samples

Labels = Mapping[str, str]


class Counters:
    """Thread-safe named counters with labels, for events idstore itself observes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def inc(self, name: str, labels: Labels | None = None, by: float = 1.0) -> None:
        key = (name, tuple(sorted((labels or {}).items())))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + by

    def items(self, name: str) -> list[tuple[dict[str, str], float]]:
        with self._lock:
            return [(dict(lbl), v) for (n, lbl), v in self._values.items() if n == name]


@dataclass
class Family:
    name: str
    type: str  # counter, gauge, histogram
    help: str
    samples: list[tuple[str, Labels, float]] = field(default_factory=list)

    def add(self, value: float, labels: Labels | None = None, suffix: str = "") -> Family:
        self.samples.append((self.name + suffix, dict(labels or {}), value))
        return self


def histogram_family(name: str, help: str, samples: Samples) -> Family:
    """A histogram from its cumulative buckets (``le`` ascending, +Inf last), count, sum."""
    fam = Family(name, "histogram", help)
    buckets, count, total = samples
    for le, n in buckets:
        fam.add(n, {"le": _float(le)}, "_bucket")
    fam.add(count, suffix="_count")
    fam.add(total, suffix="_sum")
    return fam


def build_info(version: str) -> Family:
    return Family("idstore_build_info", "gauge", "Version of idstore and of Python; always 1.").add(
        1, {"version": version, "python": platform.python_version()}
    )


# --------------------------------------------------------------------------- rendering


def render(families: Iterable[Family]) -> str:
    lines: list[str] = []
    for fam in families:
        lines.append(f"# HELP {fam.name} {_escape_help(fam.help)}")
        lines.append(f"# TYPE {fam.name} {fam.type}")
        for name, labels, value in fam.samples:
            lines.append(f"{name}{_labels(labels)} {_float(value)}")
    return "\n".join(lines) + "\n"


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape_value(v)}"' for k, v in labels.items())
    return "{" + inner + "}"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _float(x: float) -> str:
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if math.isnan(x):
        return "NaN"
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    return repr(float(x))


# --------------------------------------------------------------------------- a node


def collect(report: NodeReport) -> list[Family]:
    """Every family of a running node, from one report (idstore.node.Node.report)."""
    from idstore import __version__

    return [
        build_info(__version__),
        Family("idstore_start_time_seconds", "gauge", "Start time of the process (Unix).").add(
            report.started_at
        ),
        *_dns_families(report),
        *_slot_families(report),
        *_store_families(report),
    ]


def _dns_families(report: NodeReport) -> list[Family]:
    snap = report.dns
    requests = Family(
        "idstore_dns_requests_total", "counter", "DNS requests by transport and query type."
    )
    for proto, by_type in sorted(snap["requests"].items()):
        for qtype, n in sorted(by_type.items()):
            requests.add(n, {"proto": proto, "type": qtype})
    responses = Family("idstore_dns_responses_total", "counter", "DNS responses by rcode.")
    for rcode, n in sorted(snap["responses"].items()):
        responses.add(n, {"rcode": rcode})
    simple = [
        ("dropped", "Malformed packets and responses never answered."),
        ("rate_limited", "Answers dropped or truncated by response-rate limiting."),
        ("forwarded", "Out-of-zone queries answered by an upstream resolver."),
        ("forward_failures", "Out-of-zone queries no upstream answered (SERVFAIL)."),
    ]
    return [
        requests,
        responses,
        histogram_family(
            "idstore_dns_request_duration_seconds",
            "Time to build each DNS answer (forwarded queries: until handed upstream).",
            report.dns_durations,
        ),
        *(
            Family(f"idstore_dns_{key}_total", "counter", text).add(snap[key])
            for key, text in simple
        ),
    ]


def _slot_families(report: NodeReport) -> list[Family]:
    pool = {"pool": report.pool}
    state = Family(
        "idstore_slot_state", "gauge", "This node's claim state (1 for the current state)."
    )
    for s in Status:
        state.add(1 if s.value == report.allocation else 0, {**pool, "state": s.value})
    used = Family("idstore_pool_slots_used", "gauge", "Claimed slots per pool (this view).")
    limit = Family("idstore_pool_slots_limit", "gauge", "Number of slots per pool.")
    for p in report.pools:
        used.add(p.used, {"pool": p.name})
        limit.add(p.limit, {"pool": p.name})
    return [
        Family("idstore_slot_held", "gauge", "1 while this node holds a slot of its pool.").add(
            1 if report.slot is not None else 0, pool
        ),
        Family("idstore_slot_number", "gauge", "The slot this node holds; -1 if none.").add(
            report.slot if report.slot is not None else -1, pool
        ),
        state,
        Family("idstore_claim_attempts_total", "counter", "Claim and re-claim requests sent.").add(
            report.claim_attempts, pool
        ),
        used,
        limit,
    ]


def _store_families(report: NodeReport) -> list[Family]:
    backend = {"backend": report.backend}
    current = report.store_state
    state = Family("idstore_store_state", "gauge", "Store connection state (1 for the current).")
    changes = Family(
        "idstore_store_state_changes_total", "counter", "Store connection states entered."
    )
    for s in ConnectionState:
        state.add(1 if s.value == current else 0, {**backend, "state": s.value})
        changes.add(report.state_changes.get(s.value, 0), {**backend, "state": s.value})
    out = [
        Family("idstore_store_connected", "gauge", "1 while the store session is CONNECTED.").add(
            1 if current == ConnectionState.CONNECTED.value else 0, backend
        ),
        state,
        changes,
        Family(
            "idstore_store_operations_total", "counter", "SlotStore operations (claim, list ...)."
        ).add(report.store_ops, backend),
        Family("idstore_mirror_resyncs_total", "counter", "Full re-lists of the pools.").add(
            report.mirror_resyncs
        ),
    ]
    for value, name, text in (
        (report.renewals, "idstore_store_session_renewals_total", "Lease/session renewals sent."),
        (
            report.renewal_failures,
            "idstore_store_session_renewal_failures_total",
            "Lease/session renewals that failed.",
        ),
    ):
        if value is not None:
            out.append(Family(name, "counter", text).add(value, backend))
    return out
