"""Real etcd servers for tests: one member (EtcdServer) or several (EtcdCluster).

Every member listens on free loopback ports only and keeps its data in a temporary
directory that is removed on exit. A member that does not come up raises RuntimeError
with the tail of its own log: a test run with a broken etcd fails loudly, never skips.

Security options for the security tests: ``tls=EtcdTls(...)`` serves clients over
https and (by default) requires client certificates; ``extra_args`` are appended to
every member's command line (e.g. ``--auth-token-ttl=2``); ``admin`` ("user:password")
is what the harness's own etcdctl calls authenticate as once auth is enabled.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from idstore.backends.base import SlotStore
from tests.harness.env import BackendEnv
from tests.harness.lifecycle import StartedInBlock
from tests.harness.ports import free_port

ETCD = os.environ.get("IDSTORE_TEST_ETCD", "/usr/bin/etcd")
ETCDCTL = os.environ.get("IDSTORE_TEST_ETCDCTL", "/usr/bin/etcdctl")
HOST = "127.0.0.1"  # loopback only, always
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
LOG_TAIL = 4000


@dataclass(frozen=True)
class EtcdTls:
    """Server certificate of every member, the CA clients must be signed by, and a
    client certificate the harness itself uses (health checks, etcdctl)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_cert_auth: bool = True  # refuse clients without a certificate signed by ``ca``

    def server_args(self) -> list[str]:
        args = [
            f"--cert-file={self.server_cert}",
            f"--key-file={self.server_key}",
            f"--trusted-ca-file={self.ca}",
        ]
        return [*args, "--client-cert-auth"] if self.client_cert_auth else args

    def client_args(self) -> list[str]:
        return [f"--cacert={self.ca}", f"--cert={self.client_cert}", f"--key={self.client_key}"]

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.load_cert_chain(str(self.client_cert), str(self.client_key))
        return ctx


def etcdctl(
    endpoints: Sequence[str],
    *args: str,
    timeout: float = 10.0,
    tls: EtcdTls | None = None,
    user: str | None = None,
) -> str:
    """Run etcdctl (API v3) against ``endpoints``; RuntimeError with its output on failure.

    ``tls`` adds the harness's client certificate, ``user`` ("name:password") logs in.
    """
    cmd = [ETCDCTL, f"--endpoints={','.join(endpoints)}", "--command-timeout=5s"]
    cmd += tls.client_args() if tls is not None else []
    cmd += [f"--user={user}"] if user else []
    cmd += args
    env = {**os.environ, "ETCDCTL_API": "3"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


class EtcdMember:
    """One etcd process: fixed name, ports and data dir, so it can be restarted as itself."""

    def __init__(
        self,
        name: str,
        workdir: Path,
        tls: EtcdTls | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.tls = tls
        self.extra_args = tuple(extra_args)
        self.client_port = free_port()
        self.peer_port = free_port()
        self.data_dir = workdir / f"{name}.etcd"
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{HOST}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{HOST}:{self.peer_port}"

    def repick_ports(self) -> None:
        """New ports after a lost race for the old ones (only before the first start)."""
        self.client_port, self.peer_port = free_port(), free_port()

    def command(self, initial_cluster: str, token: str) -> list[str]:
        return [
            ETCD,
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={initial_cluster}",
            f"--initial-cluster-token={token}",
            "--initial-cluster-state=new",  # ignored by etcd once the data dir exists
            "--logger=zap",
            "--log-outputs=stderr",
            *(self.tls.server_args() if self.tls is not None else ()),
            *self.extra_args,
        ]

    def spawn(self, initial_cluster: str, token: str) -> None:
        if self.running():
            return
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== start {time.strftime('%H:%M:%S')} ===\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command(initial_cluster, token),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C of the test run must not hit etcd first
            )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self) -> bool:
        """Whether the member serves and has a leader (its /health endpoint)."""
        ctx = self.tls.client_context() if self.tls is not None else None
        try:
            with urllib.request.urlopen(
                f"{self.client_url}/health", timeout=1.0, context=ctx
            ) as resp:
                return bool(json.load(resp).get("health") == "true")
        except (OSError, ValueError):
            return False

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-LOG_TAIL:]
        except OSError as e:
            return f"(no log: {e})"

    def signal(self, sig: signal.Signals, timeout: float = STOP_TIMEOUT) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class EtcdCluster(StartedInBlock):
    """``size`` etcd members on loopback forming one cluster; a context manager.

    ``kill(i)`` / ``stop(i)`` / ``start(i)`` act on member ``i``; without ``i`` on all.
    """

    def __init__(
        self,
        size: int = 3,
        start_timeout: float = START_TIMEOUT,
        tls: EtcdTls | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        if size < 1:
            raise ValueError("an etcd cluster needs at least one member")
        self.start_timeout = start_timeout
        self.tls = tls
        self.admin: str | None = None  # "user:password" for etcdctl once auth is enabled
        self.token = f"idstore-test-{uuid.uuid4().hex[:8]}"
        self.workdir = Path(tempfile.mkdtemp(prefix="idstore-etcd-"))
        self.members = [EtcdMember(f"m{i}", self.workdir, tls, extra_args) for i in range(size)]
        self._started_once = False

    # -- addresses -----------------------------------------------------------------------

    @property
    def endpoints(self) -> tuple[str, ...]:
        return tuple(m.client_url for m in self.members)

    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    def env(self, **option_overrides: object) -> EtcdEnv:
        return EtcdEnv(self, **option_overrides)

    def ctl(self, *args: str, user: str | None = None, timeout: float = 10.0) -> str:
        """etcdctl against the running members, with the harness's TLS and ``admin``."""
        running = [m.client_url for m in self.members if m.running()]
        return etcdctl(running, *args, timeout=timeout, tls=self.tls, user=user or self.admin)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, i: int | None = None) -> None:
        """Start member ``i`` (or every member not running) and wait until it serves."""
        targets = self._targets(i)
        first = not self._started_once
        for attempt in range(3):
            for m in targets:
                m.spawn(self.initial_cluster(), self.token)
            try:
                self._wait_healthy(targets)
                break
            except RuntimeError:
                # A port picked as free may have been taken meanwhile: retry with new ports,
                # but only on the very first start (a restart must keep its addresses).
                if not (first and attempt < 2 and self._port_clash()):
                    self._stop_all(targets)
                    raise
                self._stop_all(targets)
                for m in self.members:
                    m.repick_ports()
        self._started_once = True

    def stop(self, i: int | None = None) -> None:
        """SIGTERM: a clean shutdown of member ``i`` (or all)."""
        for m in self._targets(i):
            m.signal(signal.SIGTERM)

    def kill(self, i: int | None = None) -> None:
        """SIGKILL: member ``i`` (or all) dies at once, as on a power cut."""
        for m in self._targets(i):
            m.signal(signal.SIGKILL)

    def leader(self) -> int:
        """Index of the current leader among the running members."""
        running = [m for m in self.members if m.running()]
        out = self.ctl("endpoint", "status", "-w", "json")
        for status in json.loads(out):
            header = status["Status"]["header"]
            if header["member_id"] == status["Status"]["leader"]:
                url = status["Endpoint"]
                return next(i for i, m in enumerate(self.members) if m.client_url == url)
        raise RuntimeError(f"no leader among {[m.name for m in running]}")

    def close(self) -> None:
        self._stop_all(self.members)
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -- helpers -------------------------------------------------------------------------

    def _targets(self, i: int | None) -> list[EtcdMember]:
        return list(self.members) if i is None else [self.members[i]]

    def _stop_all(self, members: Sequence[EtcdMember]) -> None:
        for m in members:
            m.signal(signal.SIGTERM)  # also reaps a member that already exited

    def _port_clash(self) -> bool:
        return any("address already in use" in m.log_tail() for m in self.members)

    def _wait_healthy(self, members: Sequence[EtcdMember]) -> None:
        deadline = time.monotonic() + self.start_timeout
        pending = list(members)
        while pending:
            dead = [m for m in pending if not m.running()]
            if dead:
                raise RuntimeError(self._failure("exited during start", dead))
            pending = [m for m in pending if not m.healthy()]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    self._failure(f"not healthy after {self.start_timeout}s", pending)
                )
            time.sleep(0.1)

    def _failure(self, what: str, members: Sequence[EtcdMember]) -> str:
        parts = [
            f"etcd member {m.name} ({m.client_url}) {what}; log tail:\n{m.log_tail()}"
            for m in members
        ]
        return f"{ETCD}: " + "\n".join(parts)


class EtcdServer(EtcdCluster):
    """A single etcd member on free loopback ports, with a temporary data dir."""

    def __init__(
        self,
        start_timeout: float = START_TIMEOUT,
        tls: EtcdTls | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        super().__init__(size=1, start_timeout=start_timeout, tls=tls, extra_args=extra_args)

    @property
    def member(self) -> EtcdMember:
        return self.members[0]


class EtcdEnv(BackendEnv):
    """Conformance-suite access to an etcd cluster started by this harness."""

    backend = "etcd"

    def __init__(self, cluster: EtcdCluster, **option_overrides: object) -> None:
        super().__init__(cluster.endpoints, **option_overrides)
        self.cluster = cluster

    def expire(self, store: SlotStore) -> None:
        """Revoke the store's lease from another client: the server ends the session now."""
        lease = store.session_id
        if not lease:
            raise AssertionError("the store has no session to expire")
        self.cluster.ctl("lease", "revoke", lease)
