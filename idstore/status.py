"""A running node's state as plain values: what it reports, separate from how it runs.

The node (idstore.node) produces these; the HTTP listener, the metrics renderer and the
CLI consume them, so none of those needs the Node class (and none imports it):

- NodeStatus is the ``/status`` document, with its one JSON schema (``to_json`` /
  ``from_json``): the server writes it, ``idstore whoami``, ``wait`` and ``env`` read it
  back. Its field names are a contract with users' scripts: never rename one.
- NodeReport is what ``/metrics`` renders: the counters of every part, read at one moment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class MemberInfo:
    """One claimed slot as the CLI and the launch renderers see it."""

    pool: str
    slot: int
    name: str  # absolute: "worker3.tf.local."
    addresses: tuple[str, ...] = ()
    node_id: str = ""
    # Published by the claim: name -> port (auto / range ports, fixed ones too). A claim
    # of the previous release may publish none, or its one port as "app".
    ports: Mapping[str, int] = field(default_factory=dict)

    @property
    def host(self) -> str:
        """The name as applications take it: no trailing dot."""
        return self.name.rstrip(".")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "pool": self.pool,
            "slot": self.slot,
            "name": self.name,
            "addresses": list(self.addresses),
            "node_id": self.node_id,
        }
        if self.ports:  # only then: a pool without ports keeps the document it had
            out["ports"] = dict(self.ports)
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> MemberInfo:
        return cls(
            pool=str(d["pool"]),
            slot=int(d["slot"]),
            name=str(d["name"]),
            addresses=tuple(str(a) for a in d.get("addresses", ())),
            node_id=str(d.get("node_id", "")),
            ports={str(k): int(v) for k, v in dict(d.get("ports") or {}).items()},
        )


@dataclass(frozen=True)
class NodeStatus:
    """This node and every claimed name of every pool: the ``/status`` document."""

    pool: str  # the pool this node joins
    slot: int | None  # None unless the slot is held under a surely-live session
    name: str | None
    addresses: tuple[str, ...]  # published for this node (held or not)
    node_id: str
    # held / waiting / lost / duplicate / starting / stopped (idstore.allocator.Status)
    state: str
    store: str  # connected / suspended / lost (idstore.backends.base.ConnectionState)
    backend: str
    cluster: Mapping[str, Sequence[MemberInfo]] = field(default_factory=dict)  # by slot
    ports: Mapping[str, int] = field(default_factory=dict)  # this node's, as claimed

    @property
    def me(self) -> MemberInfo | None:
        """This node's own claim, when it holds one."""
        if self.slot is None:
            return None
        return MemberInfo(
            self.pool, self.slot, self.name or "", self.addresses, self.node_id, self.ports
        )

    def to_json(self) -> dict[str, Any]:
        """The document served at /status (key order kept: people read it too)."""
        out: dict[str, Any] = {
            "pool": self.pool,
            "slot": self.slot,
            "name": self.name,
            "addresses": list(self.addresses),
            "node_id": self.node_id,
            "state": self.state,
            "store": self.store,
            "backend": self.backend,
            "cluster": {pool: [m.to_json() for m in ms] for pool, ms in self.cluster.items()},
        }
        if self.ports:  # as in MemberInfo.to_json: new keys only where there is something
            out["ports"] = dict(self.ports)
        return out

    @classmethod
    def from_json(cls, data: Any) -> NodeStatus:
        """Parse a /status document; ValueError when it is not one.

        Lenient about what a server of another version may leave out (everything but
        ``pool``, and ``slot``/``name`` together), strict about what it says."""
        try:
            if not isinstance(data, Mapping):
                raise TypeError("not a JSON object")
            slot = data.get("slot")
            cluster = data.get("cluster") or {}
            return cls(
                pool=str(data["pool"]),
                slot=None if slot is None else int(slot),
                name=None if slot is None else str(data["name"]),
                addresses=tuple(str(a) for a in data.get("addresses", ())),
                node_id=str(data.get("node_id", "")),
                state=str(data.get("state", "none")),
                store=str(data.get("store", "")),
                backend=str(data.get("backend", "")),
                cluster={
                    str(pool): tuple(MemberInfo.from_json(m) for m in members)
                    for pool, members in dict(cluster).items()
                },
                ports={str(k): int(v) for k, v in dict(data.get("ports") or {}).items()},
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not an idstore /status document ({type(e).__name__}: {e})") from e


Samples = tuple[list[tuple[float, int]], int, float]  # Prometheus histogram: buckets, n, sum


@dataclass(frozen=True)
class PoolUsage:
    name: str
    used: int  # claimed slots, as this node's view has them
    limit: int


@dataclass(frozen=True)
class NodeReport:
    """Every figure /metrics renders, read at one moment (cheap: copies of counters)."""

    started_at: float  # Unix time the process started
    pool: str
    slot: int | None  # the allocator's claim as it stands (not session-checked)
    allocation: str  # idstore.allocator.Status value
    claim_attempts: int
    pools: tuple[PoolUsage, ...]
    backend: str
    store_state: str  # idstore.backends.base.ConnectionState value
    store_ops: int
    # None where the backend does not count them (rather than a zero that would read
    # as "no renewals happened")
    renewals: float | None
    renewal_failures: float | None
    state_changes: Mapping[str, float]  # connection state entered -> times
    mirror_resyncs: int
    dns: Mapping[str, Any]  # idstore.dns.stats.DnsStats.snapshot()
    dns_durations: Samples
