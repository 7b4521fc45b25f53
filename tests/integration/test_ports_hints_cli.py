"""Per-node ports and slot hints through real ``idstore serve`` processes on etcd: the
chosen port in whoami, env and SRV answers, kept across a crash and restart; a full
range is exit 1 naming the range; a taken hint falls back and names the holder."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness.nodes import NodeProcess, query

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def flags(etcd_server: Any) -> list[str]:
    return [
        "--backend", "etcd", "--endpoints", ",".join(etcd_server.endpoints),
        "--cluster", f"p{uuid.uuid4().hex[:8]}", "--ttl", "3",
        "--pattern", "worker{{.ID}}.tf.internal.", "--limit", "4",
        "--port", "30000-30999", "--address", "127.0.0.1",
    ]  # fmt: skip


@pytest.fixture
def nodes() -> Iterator[list[NodeProcess]]:
    made: list[NodeProcess] = []
    yield made
    for n in made:
        n.stop()


def idstore(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "idstore", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("spec", ["30000-30999", "auto"])
def test_port_published_sticky_and_served(
    flags: list[str], nodes: list[NodeProcess], spec: str
) -> None:
    """``auto`` is sticky only through the earlier claim (the kernel's pick is random)."""
    flags = [*flags, "--port", spec]
    hint = {"TEST_SCHED_INDEX": "2"}
    a = NodeProcess([*flags, "--node-id", "a", "--prefer-slot", "env:TEST_SCHED_INDEX"],
                    "a", env=hint)  # fmt: skip
    nodes.append(a.start())
    assert "claimed slot 2 " in a.wait_claimed()
    who = json.loads(idstore("whoami", "--json", "--node-id", "a", *flags).stdout)
    port = who["port"]
    assert who["slot"] == 2 and (spec == "auto" or 30000 <= port <= 30999)
    env = idstore("env", "--format", "shell", "--node-id", "a", *flags).stdout
    assert f"export IDSTORE_PORT={port}\n" in env
    assert f"worker2.tf.internal:{port}" in env  # TF_CONFIG
    srv = query(a.port, "_grpc._tcp.worker.tf.internal.", "SRV")
    assert [(rd.port, rd.target.to_text()) for rr in srv.answer for rd in rr] == [
        (port, "worker2.tf.internal.")
    ]
    a.kill()  # a crash: the claim lives on for the TTL
    again = NodeProcess([*flags, "--node-id", "a"], "a2")  # no hint: the sticky slot
    nodes.append(again.start())
    again.wait_claimed()
    who = json.loads(idstore("whoami", "--json", "--node-id", "a", *flags).stdout)
    assert (who["slot"], who["port"]) == (2, port)


def test_taken_hint_falls_back_and_names_the_holder(
    flags: list[str], nodes: list[NodeProcess]
) -> None:
    a = NodeProcess([*flags, "--node-id", "a", "--prefer-slot", "0"], "a")
    nodes.append(a.start())
    a.wait_claimed()
    b = NodeProcess([*flags, "--node-id", "b", "--prefer-slot", "0"], "b")
    nodes.append(b.start())
    assert "claimed slot 1 " in b.wait_claimed()
    assert "preferred slot 0 of pool worker (worker0.tf.internal.) is held by node a" in b.log()


def test_no_free_port_in_the_range_is_exit_1_naming_the_range(flags: list[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "idstore", "serve", *flags, "--port", f"{port}-{port}",
             "--listen", "127.0.0.1:0"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert out.returncode == 1, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("idstore: error: ") and f"range {port}-{port}" in last
    assert "Traceback" not in out.stderr
