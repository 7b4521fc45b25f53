"""Operating idstore against real stores: whoami, wait, env, the HTTP listener, metrics,
SIGHUP, sd_notify and the idetcd Corefile, each on a running ``idstore serve``.

Tests assert on outcomes (exit codes, documents, parsed metrics), never on timing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.nodes import HOST, NodeProcess, addresses_of, free_dns_port, query, wait_for
from tests.harness.ports import free_port

TTL = 3.0
LIMIT = 3


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "idstore", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class Ops:
    """Nodes sharing one config (pools worker, limit 3, and ps, limit 1), each with --http."""

    def __init__(self, server: Any, backend: str, tmp: Path) -> None:
        self.backend = backend
        self.tmp = tmp
        self.config = tmp / "idstore.toml"
        self.config.write_text(
            f'backend = "{backend}"\n'
            f"endpoints = {json.dumps(list(server.endpoints))}\n"
            f'cluster = "o{uuid.uuid4().hex[:8]}"\n'
            f"ttl = {TTL}\nconnect_timeout = 5\nrequest_timeout = 2\n"
            f'[pools.worker]\npattern = "worker{{{{.ID}}}}.tf.local."\nlimit = {LIMIT}\n'
            f"port = 2222\n"
            f'[pools.ps]\npattern = "ps{{{{.ID}}}}.tf.local."\nlimit = 1\nport = 2223\n'
            f"[dns]\nttl = 1\nnegative_ttl = 1\n"
        )
        self.nodes: list[NodeProcess] = []
        self.http: dict[str, int] = {}

    def node(self, nid: str, pool: str = "worker", *extra: str) -> NodeProcess:
        port = free_port()
        n = NodeProcess(
            [*self.flags(nid), "--pool", pool, "--address", f"192.0.2.{len(self.nodes) + 1}",
             "--http", f"{HOST}:{port}", *extra],
            name=nid,
            workdir=self.tmp,
        )  # fmt: skip
        self.http[nid] = port
        self.nodes.append(n)
        return n.start()

    def flags(self, nid: str) -> list[str]:
        return ["--config", str(self.config), "--node-id", nid]

    def close(self) -> None:
        for n in self.nodes:
            n.__exit__()


@pytest.fixture(params=["etcd", "zookeeper"])
def ops(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ops]:
    server = request.getfixturevalue("etcd_server" if request.param == "etcd" else "zk_server")
    o = Ops(server, request.param, tmp_path)
    yield o
    o.close()


@pytest.fixture
def three(ops: Ops) -> Ops:
    """Three workers and one ps, all holding slots."""
    for nid, pool in (("w-a", "worker"), ("w-b", "worker"), ("w-c", "worker"), ("p-a", "ps")):
        ops.node(nid, pool)
    for n in ops.nodes:
        n.wait_claimed(60)
    for nid, port in ops.http.items():
        wait_for(lambda port=port: seen(port) == 4, 15, f"{nid} to see all four members")
    return ops


def seen(http_port: int) -> int:
    status = json.loads(http_get(http_port, "/status")[1])
    return sum(len(members) for members in status["cluster"].values())


def test_wait_then_env_gives_every_node_the_same_cluster(three: Ops) -> None:
    ops = three
    done = run("wait", "--config", str(ops.config), "--pool", "worker", "--count", "3",
               "--timeout", "60")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "3/3 worker slots held" in done.stderr

    configs = []
    for nid in ("w-a", "w-b", "w-c", "p-a"):
        r = run("env", "--format", "tf-config", *ops.flags(nid))  # from the store
        assert r.returncode == 0, r.stderr
        configs.append(json.loads(r.stdout))
    expected_cluster = {
        "worker": [f"worker{i}.tf.local:2222" for i in range(3)],
        "ps": ["ps0.tf.local:2223"],
    }
    assert all(c["cluster"] == expected_cluster for c in configs)
    tasks = sorted((c["task"]["type"], c["task"]["index"]) for c in configs)
    assert tasks == [("ps", 0), ("worker", 0), ("worker", 1), ("worker", 2)]


def test_wait_times_out_with_progress_and_exit_1(three: Ops) -> None:
    r = run("wait", "--config", str(three.config), "--pool", "ps", "--count", "1",
            "--timeout", "0")  # fmt: skip
    assert r.returncode == 0  # ps0 is held
    r = run("wait", "--config", str(three.config), "--count", "3", "--pool", "worker",
            "--timeout", "0", "--http", f"{HOST}:{three.http['w-a']}")  # fmt: skip
    assert r.returncode == 0, r.stderr
    three.nodes[1].stop(signal.SIGTERM)
    r = run("wait", "--config", str(three.config), "--pool", "worker", "--count", "3",
            "--timeout", "2")  # fmt: skip
    assert r.returncode == 1
    assert "2/3 worker slots held" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("idstore: error: timed out after 2s")


@pytest.mark.parametrize("via", ["store", "http"])
def test_whoami_reports_pool_slot_name_and_state(three: Ops, via: str) -> None:
    extra = ["--http", f"{HOST}:{three.http['w-b']}"] if via == "http" else []
    r = run("whoami", "--json", *three.flags("w-b"), *extra)
    assert r.returncode == 0, r.stderr
    me = json.loads(r.stdout)
    assert me["pool"] == "worker" and me["state"] == "held"
    assert me["name"] == f"worker{me['slot']}.tf.local."
    assert me["addresses"] == ["192.0.2.2"]
    assert me["source"] == (
        "store" if via == "store" else f"http://{HOST}:{three.http['w-b']}/status"
    )
    text = run("whoami", *three.flags("w-b"), *extra)
    assert text.returncode == 0 and f"name:      {me['name']}" in text.stdout


def test_whoami_of_a_waiting_node_exits_1_and_ready_says_why(three: Ops) -> None:
    extra = three.node("w-d", "worker")  # the worker pool (3 slots) is full
    wait_for(lambda: "is full" in extra.log(), 30, "the 4th worker to say the pool is full")
    r = run("whoami", "--json", *three.flags("w-d"), "--http", f"{HOST}:{three.http['w-d']}")
    assert r.returncode == 1
    assert json.loads(r.stdout)["state"] == "waiting"
    assert run("whoami", *three.flags("w-d")).returncode == 1  # from the store: no claim
    assert run("env", *three.flags("w-d")).returncode == 1
    code, body = http_get(three.http["w-d"], "/ready")
    assert (code, body.strip()) == (503, "no slot held (waiting)")
    assert http_get(three.http["w-d"], "/health")[0] == 200


def test_health_ready_status_and_metrics_over_http(three: Ops) -> None:
    port = three.http["w-a"]
    assert http_get(port, "/health") == (200, "OK\n")
    assert http_get(port, "/ready") == (200, "OK\n")
    assert http_get(port, "/nope")[0] == 404
    status = json.loads(http_get(port, "/status")[1])
    assert status["state"] == "held" and status["store"] == "connected"
    assert [m["name"] for m in status["cluster"]["ps"]] == ["ps0.tf.local."]

    dns_port = three.nodes[0].port
    for name, rtype in (
        ("worker0.tf.local", "A"),
        ("nope.tf.local", "A"),
        ("ps0.tf.local", "AAAA"),
    ):
        query(dns_port, name, rtype)
    for _ in range(32):  # enough answers that the 1-in-N duration sampling sees some
        query(dns_port, "worker0.tf.local", "TXT")
    query(dns_port, "worker0.tf.local", "A", tcp=True)

    families = {f.name: f for f in text_string_to_metric_families(http_get(port, "/metrics")[1])}

    def value(family: str, sample: str | None = None, **labels: str) -> float:
        for s in families[family].samples:
            if s.name == (sample or family) and all(
                s.labels.get(k) == v for k, v in labels.items()
            ):
                return float(s.value)
        raise AssertionError(f"no {sample or family} {labels}")

    # prometheus_client strips _total from counter family names.
    assert value("idstore_dns_requests", "idstore_dns_requests_total", proto="udp", type="A") >= 2
    assert value("idstore_dns_requests", "idstore_dns_requests_total", proto="tcp", type="A") >= 1
    assert value("idstore_dns_responses", "idstore_dns_responses_total", rcode="NXDOMAIN") >= 1
    assert value("idstore_dns_responses", "idstore_dns_responses_total", rcode="NOERROR") >= 3
    assert families["idstore_dns_request_duration_seconds"].type == "histogram"
    # The server times one answer in N (stats.durations.every) and scales the counts.
    timed = value(
        "idstore_dns_request_duration_seconds", "idstore_dns_request_duration_seconds_count"
    )
    assert timed >= 4 and timed % 1 == 0
    assert (
        value("idstore_dns_request_duration_seconds", "idstore_dns_request_duration_seconds_sum")
        > 0
    )
    assert value("idstore_slot_held", pool="worker") == 1
    assert value("idstore_slot_state", pool="worker", state="held") == 1
    assert value("idstore_store_connected", backend=three.backend) == 1
    assert value("idstore_claim_attempts", "idstore_claim_attempts_total", pool="worker") >= 1
    assert value("idstore_pool_slots_used", pool="worker") == 3
    assert value("idstore_pool_slots_used", pool="ps") == 1
    assert value("idstore_pool_slots_limit", pool="worker") == LIMIT
    assert value("idstore_build_info", version=__import__("idstore").__version__) == 1
    changes = "idstore_store_state_changes"
    assert value(changes, changes + "_total", state="connected") >= 1
    assert all(name.startswith("idstore_") for name in families)


def test_sighup_reloads_ttl_and_log_level_keeps_the_slot(ops: Ops) -> None:
    n = ops.node("w-a")
    n.wait_claimed(60)
    # The claim is logged when the store confirms it; the node's own view learns of it
    # through the watch a moment later.
    wait_for(lambda: bool(query(n.port, "worker0.tf.local").answer), 10, "worker0 in the view")
    assert {rr.ttl for rr in query(n.port, "worker0.tf.local").answer} == {1}
    text = ops.config.read_text()
    ops.config.write_text(
        'log_level = "debug"\n'
        + text.replace("[dns]\nttl = 1", "[dns]\nttl = 7").replace("ttl = 3.0", "ttl = 4.0")
    )  # the session TTL (3 -> 4) cannot change live
    n.send(signal.SIGHUP)
    wait_for(lambda: "SIGHUP: reloaded" in n.log(), 10, "the reload to be logged")
    log = n.log()
    assert "log_level info -> debug" in log and "dns.ttl 1 -> 7" in log
    assert "needs a restart: store" in log
    assert {rr.ttl for rr in query(n.port, "worker0.tf.local").answer} == {7}
    assert http_get(ops.http["w-a"], "/ready")[0] == 200
    assert n.log().count("claimed slot") == 1

    ops.config.write_text("this is not toml [")
    n.send(signal.SIGHUP)
    wait_for(lambda: "configuration not reloaded" in n.log(), 10, "the rejected reload")
    assert addresses_of(n.port, "worker0.tf.local") == {"192.0.2.1"}
    assert n.stop() == 0


def test_sd_notify_ready_once_claimed_and_stopping(ops: Ops, tmp_path: Path) -> None:
    path = f"/tmp/idstore-notify-{uuid.uuid4().hex[:8]}"  # short: AF_UNIX paths max 108
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(60)
    try:
        n = NodeProcess(
            [*ops.flags("sd"), "--address", "192.0.2.9"],
            name="sd",
            env={"NOTIFY_SOCKET": path},
            workdir=tmp_path,
        ).start()
        ops.nodes.append(n)
        messages = []
        while not any("READY=1" in m for m in messages):
            messages.append(sock.recv(4096).decode())
        ready = next(m for m in messages if "READY=1" in m)
        assert "STATUS=holding worker0.tf.local." in ready
        n.wait_claimed(10)  # READY came with the claim
        n.send(signal.SIGHUP)
        assert "RELOADING=1" in sock.recv(4096).decode()
        n.stop()
        rest = []
        while not any("STOPPING=1" in m for m in rest):
            rest.append(sock.recv(4096).decode())
    finally:
        sock.close()
        os.unlink(path)


def test_idetcd_corefile_serves_and_names_start_at_1(etcd_server: Any, tmp_path: Path) -> None:
    core = tmp_path / "Corefile"
    core.write_text(
        ". {\n"
        "    idetcd {\n"
        f"        endpoint {' '.join(etcd_server.endpoints)}\n"
        "        limit 5\n"
        "        pattern worker{{.ID}}.tf.local.\n"
        "    }\n"
        "}\n"
    )
    env = {"IDSTORE_CLUSTER": f"core{uuid.uuid4().hex[:6]}"}
    with NodeProcess(
        ["--corefile", str(core), "--node-id", "legacy", "--address", "192.0.2.50"],
        name="corefile",
        env=env,
        workdir=tmp_path,
    ) as n:
        line = n.wait_claimed(60)
        assert "slot 1 of pool worker: worker1.tf.local." in line
        wait_for(lambda: addresses_of(n.port, "worker1.tf.local") == {"192.0.2.50"}, 10, "worker1")
        who = subprocess.run(
            [sys.executable, "-m", "idstore", "whoami", "--json", "--corefile", str(core),
             "--node-id", "legacy"],
            capture_output=True, text=True, timeout=60, env={**os.environ, **env},
        )  # fmt: skip
        assert who.returncode == 0, who.stderr
        assert json.loads(who.stdout)["name"] == "worker1.tf.local."
        assert n.stop() == 0


def test_serve_http_port_in_use_is_one_line_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = run("serve", "--backend", "memory", "--address", "192.0.2.1",
                "--listen", f"{HOST}:{free_dns_port()}", "--http", f"{HOST}:{port}")  # fmt: skip
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("idstore: error: cannot bind the HTTP listener")
    assert "Traceback" not in r.stderr


def test_json_logs_and_log_queries(tmp_path: Path) -> None:
    with NodeProcess(
        ["--backend", "memory", "--pattern", "worker{{.ID}}.tf.local.", "--address",
         "192.0.2.1", "--log-format", "json", "--log-queries"],
        name="jsonlog", workdir=tmp_path,
    ) as n:  # fmt: skip
        n.wait_claimed()
        query(n.port, "worker0.tf.local", "A")
        wait_for(lambda: "query udp worker0.tf.local." in n.log(), 10, "the query log line")
        for line in n.log().splitlines():
            obj = json.loads(line)
            assert set(obj) >= {"ts", "level", "logger", "msg"}


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = (Path(__file__).parents[2] / "contrib/systemd/idstore.service").read_text()
    # The unit names /usr/local/bin/idstore; verify checks that ExecStart exists, so
    # point it at the idstore installed here.
    exe = shutil.which("idstore") or sys.executable
    target = tmp_path / "idstore.service"
    target.write_text(unit.replace("/usr/local/bin/idstore", exe))
    r = subprocess.run([analyze, "verify", str(target)], capture_output=True, text=True,
                       timeout=60)  # fmt: skip
    out = r.stdout + r.stderr
    if r.returncode != 0 and ("Failed to" in out and "bus" in out.lower()):
        pytest.skip(f"systemd-analyze cannot run in this container: {out.strip()[:200]}")
    assert r.returncode == 0, out
    assert "idstore.service" not in out, out  # verify prints only problems
