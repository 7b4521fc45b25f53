"""Replicated stores for tests: one interface over a 3-member etcd cluster and a
3-server ZooKeeper ensemble, and "which member is this process connected to".

``ReplicatedStore`` wraps ``EtcdCluster`` / ``ZooKeeperEnsemble`` (their own API stays
as it is) so a scenario can be written once for both backends: ``kill(i)``, ``stop(i)``,
``start(i)`` (waits until the member serves again, i.e. rejoined a quorum), ``leader()``.

``connected_members(pid, store)`` reads the kernel's socket table: the members whose
client port the process ``pid`` holds an ESTABLISHED TCP connection to. It works for
any client (gRPC channel, kazoo socket) without asking the client, so it can observe a
separate ``idstore serve`` process. Linux only (``/proc``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

from tests.harness.etcd_server import EtcdCluster, etcdctl
from tests.harness.zk_server import ZooKeeperEnsemble

_ESTABLISHED = "01"


def established_peers(pid: int) -> set[tuple[int, int]]:
    """(local port, remote port) of every ESTABLISHED TCP socket ``pid`` owns."""
    inodes: set[str] = set()
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return set()
    for fd in fds:
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    peers: set[tuple[int, int]] = set()
    for table in (f"/proc/{pid}/net/tcp", f"/proc/{pid}/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _ESTABLISHED or fields[9] not in inodes:
                continue
            local = int(fields[1].rsplit(":", 1)[1], 16)
            remote = int(fields[2].rsplit(":", 1)[1], 16)
            peers.add((local, remote))
    return peers


class ReplicatedStore:
    """A 3-member etcd cluster or ZooKeeper ensemble behind one interface."""

    def __init__(self, backend: str, server: EtcdCluster | ZooKeeperEnsemble) -> None:
        self.backend = backend
        self.server = server

    @property
    def size(self) -> int:
        return len(self.server.members)

    @property
    def endpoints(self) -> tuple[str, ...]:
        return tuple(self.server.endpoints)

    def client_port(self, i: int) -> int:
        m: Any = self.server.members[i]
        return int(m.client_port if isinstance(self.server, EtcdCluster) else m.ports.client)

    def running(self, i: int) -> bool:
        m: Any = self.server.members[i]
        return bool(m.running() if isinstance(self.server, EtcdCluster) else m.running)

    def kill(self, i: int) -> None:
        """SIGKILL member ``i`` (power cut)."""
        self.server.kill(i)

    def stop(self, i: int) -> None:
        """SIGTERM member ``i`` (clean shutdown)."""
        self.server.stop(i)

    def start(self, i: int | None = None) -> None:
        """Start member ``i`` (or every stopped one); return once it serves again."""
        self.server.start(i)

    def ensure_all_running(self) -> None:
        """Bring back whatever an earlier test left stopped (a shared fixture)."""
        if any(not self.running(i) for i in range(self.size)):
            self.start(None)

    def leader(self) -> int:
        return self.server.leader()

    def move_leader(self, to: int) -> bool:
        """Hand leadership to member ``to`` (etcd ``move-leader``); False where the store
        cannot be told (ZooKeeper elects by itself)."""
        if not isinstance(self.server, EtcdCluster):
            return False
        statuses = json.loads(self.server.ctl("endpoint", "status", "-w", "json"))
        ids = {st["Endpoint"]: int(st["Status"]["header"]["member_id"]) for st in statuses}
        target = ids[self.server.members[to].client_url]
        leader_url = self.server.members[self.leader()].client_url
        etcdctl([leader_url], "move-leader", f"{target:x}", tls=self.server.tls)
        return True

    def sessions_on(self, i: int) -> set[str] | None:
        """ZooKeeper: the sessions (hex) connected to member ``i`` per its ``cons``; None
        for etcd, whose members do not list their clients."""
        if isinstance(self.server, ZooKeeperEnsemble):
            return self.server.sessions(i)
        return None

    def members_of_ports(self, ports: Iterable[int]) -> set[int]:
        by_port = {self.client_port(i): i for i in range(self.size)}
        return {by_port[p] for p in ports if p in by_port}

    def connected_members(self, pid: int, exclude_local: Iterable[int] = ()) -> set[int]:
        """Running members ``pid`` holds an established connection to (its own listening
        ports ``exclude_local`` excluded, so an accepted connection never counts)."""
        skip = set(exclude_local)
        remote = {r for (loc, r) in established_peers(pid) if loc not in skip}
        return {i for i in self.members_of_ports(remote) if self.running(i)}


# -- the closing note: figures measured by replicated-store scenarios ------------------------

SUMMARY: list[str] = []


def report(backend: str, scenario: str, text: str) -> None:
    """A measured figure for the closing note (printed at the end of the run)."""
    line = f"[{scenario} / {backend}] {text}"
    SUMMARY.append(line)
    print(line)
