"""A store member cut off from its peers but still reachable by the nodes.

Three members, each on its own network-namespace host; three ``idstore serve`` nodes on
the machine itself reach every member over the lab's bridge. The member most nodes are
connected to loses its routes to the other two members (blackhole routes inside its
namespace) for three TTLs, while the nodes still reach it. Then the test claims a slot
through another member (a newcomer joining through the majority).

Outcomes asserted: no node logs LOST and none claims again (each keeps its claim, same
version, throughout); every node answers the newcomer's name while the member is still
cut off (its watch left that member); no violation sampled. etcd: idstore sends
``hasleader`` with every request and stream (the Go client's WithRequireLeader), so the
leaderless member refuses them at once, and a renewal's deadline is a quarter of the
TTL. The figures (when each node saw the newcomer) go to the run's summary.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from idstore.backends.base import SlotRecord, SlotStore
from tests.faults.conftest import TTL, FaultCluster, claims_in_log, name_of, report
from tests.harness.netns import NetnsLab
from tests.harness.nodes import addresses_of, wait_for
from tests.harness.ns_cluster import NsCluster
from tests.harness.sampler import observer_store

pytestmark = pytest.mark.faults

NEWCOMER_SLOT = 7
NEWCOMER_ADDRESS = "192.0.2.77"


@pytest.fixture
def cut_lab() -> Iterator[NetnsLab]:
    with NetnsLab(3) as lab:
        yield lab


def member_of(pid: int, store: NsCluster) -> int | None:
    """The member ``pid`` is connected to (each listens on the same port of its own
    host, so they are told apart by address)."""
    inodes = _socket_inodes(pid)
    remote: set[str] = set()
    for table in ("tcp", "tcp6"):  # gRPC's sockets are dual-stack: IPv4-mapped in tcp6
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for f in (x.split() for x in lines):
            if f[3] == "01" and f[9] in inodes:
                remote.add(f[2].split(":")[0][-8:])
    for k, ep in enumerate(store.endpoints):
        host = ep.split("//")[-1].rsplit(":", 1)[0]
        if "".join(f"{int(x):02X}" for x in reversed(host.split("."))) in remote:
            return k
    return None


def _socket_inodes(pid: int) -> set[str]:
    out: set[str] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


def test_member_cut_from_its_peers_costs_no_slot_and_no_news(
    backend: str, cut_lab: NetnsLab, tmp_path: Path
) -> None:
    with NsCluster(backend, cut_lab) as store:
        # etcd starts on the first endpoint: name the member to cut first for every node.
        c = FaultCluster(backend, store.endpoints, tmp_path)
        # The default request_timeout (5 s), longer than the TTL: the setting in which a
        # renewal sent to the cut-off member used to wait out the whole lease.
        c.config.write_text(c.config.read_text().replace("request_timeout = 1", ""))
        try:
            nodes = [c.node(f"n{i}", f"192.0.2.{i + 1}") for i in range(3)]
            for n in nodes:
                n.wait_claimed(60)
            c.wait_converged(30)
            on = {n.name: member_of(n.proc.pid, store) for n in nodes if n.proc}
            target = Counter(k for k in on.values() if k is not None).most_common(1)[0][0]
            if backend == "etcd":
                # The measured case: a follower cut off (cutting the leader adds an
                # election on the majority's side, which no client can shorten).
                store.etcd_lead_elsewhere(target)
            held = {n.name: claims_in_log(n) for n in nodes}
            with c.sampler() as s:
                time.sleep(0.5)
                t_cut = time.monotonic()
                store.isolate_peers(target)
                time.sleep(0.5)
                newcomer = _majority_store(backend, store, target, c.cluster_name)
                try:
                    t_claim = time.monotonic()
                    newcomer.claim(
                        "worker", NEWCOMER_SLOT, SlotRecord("newcomer", "x", (NEWCOMER_ADDRESS,))
                    )
                    seen: dict[str, float] = {}
                    t_limit = t_cut + 3 * TTL

                    def everyone_sees() -> bool:
                        for n in nodes:
                            if n.name not in seen and NEWCOMER_ADDRESS in addresses_of(
                                n.port, name_of(NEWCOMER_SLOT)
                            ):
                                seen[n.name] = time.monotonic() - t_claim
                        return len(seen) == len(nodes) or time.monotonic() > t_limit

                    wait_for(everyone_sees, 4 * TTL, "the newcomer's name on every node", 0.05)
                    # Keep it cut off past the TTL: renewals must get through meanwhile.
                    time.sleep(max(0.0, t_cut + 2 * TTL - time.monotonic()))
                    t_heal = time.monotonic()
                    store.heal_peers(target)
                    time.sleep(TTL)
                finally:
                    newcomer.close(release=True)
            s.analyse()
            lost = {n.name: c.marks.first(n, "LOST") for n in nodes}
            after = {n.name: claims_in_log(n) for n in nodes}
            report(
                backend,
                "7 member cut from its peers",
                f"member {target} (nodes on it: {[k for k, v in on.items() if v == target]}) "
                f"cut from its peers at 0 for {t_heal - t_cut:.1f}s, clients still reach it; "
                f"newcomer claimed through the majority at {t_claim - t_cut:.1f}s, seen by "
                + ", ".join(f"{k} +{v:.2f}s" for k, v in sorted(seen.items()))
                + f"; LOST logged: {[k for k, v in lost.items() if v]}; "
                f"{s.samples} samples, {len(s.violations)} violations",
            )
        finally:
            c.close()
    assert s.violations == [], "\n".join(s.violations[:20])
    assert all(v is None for v in lost.values()), f"LOST while a member was cut off: {lost}"
    assert after == held, f"a node claimed again: before {held}, after {after}"
    assert sorted(seen) == sorted(n.name for n in nodes), (
        f"the newcomer's claim never reached {sorted(set(on) - set(seen))} while the member "
        f"was cut off"
    )


def _majority_store(backend: str, store: NsCluster, cut: int, cluster: str) -> SlotStore:
    others = tuple(ep for k, ep in enumerate(store.endpoints) if k != cut)
    return observer_store(backend, others, cluster, TTL)
