"""Real hosts for fault tests: Linux network namespaces on a bridge, and stores bound to it.

``NetnsLab`` creates one Linux bridge on the host side and ``size`` network namespaces,
each joined to the bridge by a veth pair and given its own private IPv4 address (a random
free ``10.213.X.0/24`` per run, so concurrent runs never share a subnet). The host side of
the bridge gets ``.1``; host ``i`` gets ``.(11 + i)``. Every name is unique per run and
everything is removed by ``close()`` (idempotent, also registered with ``atexit``), even
after a failure. Nothing is configured outside the namespaces and the bridge this module
creates. Needs root (``ip netns``).

The bridge's MAC address is set once: a Linux bridge otherwise takes the lowest MAC of
its ports, so adding or removing a veth mid-test could change it and cut every host off
for 10-17 s. ``host_file(i, name, text)`` writes ``/etc/netns/<ns>/<name>``, which
``ip netns exec`` bind-mounts over ``/etc/<name>``: a host's own ``resolv.conf`` (its
system resolver) or ``machine-id``; removed by ``close()``.

``link_down(i)`` / ``link_up(i)`` cut and restore host ``i``'s cable (the host-side veth),
which blackholes its traffic like a real partition: no reset, no error, just silence.

``in_host(i, fn)`` runs ``fn`` on a thread that lives inside host ``i``'s network namespace
(``setns(2)`` is per thread), so the test process can query a host's DNS on its own
``127.0.0.1`` even while the host is cut off from the bridge.

``BridgeEtcd`` / ``BridgeZooKeeper`` are the harness stores with the client port bound to
the bridge address instead of loopback (peer ports stay on loopback).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ipaddress
import os
import random
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from tests.harness import zk_server
from tests.harness.etcd_server import EtcdMember, EtcdServer
from tests.harness.nodes import NodeProcess
from tests.harness.zk_server import Ports, ZooKeeperServer, _Member, free_port

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/var/run/netns")
NETNS_ETC = Path("/etc/netns")  # per-namespace files that `ip netns exec` mounts over /etc
SUBNET_BASE = "10.213"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=15)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def _enter_netns(ns: str) -> None:
    """Move the calling thread into network namespace ``ns``."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(NETNS_DIR / ns, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({ns}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _free_subnet() -> int:
    """A third octet X such that 10.213.X.0/24 overlaps no route on the host."""
    routes = ip("-4", "route", "show", "table", "all").stdout
    nets = []
    for line in routes.splitlines():
        first = line.split()[0] if line.split() else ""
        with contextlib.suppress(ValueError):
            if "/" in first or first.count(".") == 3:
                nets.append(ipaddress.ip_network(first, strict=False))
    choices = list(range(1, 255))
    random.shuffle(choices)
    for x in choices:
        net = ipaddress.ip_network(f"{SUBNET_BASE}.{x}.0/24")
        if not any(net.overlaps(n) for n in nets if n.prefixlen > 0):
            return x
    raise RuntimeError(f"no free /24 in {SUBNET_BASE}.0.0/16")


class Host:
    """One namespace: its name, address, host-side veth, and a thread living inside it."""

    def __init__(self, ns: str, address: str, veth: str) -> None:
        self.ns = ns
        self.address = address
        self.veth = veth
        self._executor: ThreadPoolExecutor | None = None

    def run(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn`` on this host's own thread (inside its network namespace)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                1, thread_name_prefix=self.ns, initializer=_enter_netns, initargs=(self.ns,)
            )
        return self._executor.submit(fn)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


class NetnsLab:
    """A bridge with ``size`` namespace hosts; see the module docstring."""

    def __init__(self, size: int) -> None:
        self.run_id = uuid.uuid4().hex[:6]
        x = _free_subnet()
        self.net = f"{SUBNET_BASE}.{x}"
        self.bridge = f"idb{self.run_id}"
        self.gateway = f"{self.net}.1"
        self.hosts: list[Host] = []
        self._closed = False
        atexit.register(self.close)
        try:
            self._create(size)
        except BaseException:
            self.close()
            raise

    def _create(self, size: int) -> None:
        ip("link", "add", self.bridge, "type", "bridge")
        # Locally administered, unique per run: see the module docstring.
        mac = "02:1d:" + ":".join(self.run_id[i : i + 2] for i in range(0, 6, 2)) + ":01"
        ip("link", "set", self.bridge, "address", mac)
        ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for i in range(size):
            ns = f"idst{self.run_id}{i}"
            veth, peer = f"idv{self.run_id}{i}", f"idp{self.run_id}{i}"
            host = Host(ns, f"{self.net}.{11 + i}", veth)
            ip("netns", "add", ns)
            self.hosts.append(host)
            ip("link", "add", veth, "type", "veth", "peer", "name", peer)
            ip("link", "set", peer, "netns", ns)
            ip("link", "set", veth, "master", self.bridge)
            ip("link", "set", veth, "up")
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "link", "set", peer, "name", "eth0")
            ip("-n", ns, "addr", "add", f"{host.address}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            # A default route, so address detection has a route even with no store given.
            ip("-n", ns, "route", "add", "default", "via", self.gateway)

    def link_down(self, i: int) -> None:
        ip("link", "set", self.hosts[i].veth, "down")

    def link_up(self, i: int) -> None:
        ip("link", "set", self.hosts[i].veth, "up")

    def host_file(self, i: int, name: str, text: str) -> None:
        """``/etc/<name>`` as seen by processes started with ``exec_prefix(i)``."""
        folder = NETNS_ETC / self.hosts[i].ns
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)

    def exec_prefix(self, i: int) -> list[str]:
        return ["ip", "netns", "exec", self.hosts[i].ns]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for host in self.hosts:
            host.close()
            # Only processes inside our own namespaces: ones this lab's tests started.
            pids = ip("netns", "pids", host.ns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            ip("netns", "del", host.ns, check=False)
            ip("link", "del", host.veth, check=False)
            folder = NETNS_ETC / host.ns
            if folder.is_dir():
                for f in folder.iterdir():
                    f.unlink()
                folder.rmdir()
        ip("link", "del", self.bridge, check=False)

    def __enter__(self) -> NetnsLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NetnsNode(NodeProcess):
    """``idstore serve`` inside a lab host: ``ip netns exec NS python -m idstore serve ...``.

    The DNS server listens where the config file says (the lab's config uses
    ``0.0.0.0:53``, i.e. every address of the namespace: its own and its loopback).
    """

    def __init__(
        self,
        lab: NetnsLab,
        index: int,
        args: Sequence[str],
        name: str,
        workdir: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.lab = lab
        self.index = index
        self.host = lab.hosts[index]
        self.port = 53
        self.name = name
        self.args = ["serve", *args]
        self.env = {**os.environ, **(env or {})}
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self.proc = None

    def start(self) -> NetnsNode:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*self.lab.exec_prefix(self.index), sys.executable, "-m", "idstore", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        return self


# --------------------------------------------------------------------------- stores


class _BridgeEtcdMember(EtcdMember):
    def __init__(self, name: str, workdir: Path, host: str) -> None:
        super().__init__(name, workdir)
        self.host = host

    @property
    def client_url(self) -> str:
        return f"http://{self.host}:{self.client_port}"


class BridgeEtcd(EtcdServer):
    """A single etcd member whose client URL is on ``host`` (the lab's bridge address)."""

    def __init__(self, host: str) -> None:
        super().__init__()
        self.members = [_BridgeEtcdMember("m0", self.workdir, host)]


class _BridgeZkMember(_Member):
    def __init__(self, workdir: Path, ports: Ports, tick_ms: int, host: str) -> None:
        self.host = host
        super().__init__(workdir, ports, tick_ms)

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.ports.client}"

    def _write_config(self) -> None:
        super()._write_config()
        cfg = self.dir / "zoo.cfg"
        text = cfg.read_text().replace(
            f"clientPortAddress={zk_server.LOOPBACK}", f"clientPortAddress={self.host}"
        )
        cfg.write_text(text)

    def serving(self) -> bool:
        import socket

        try:
            with socket.create_connection((self.host, self.ports.client), timeout=1.0) as s:
                s.sendall(b"srvr")
                reply = b"".join(iter(lambda: s.recv(4096), b""))
        except OSError:
            return False
        return b"Mode: " in reply


class BridgeZooKeeper(ZooKeeperServer):
    """A standalone ZooKeeper whose client port is on ``host`` (the lab's bridge)."""

    def __init__(self, host: str) -> None:
        super().__init__()
        self.host = host

    def start(self) -> None:
        if self._member is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="idstore-zk-br-"))
            self._member = _BridgeZkMember(self._tmp, Ports(free_port()), self.tick_ms, self.host)
        self._member.start()
        zk_server._wait_serving([self._member], self.startup_timeout)
