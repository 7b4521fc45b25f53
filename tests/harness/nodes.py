"""Real ``idstore serve`` processes for integration tests, and DNS queries against them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from tests.harness.ports import free_dns_port
from tests.harness.waiting import wait_for

HOST = "127.0.0.1"


def query(
    port: int,
    name: str,
    rdtype: str = "A",
    tcp: bool = False,
    timeout: float = 2.0,
    host: str = HOST,
    **make_kwargs: object,
) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, **make_kwargs)  # type: ignore[arg-type]
    if tcp:
        return dns.query.tcp(q, host, port=port, timeout=timeout)
    return dns.query.udp(q, host, port=port, timeout=timeout)


def addresses_of(port: int, name: str, rdtype: str = "A") -> set[str]:
    """The addresses ``name`` resolves to on the server at ``port`` (empty if none)."""
    try:
        r = query(port, name, rdtype, timeout=1.0)
    except (dns.exception.Timeout, OSError):
        return set()
    return {
        rd.to_text()
        for rrset in r.answer
        for rd in rrset
        if rrset.rdtype == dns.rdatatype.from_text(rdtype)
    }


class NodeProcess:
    """One ``idstore serve`` process; its stderr goes to a log file tests can read."""

    def __init__(
        self,
        args: Sequence[str],
        name: str = "node",
        env: dict[str, str] | None = None,
        workdir: Path | None = None,
    ) -> None:
        self.port = free_dns_port()
        self.name = name
        self.args = ["serve", *args, "--listen", f"{HOST}:{self.port}"]
        self.env = {**os.environ, **(env or {})}
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="idstore-node-"))
        self.log_path = self.workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> NodeProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "idstore", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_claimed(self, timeout: float = 30.0) -> str:
        """Wait for the 'claimed slot' line; return it."""

        def claimed() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.proc.returncode}:\n{self.log()}")
            return "claimed slot" in self.log()

        wait_for(claimed, timeout, f"{self.name} to claim a slot")
        return next(line for line in self.log().splitlines() if "claimed slot" in line)

    def send(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send ``sig`` and wait for the exit; SIGKILL if it does not exit in time."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.send(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise AssertionError(f"{self.name} ignored signal {sig}:\n{self.log()}") from None
        return int(self.proc.returncode)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def __enter__(self) -> NodeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def is_authoritative(r: dns.message.Message) -> bool:
    return bool(r.flags & dns.flags.AA) and not (r.flags & dns.flags.RA)


def rcode(r: dns.message.Message) -> str:
    return dns.rcode.to_text(r.rcode())


def idstore_list(config: Path) -> list[dict[str, object]]:
    """``idstore list --json`` against ``config``: the claims as the CLI reports them."""
    out = subprocess.run(
        [sys.executable, "-m", "idstore", "list", "--json", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return list(json.loads(out))
