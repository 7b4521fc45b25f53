"""The walking skeleton as a new user tries it: one node on the embedded store, real DNS."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys

import pytest

from tests.harness.nodes import NodeProcess, is_authoritative, query, rcode, wait_for

PATTERN = "worker{{.ID}}.tf.local."


@pytest.fixture
def node() -> NodeProcess:
    args = [
        "--backend",
        "memory",
        "--pattern",
        PATTERN,
        "--address",
        "192.0.2.10",
        "--address",
        "2001:db8::10",
        "--node-id",
        "skeleton",
    ]
    with NodeProcess(args, name="skeleton") as n:
        n.wait_claimed()
        # The claim line comes when the store confirms; the view learns it via the watch.
        wait_for(lambda: bool(query(n.port, "worker0.tf.local").answer), 10, "worker0 answers")
        yield n


def test_claimed_name_answers_authoritatively(node: NodeProcess) -> None:
    line = node.wait_claimed()
    for part in ("slot 0", "pool worker", "worker0.tf.local.", "192.0.2.10", "backend memory"):
        assert part in line
    r = query(node.port, "worker0.tf.local", "A")
    assert rcode(r) == "NOERROR" and is_authoritative(r)
    assert [rd.to_text() for rd in r.answer[0]] == ["192.0.2.10"]
    r6 = query(node.port, "worker0.tf.local", "AAAA", tcp=True)
    assert [rd.to_text() for rd in r6.answer[0]] == ["2001:db8::10"]


def test_negative_answers(node: NodeProcess) -> None:
    nx = query(node.port, "worker5.tf.local", "A")
    assert rcode(nx) == "NXDOMAIN" and is_authoritative(nx)
    assert nx.authority and nx.authority[0].rdtype == 6  # SOA
    nodata = query(node.port, "worker0.tf.local", "MX")
    assert rcode(nodata) == "NOERROR" and not nodata.answer and nodata.authority[0].rdtype == 6
    refused = query(node.port, "example.com", "A")
    assert rcode(refused) == "REFUSED"


def test_apex_and_case(node: NodeProcess) -> None:
    soa = query(node.port, "tf.local", "SOA")
    assert soa.answer and soa.answer[0].rdtype == 6 and is_authoritative(soa)
    ns = query(node.port, "tf.local", "NS")
    assert ns.answer and ns.answer[0].rdtype == 2
    mixed = query(node.port, "WoRkEr0.Tf.LoCaL", "A")
    assert mixed.question[0].name.to_text() == "WoRkEr0.Tf.LoCaL."
    assert [rd.to_text() for rd in mixed.answer[0]] == ["192.0.2.10"]


@pytest.mark.skipif(shutil.which("dig") is None, reason="dig is not installed")
def test_dig(node: NodeProcess) -> None:
    out = subprocess.run(
        ["dig", "@127.0.0.1", "-p", str(node.port), "worker0.tf.local", "A", "+norecurse"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    assert "status: NOERROR" in out and " aa" in out.split("flags:")[1].split(";")[0]
    assert "192.0.2.10" in out


def test_malformed_packets_do_not_hurt_the_server(node: NodeProcess) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for junk in (
            b"",
            b"\x00",
            b"\x12\x34" + b"\xff" * 30,
            b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01",
        ):
            s.sendto(junk, ("127.0.0.1", node.port))
    r = query(node.port, "worker0.tf.local", "A")
    assert rcode(r) == "NOERROR"
    assert "Traceback" not in node.log()


def test_sigterm_releases_and_exits_zero(node: NodeProcess) -> None:
    assert node.stop(signal.SIGTERM) == 0
    assert "released worker0.tf.local." in node.log()
    assert "Traceback" not in node.log()


def test_sigint_exits_zero(node: NodeProcess) -> None:
    assert node.stop(signal.SIGINT) == 0


def test_cli_basics() -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "idstore", *args], capture_output=True, text=True, timeout=30
        )

    assert run("--version").stdout.startswith("idstore ")
    assert {"memory", "etcd", "zookeeper", "zk"} <= set(run("backends").stdout.split())
    bad = run("serve", "--pattern", "worker.tf.local")
    assert bad.returncode == 2 and "{{.ID}}" in bad.stderr and "Traceback" not in bad.stderr
    bad = run("serve", "--listen", "nonsense")
    assert bad.returncode == 2 and "--listen" not in bad.stderr and "dns.listen" in bad.stderr
