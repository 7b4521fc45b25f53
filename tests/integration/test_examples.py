"""The examples run as printed: real TensorFlow and PyTorch jobs on three network-namespace
hosts, each with its own ``idstore serve`` as its system resolver (``/etc/netns/<host>/
resolv.conf``), on a real etcd. The job completes on all three; then one host is killed,
its replacement (a new host, a new identity) takes the freed name, and the job completes
again.

The frameworks come from a cached virtualenv (scripts/framework-venv.sh: tensorflow-cpu
with tf-keras, and a CPU-only torch when one is installable). Without a CPU-only torch the
PyTorch test is skipped with that reason in the report (-ra), never passed silently.
Bounded: every job and every wait has a timeout; frameworks run with one thread.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.netns import BridgeEtcd, NetnsLab, NetnsNode
from tests.harness.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
JOB_TIMEOUT = 300.0  # a 3-worker TensorFlow job took 12-15 s on 2 cores, imports aside
TTL = "3"
ZONES = {"tensorflow": "tf.internal", "pytorch": "torch.internal"}

pytestmark = pytest.mark.timeout(2400)  # the first run installs ~1 GB of frameworks


@pytest.fixture(scope="module")
def venv() -> Path:
    """The cached framework virtualenv (made on first use: about 1 GB of downloads)."""
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "framework-venv.sh")],
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def lab() -> Iterator[NetnsLab]:
    with NetnsLab(4) as lab:  # three hosts and the replacement
        for i in range(4):
            lab.host_file(i, "resolv.conf", "nameserver 127.0.0.1\noptions timeout:2\n")
            lab.host_file(i, "machine-id", f"{lab.run_id}{i:026x}\n")
        yield lab


@pytest.fixture(scope="module")
def etcd(lab: NetnsLab) -> Iterator[BridgeEtcd]:
    with BridgeEtcd(lab.gateway) as server:
        yield server


class Example:
    def __init__(self, kind: str, lab: NetnsLab, etcd: BridgeEtcd, venv: Path, work: Path):
        self.kind, self.lab, self.venv, self.work = kind, lab, venv, work
        self.config = EXAMPLES / kind / "idstore.toml"
        self.env = {
            "IDSTORE_CONFIG": str(self.config),
            "IDSTORE_ENDPOINTS": ",".join(etcd.endpoints),
            "IDSTORE_TTL": TTL,
            "PYTHONPATH": str(ROOT),
        }
        self.nodes: dict[int, NetnsNode] = {}

    def serve(self, i: int) -> NetnsNode:
        node = NetnsNode(self.lab, i, [], f"{self.kind}-host{i}", self.work, self.env)
        self.nodes[i] = node.start()
        return node

    def run(self, *args: str, i: int, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.lab.exec_prefix(i), *args],
            capture_output=True, text=True, timeout=timeout, env={**os.environ, **self.env},
        )  # fmt: skip

    def whoami(self, i: int) -> dict[str, object]:
        out = self.run(sys.executable, "-m", "idstore", "whoami", "--json", i=i)
        return json.loads(out.stdout) if out.stdout.startswith("{") else {}

    def held(self, i: int) -> bool:
        return self.whoami(i).get("state") == "held"

    def launch(self, hosts: list[int]) -> dict[int, str]:
        """The example's launcher on every host at once; each one's output."""
        env = {
            **os.environ,
            **self.env,
            "IDSTORE": f"{sys.executable} -m idstore",
            "PYTHON": str(self.venv / "bin" / "python"),
            "WORKERS": "3",
            "WAIT_TIMEOUT": "60",
            "OMP_NUM_THREADS": "1",
        }
        script = str(EXAMPLES / self.kind / "launch.sh")
        procs = {
            i: subprocess.Popen(
                [*self.lab.exec_prefix(i), "bash", script],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
                start_new_session=True,
            )
            for i in hosts
        }
        out: dict[int, str] = {}
        try:
            for i, p in procs.items():
                out[i] = p.communicate(timeout=JOB_TIMEOUT)[0]
                assert p.returncode == 0, f"host {i}: exit {p.returncode}\n{out[i][-4000:]}"
        finally:
            for p in procs.values():
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
        return out

    def resolve(self, i: int, name: str) -> str:
        """``name`` through host ``i``'s system resolver (nsswitch, resolv.conf)."""
        out = self.run("getent", "hosts", name, i=i, timeout=15)
        return out.stdout.split()[0] if out.returncode == 0 and out.stdout else ""

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()


@pytest.fixture
def example(
    request: pytest.FixtureRequest, lab: NetnsLab, etcd: BridgeEtcd, venv: Path, tmp_path: Path
) -> Iterator[Example]:
    ex = Example(request.param, lab, etcd, venv, tmp_path)
    yield ex
    ex.stop()


def check_job(ex: Example, hosts: list[int]) -> None:
    out = ex.launch(hosts)
    for i in hosts:
        assert "job done" in out[i], f"host {i}:\n{out[i][-4000:]}"
        print(f"--- {ex.kind} host {i}\n{out[i][-1500:]}")  # shown with -s or on failure


@pytest.mark.parametrize("example", ["tensorflow", "pytorch"], indirect=True)
def test_example_job_completes_and_again_after_a_host_is_replaced(
    example: Example, venv: Path
) -> None:
    ex = example
    if ex.kind == "pytorch" and (reason := venv / ".no-cpu-torch").exists():
        pytest.skip(f"PyTorch example not run: {reason.read_text().strip()}")
    zone = ZONES[ex.kind]
    for i in range(3):
        ex.serve(i)
    wait_for(lambda: all(ex.held(i) for i in range(3)), 60, what="three hosts holding names")
    who = {i: ex.whoami(i) for i in range(3)}
    names = {i: str(w["name"]).rstrip(".") for i, w in who.items()}
    assert sorted(names.values()) == [f"worker{s}.{zone}" for s in range(3)]
    # every name through every host's system resolver, not through idstore's port, and
    # back (PTR with no reverse_zones configured: torch looks its peers up in reverse)
    for i in range(3):
        for j in range(3):
            assert ex.resolve(i, names[j]) == ex.lab.hosts[j].address
            back = ex.run("getent", "hosts", ex.lab.hosts[j].address, i=i, timeout=15)
            assert names[j] in back.stdout.split(), back
    # each host published its own port of the range, and the launch values carry it
    for i, w in who.items():
        port = w["port"]
        assert isinstance(port, int)
        env = ex.run(sys.executable, "-m", "idstore", "env", "--format", "json", i=i)
        doc = json.loads(env.stdout)
        assert doc["node"]["IDSTORE_PORT"] == str(port)
        assert doc["interface"] == "eth0"
        assert doc["torchrun"]["GLOO_SOCKET_IFNAME"] == "eth0"
    check_job(ex, [0, 1, 2])

    # host 1 dies; a new host (another identity) takes its name once its lease is gone
    ex.nodes[1].kill()
    ex.serve(3)
    wait_for(lambda: ex.held(3), 60, what="the replacement holding a name")
    assert str(ex.whoami(3)["name"]).rstrip(".") == names[1]
    wait_for(lambda: ex.resolve(0, names[1]) == ex.lab.hosts[3].address, 30,
             what="the freed name resolving to the replacement")  # fmt: skip
    check_job(ex, [0, 2, 3])
