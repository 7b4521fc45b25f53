"""3-member etcd clusters and ZooKeeper ensembles with every member on its own lab host.

Each member runs inside one network namespace of a ``NetnsLab`` and listens (clients and
peers) on that host's own address, so every fault a real cluster sees can be made with
routing alone: ``lab.link_down(i)`` cuts a member off from everyone, ``isolate_peers(i)``
cuts it off from the other members only (blackhole routes, both ways) while
clients still reach it, and ``kill(i)`` / ``start(i)`` power-cycle it on its data dir.

The process objects are the harness's own (``EtcdMember``, ``zk_server._Member``), with
their addresses moved onto the lab host and their commands prefixed by ``ip netns exec``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from tests.harness import zk_server
from tests.harness.etcd_server import EtcdMember, etcdctl
from tests.harness.lifecycle import StartedInBlock
from tests.harness.netns import NetnsLab, ip
from tests.harness.zk_server import Ports

ETCD_CLIENT, ETCD_PEER = 2379, 2380
ZK_CLIENT, ZK_PEER, ZK_ELECTION = 2181, 2888, 3888
ZK_TICK_MS = 500


class _NsEtcdMember(EtcdMember):
    def __init__(self, name: str, workdir: Path, lab: NetnsLab, index: int) -> None:
        # Pre-vote (etcd 3.5's default, off in 3.4): a member that was cut off does not
        # depose the majority's leader with its inflated term when it comes back, which
        # would leave the whole cluster without a leader for an election.
        super().__init__(name, workdir, extra_args=["--pre-vote=true"])
        self.lab, self.index, self.host = lab, index, lab.hosts[index].address
        self.client_port, self.peer_port = ETCD_CLIENT, ETCD_PEER

    @property
    def client_url(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    def command(self, initial_cluster: str, token: str) -> list[str]:
        return [*self.lab.exec_prefix(self.index), *super().command(initial_cluster, token)]


class _NsZkMember(zk_server._Member):
    def __init__(self, workdir: Path, lab: NetnsLab, index: int, sid: int, peers: Sequence[str]):
        self.lab, self.index, self.host = lab, index, lab.hosts[index].address
        self.peer_hosts = tuple(peers)
        super().__init__(workdir, Ports(ZK_CLIENT), ZK_TICK_MS, server_id=sid)

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{ZK_CLIENT}"

    def _write_config(self) -> None:
        super()._write_config()
        data = self.dir / "data"
        (data / "myid").write_text(f"{self.server_id}\n")
        cfg = self.dir / "zoo.cfg"
        text = cfg.read_text().replace(
            f"clientPortAddress={zk_server.LOOPBACK}", f"clientPortAddress={self.host}"
        )
        text += "".join(
            f"server.{sid}={h}:{ZK_PEER}:{ZK_ELECTION}\n"
            for sid, h in enumerate(self.peer_hosts, 1)
        )
        cfg.write_text(text)

    def start(self) -> None:
        if self.running:
            return
        cmd = [
            *self.lab.exec_prefix(self.index),
            zk_server.JAVA,
            "-Xmx256m",
            "-XX:+UseSerialGC",
            f"-Dlog4j.configuration=file:{self.dir / 'log4j.properties'}",
            "-Dzookeeper.jmx.log4j.disable=true",
            "-cp",
            zk_server.classpath(),
            zk_server.MAIN_CLASS,
            str(self.dir / "zoo.cfg"),
        ]
        with open(self.out_path, "ab") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def serving(self) -> bool:
        try:
            with socket.create_connection((self.host, ZK_CLIENT), timeout=1.0) as s:
                s.sendall(b"srvr")
                reply = b"".join(iter(lambda: s.recv(4096), b""))
        except OSError:
            return False
        return b"Mode: " in reply


class NsCluster(StartedInBlock):
    """A 3-member store of ``backend`` on lab hosts ``hosts``; a context manager."""

    def __init__(self, backend: str, lab: NetnsLab, hosts: Sequence[int] = (0, 1, 2)) -> None:
        self.backend = backend
        self.lab = lab
        self.hosts = tuple(hosts)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"idstore-ns-{backend}-"))
        self.token = f"ns-{uuid.uuid4().hex[:8]}"
        addrs = [lab.hosts[i].address for i in self.hosts]
        self._etcd: list[_NsEtcdMember] = []
        self._zk: list[_NsZkMember] = []
        if backend == "etcd":
            self._etcd = [
                _NsEtcdMember(f"m{k}", self.workdir, lab, i) for k, i in enumerate(self.hosts)
            ]
        else:
            for k, i in enumerate(self.hosts):
                d = self.workdir / f"zk{k}"
                d.mkdir()
                self._zk.append(_NsZkMember(d, lab, i, k + 1, addrs))
        self._isolated: set[int] = set()

    @property
    def size(self) -> int:
        return len(self.hosts)

    @property
    def endpoints(self) -> tuple[str, ...]:
        if self._etcd:
            return tuple(m.client_url for m in self._etcd)
        return tuple(m.endpoint for m in self._zk)

    def _initial(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self._etcd)

    def start(self, k: int | None = None, timeout: float = 60.0) -> None:
        """Start member ``k`` (every member when None) and wait until it serves."""
        ks = range(self.size) if k is None else [k]
        for j in ks:
            if self._etcd:
                self._etcd[j].spawn(self._initial(), self.token)
            else:
                self._zk[j].start()
        deadline = time.monotonic() + timeout
        while not all(self.serving(j) for j in ks):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.backend} members {list(ks)} not serving in {timeout}s")
            time.sleep(0.2)

    def serving(self, k: int) -> bool:
        if self._etcd:
            return self._etcd[k].running() and self._etcd[k].healthy()
        return self._zk[k].running and self._zk[k].serving()

    def running(self, k: int) -> bool:
        return self._etcd[k].running() if self._etcd else self._zk[k].running

    def kill(self, k: int) -> None:
        if self._etcd:
            self._etcd[k].signal(signal.SIGKILL)
        else:
            self._zk[k].signal(signal.SIGKILL)

    def etcd_leader(self) -> int:
        """etcd: index of the current leader."""
        out = etcdctl(list(self.endpoints), "endpoint", "status", "-w", "json")
        for status in json.loads(out):
            if status["Status"]["header"]["member_id"] == status["Status"]["leader"]:
                return list(self.endpoints).index(status["Endpoint"])
        raise RuntimeError("no etcd leader")

    def etcd_lead_elsewhere(self, k: int) -> None:
        """etcd: make sure member ``k`` is a follower (hand leadership to another)."""
        leader = self.etcd_leader()
        if leader != k:
            return
        to = (k + 1) % self.size
        out = etcdctl([self.endpoints[to]], "endpoint", "status", "-w", "json")
        target = json.loads(out)[0]["Status"]["header"]["member_id"]
        etcdctl([self.endpoints[leader]], "move-leader", f"{target:x}")

    def isolate_peers(self, k: int) -> None:
        """Cut member ``k`` off from the other members, both ways (blackhole routes in
        its namespace and in theirs): clients still reach every member."""
        self._peer_routes(k, "add")
        self._isolated.add(k)

    def heal_peers(self, k: int) -> None:
        self._peer_routes(k, "del")
        self._isolated.discard(k)

    def _peer_routes(self, k: int, op: str) -> None:
        me = self.lab.hosts[self.hosts[k]]
        for j, i in enumerate(self.hosts):
            if j == k:
                continue
            peer = self.lab.hosts[i]
            ip("-n", me.ns, "route", op, "blackhole", f"{peer.address}/32", check=op == "add")
            ip("-n", peer.ns, "route", op, "blackhole", f"{me.address}/32", check=op == "add")

    def close(self) -> None:
        for k in list(self._isolated):
            self.heal_peers(k)
        for k in range(self.size):
            with contextlib.suppress(Exception):
                self.kill(k)
        shutil.rmtree(self.workdir, ignore_errors=True)
