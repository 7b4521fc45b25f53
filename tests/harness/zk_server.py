"""A real ZooKeeper server for tests: free loopback port, temporary data dir, loud failure.

The Debian package (``zookeeper``) provides the jars; this module writes a ``zoo.cfg``,
starts ``QuorumPeerMain`` with a classpath that has exactly one SLF4J binding (so the
server's own log lands in ``zookeeper.log`` and can be shown when it fails), and waits
until the server answers ``srvr`` with a serving mode. A server that cannot be started
raises RuntimeError with the tail of its log: the tests that need it fail, never skip.

``ZooKeeperServer`` is one standalone server. ``ZooKeeperEnsemble`` runs three members
on distinct client/peer/election ports; both are built from ``_Member``, one process
with its own config and data dir.

``ZooKeeperServer(tls=ZooKeeperTls(...))`` also serves clients over TLS, by default
requiring a client certificate signed by the given CA; its ``endpoints`` are then the
TLS port's.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from idstore.backends.base import SlotStore
from tests.harness.env import BackendEnv
from tests.harness.lifecycle import StartedInBlock
from tests.harness.ports import free_port

JAVA = shutil.which("java") or "/usr/bin/java"
JARS = Path("/usr/share/java")
# One SLF4J binding only: /usr/share/java/* holds several and SLF4J would then pick the
# no-op one, leaving no server log to show when something goes wrong.
CLASSPATH_JARS = ("zookeeper.jar", "slf4j-log4j12.jar", "log4j-1.2.jar", "netty-codec.jar")
# netty-codec is for TLS: Netty's SslHandler extends its ByteToMessageDecoder, and the
# Class-Path in the Debian zookeeper.jar's manifest lacks it, so every TLS connection
# failed with ClassNotFoundException: io.netty.handler.codec.ByteToMessageDecoder.
MAIN_CLASS = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
LOOPBACK = "127.0.0.1"
# Small ticks: ZooKeeper only grants session timeouts in [2, 20] ticks, and the tests use
# TTLs of 2-3 s.
DEFAULT_TICK_MS = 200
STARTUP_TIMEOUT = 30.0
LOG4J = """\
log4j.rootLogger=INFO, FILE
log4j.appender.FILE=org.apache.log4j.FileAppender
log4j.appender.FILE.File={path}
log4j.appender.FILE.layout=org.apache.log4j.PatternLayout
log4j.appender.FILE.layout.ConversionPattern=%d{{ISO8601}} %-5p [%t] %m%n
"""


def four_letter_word(port: int, word: bytes, timeout: float = 1.0) -> bytes:
    """Send a ZooKeeper admin command (it must be in 4lw.commands.whitelist)."""
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as s:
        s.sendall(word)
        chunks = []
        while chunk := s.recv(4096):
            chunks.append(chunk)
        return b"".join(chunks)


def classpath() -> str:
    missing = [j for j in CLASSPATH_JARS if not (JARS / j).exists()]
    if missing:
        raise RuntimeError(
            f"ZooKeeper jars missing from {JARS}: {', '.join(missing)} "
            "(install the Debian package: apt-get install zookeeper)"
        )
    return os.pathsep.join(str(JARS / j) for j in CLASSPATH_JARS)


@dataclass(frozen=True)
class Ports:
    client: int
    peer: int = 0  # quorum traffic; only used in an ensemble
    election: int = 0
    secure: int = 0  # clients over TLS; only with ZooKeeperTls


@dataclass(frozen=True)
class ZooKeeperTls:
    """Serve clients over TLS on a secure port, next to the plain one.

    The plain port stays open (on loopback) for the harness itself: ``srvr`` readiness
    checks and ``four_letter_word`` need no certificate there.
    """

    ca: Path  # trusted for client certificates
    server_cert: Path
    server_key: Path  # PEM; PKCS#8 EC keys (as tls.make_pki writes) work
    client_auth: str = "need"  # ssl.clientAuth: need | want | none

    def config(self, directory: Path, port: int) -> list[str]:
        """zoo.cfg lines for a secure port; writes the key store into ``directory``."""
        # A PEM key store is one file holding the certificate and its key.
        keystore = directory / "server.pem"
        keystore.touch(mode=0o600)
        keystore.write_text(self.server_cert.read_text() + self.server_key.read_text())
        return [
            # The default NIO connection factory cannot do TLS; Netty serves both ports.
            "serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory",
            f"secureClientPort={port}",
            f"secureClientPortAddress={LOOPBACK}",
            f"ssl.keyStore.location={keystore}",
            "ssl.keyStore.type=PEM",
            f"ssl.trustStore.location={self.ca}",
            "ssl.trustStore.type=PEM",
            f"ssl.clientAuth={self.client_auth}",
        ]


class _Member:
    """One ZooKeeper process: its config, data dir, log, and lifecycle."""

    def __init__(
        self,
        workdir: Path,
        ports: Ports,
        tick_ms: int,
        server_id: int = 0,
        peers: Sequence[tuple[int, Ports]] = (),
        tls: ZooKeeperTls | None = None,
    ) -> None:
        self.dir = workdir
        self.ports = ports
        self.tls = tls
        self.tick_ms = tick_ms
        self.server_id = server_id
        self.peers = tuple(peers)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir / "zookeeper.log"
        self.out_path = self.dir / "stdout.log"
        self._write_config()

    @property
    def endpoint(self) -> str:
        """Where clients connect: the TLS port when there is one."""
        return f"{LOOPBACK}:{self.ports.secure if self.tls else self.ports.client}"

    def _write_config(self) -> None:
        data = self.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        lines = [
            f"tickTime={self.tick_ms}",
            f"dataDir={data}",
            f"clientPort={self.ports.client}",
            f"clientPortAddress={LOOPBACK}",
            "admin.enableServer=false",
            # Benchmarks open many sessions from this one address (default limit 60).
            "maxClientCnxns=0",
            "4lw.commands.whitelist=ruok,srvr,stat,mntr,cons,dump,wchs",
            # Sessions of 2 ticks up to a minute: every ttl a test uses is honoured.
            f"minSessionTimeout={2 * self.tick_ms}",
            "maxSessionTimeout=60000",
            "initLimit=10",
            "syncLimit=5",
        ]
        if self.peers:
            (data / "myid").write_text(f"{self.server_id}\n")
            lines += [f"server.{sid}={LOOPBACK}:{p.peer}:{p.election}" for sid, p in self.peers]
        if self.tls:
            lines += self.tls.config(self.dir, self.ports.secure)
        (self.dir / "zoo.cfg").write_text("\n".join(lines) + "\n")
        (self.dir / "log4j.properties").write_text(LOG4J.format(path=self.log_path))

    def start(self) -> None:
        if self.running:
            return
        cmd = [
            JAVA,
            "-Xmx256m",
            "-XX:+UseSerialGC",
            f"-Dlog4j.configuration=file:{self.dir / 'log4j.properties'}",
            "-Dzookeeper.jmx.log4j.disable=true",
            "-cp",
            classpath(),
            MAIN_CLASS,
            str(self.dir / "zoo.cfg"),
        ]
        with open(self.out_path, "ab") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def serving(self) -> bool:
        """True once the server answers requests (standalone, leader or follower)."""
        try:
            reply = four_letter_word(self.ports.client, b"srvr")
        except OSError:
            return False
        return b"Mode: " in reply

    def signal(self, sig: int, wait: float = 10.0) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(wait)

    def log_tail(self, lines: int = 40) -> str:
        parts = []
        for path in (self.log_path, self.out_path):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path} ---\n" + "\n".join(text))
        return "\n".join(parts) or "(no log written)"


def _wait_serving(members: Sequence[_Member], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = [m for m in members if not m.running]
        if dead:
            code = dead[0].proc.returncode if dead[0].proc else None
            raise RuntimeError(
                f"ZooKeeper on {dead[0].endpoint} exited with code {code}:\n{dead[0].log_tail()}"
            )
        if all(m.serving() for m in members):
            return
        time.sleep(0.1)
    tails = "\n".join(m.log_tail() for m in members)
    raise RuntimeError(f"ZooKeeper did not start serving within {timeout}s:\n{tails}")


class ZooKeeperEnv(BackendEnv):
    backend = "zookeeper"

    def expire(self, store: SlotStore) -> None:
        expire_session(self.endpoints, store)


def expire_session(endpoints: Sequence[str], store: SlotStore) -> None:
    """Expire ``store``'s session server-side now, the classic way: open a second client
    on the same session id and password, then close it (closeSession ends the session
    for both)."""
    from kazoo.client import KazooClient

    from idstore.backends.zookeeper import ZooKeeperStore

    assert isinstance(store, ZooKeeperStore)
    client_id = store.client_id()
    if client_id is None:
        raise RuntimeError("the store has no session to expire")
    twin = KazooClient(
        hosts=",".join(endpoints),
        client_id=client_id,
        timeout=store.options.ttl,
        auth_data=store.auth_data(),
    )
    twin.start(timeout=10)
    try:
        twin.stop()
    finally:
        twin.close()


class ZooKeeperServer(StartedInBlock):
    """A standalone ZooKeeper on a free loopback port; a context manager.

    ``kill()`` (SIGKILL) and ``stop()`` keep the data dir and port so ``start()`` brings
    the same server back, with its sessions and znodes.
    """

    def __init__(
        self,
        tick_ms: int = DEFAULT_TICK_MS,
        startup_timeout: float = STARTUP_TIMEOUT,
        tls: ZooKeeperTls | None = None,
    ) -> None:
        self.tick_ms = tick_ms
        self.startup_timeout = startup_timeout
        self.tls = tls
        self._tmp: Path | None = None
        self._member: _Member | None = None

    @property
    def endpoints(self) -> tuple[str, ...]:
        return (self._require().endpoint,)

    @property
    def port(self) -> int:
        """The plain client port (four-letter words), also with TLS."""
        return self._require().ports.client

    def _require(self) -> _Member:
        if self._member is None:
            raise RuntimeError("ZooKeeperServer is not started")
        return self._member

    def env(self, **option_overrides: object) -> ZooKeeperEnv:
        return ZooKeeperEnv(self.endpoints, **option_overrides)

    def start(self) -> None:
        if self._member is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="idstore-zk-"))
            ports = Ports(free_port(), secure=free_port() if self.tls else 0)
            self._member = _Member(self._tmp, ports, self.tick_ms, tls=self.tls)
        self._member.start()
        _wait_serving([self._member], self.startup_timeout)

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, as a crashed or unplugged server."""
        if self._member is not None:
            self._member.signal(signal.SIGKILL)

    def stop(self) -> None:
        if self._member is not None:
            self._member.signal(signal.SIGTERM)

    def log_tail(self, lines: int = 40) -> str:
        return self._require().log_tail(lines)

    def close(self) -> None:
        self.kill()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
        self._tmp = None
        self._member = None


class ZooKeeperEnsemble(StartedInBlock):
    """Three (or ``size``) ZooKeeper members on loopback, each with its own ports.

    ``kill(i)``/``stop(i)``/``start(i)`` act on one member, so a test can take the
    leader or a minority away.
    """

    def __init__(
        self,
        size: int = 3,
        tick_ms: int = DEFAULT_TICK_MS,
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        self.size = size
        self.tick_ms = tick_ms
        self.startup_timeout = startup_timeout
        self._tmp: Path | None = None
        self.members: list[_Member] = []

    @property
    def endpoints(self) -> tuple[str, ...]:
        return tuple(m.endpoint for m in self.members)

    def env(self, **option_overrides: object) -> ZooKeeperEnv:
        return ZooKeeperEnv(self.endpoints, **option_overrides)

    def start(self, index: int | None = None) -> None:
        if not self.members:
            self._create()
        targets = self.members if index is None else [self.members[index]]
        for m in targets:
            m.start()
        # A lone restarted member serves only once it rejoins a quorum.
        _wait_serving(targets, self.startup_timeout)

    def _create(self) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix="idstore-zk-ensemble-"))
        peers = [(i + 1, Ports(free_port(), free_port(), free_port())) for i in range(self.size)]
        self.members = [
            _Member(self._tmp / f"zk{sid}", ports, self.tick_ms, sid, peers) for sid, ports in peers
        ]

    def kill(self, index: int) -> None:
        self.members[index].signal(signal.SIGKILL)

    def stop(self, index: int) -> None:
        self.members[index].signal(signal.SIGTERM)

    def running(self, index: int) -> bool:
        return self.members[index].running

    def mode(self, index: int) -> str | None:
        """``leader``, ``follower`` (``standalone``) from ``srvr``; None if not serving."""
        try:
            reply = four_letter_word(self.members[index].ports.client, b"srvr")
        except OSError:
            return None
        for line in reply.decode(errors="replace").splitlines():
            if line.startswith("Mode: "):
                return line.removeprefix("Mode: ").strip()
        return None

    def leader(self) -> int:
        """Index of the member that answers ``srvr`` with ``Mode: leader``."""
        for i, m in enumerate(self.members):
            if m.running and self.mode(i) == "leader":
                return i
        raise RuntimeError(f"no leader among the running members of {self.endpoints}")

    def sessions(self, index: int) -> set[str]:
        """Session ids (hex, as ``ephemeralOwner`` / idstore show them) of the clients
        connected to member ``index`` right now (``cons``); empty if it does not answer."""
        try:
            reply = four_letter_word(self.members[index].ports.client, b"cons")
        except OSError:
            return set()
        return {
            f"{int(m, 16):x}"
            for m in re.findall(r"sid=0x([0-9a-f]+)", reply.decode(errors="replace"))
        }

    def close(self) -> None:
        for m in self.members:
            m.signal(signal.SIGKILL)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
        self._tmp = None
        self.members = []
