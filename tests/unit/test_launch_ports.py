"""Launch values with per-node ports, torchrun's static rendezvous and interface, and the
hostfile and json formats."""

from __future__ import annotations

import json

import pytest

from idstore import config, launch
from idstore.errors import IdstoreError
from idstore.launch import MemberInfo, Snapshot

POOLS = config.load(
    raw={
        "pools": {
            "worker": {
                "pattern": "worker{{.ID}}.tf.internal.",
                "limit": 8,
                "ports": {"grpc": "20000-20999", "master": 29400},
            }
        }
    },
    environ={},
).pools


def member(slot: int, port: int | None) -> MemberInfo:
    ports = {"grpc": port, "master": 29400} if port else {}
    name = f"worker{slot}.tf.internal."
    return MemberInfo("worker", slot, name, ("192.0.2.1",), f"n{slot}", ports)


def snap(me: int, ports: dict[int, int | None]) -> Snapshot:
    members = [member(s, p) for s, p in sorted(ports.items())]
    return Snapshot("n", {"worker": members}, next(m for m in members if m.slot == me), "held")


def test_tf_config_lists_every_member_with_its_own_port() -> None:
    doc = launch.tf_config(POOLS, snap(1, {0: 20017, 1: 20444, 2: 20001}))
    assert doc["cluster"]["worker"] == [
        "worker0.tf.internal:20017",
        "worker1.tf.internal:20444",
        "worker2.tf.internal:20001",
    ]


def test_a_member_without_its_port_is_named_in_the_error() -> None:
    with pytest.raises(IdstoreError, match=r"worker0\.tf\.internal publishes no grpc port"):
        launch.tf_config(POOLS, snap(1, {0: None, 1: 20444}))


def test_torchrun_master_port_is_the_masters_named_port_and_rendezvous_static() -> None:
    values = launch.torchrun(POOLS, snap(2, {0: 20017, 2: 20001}), "eth0")
    assert values["MASTER_PORT"] == values["PET_MASTER_PORT"] == "29400"
    assert values["PET_RDZV_BACKEND"] == "static"
    assert values["GLOO_SOCKET_IFNAME"] == values["NCCL_SOCKET_IFNAME"] == "eth0"
    assert values["TP_SOCKET_IFNAME"] == "eth0"
    no_if = launch.torchrun(POOLS, snap(2, {0: 20017, 2: 20001}))
    assert not any(k.endswith("_SOCKET_IFNAME") for k in no_if)


def test_torchrun_master_port_without_a_master_port_is_the_masters_primary() -> None:
    pools = config.load(
        raw={"pools": {"w": {"pattern": "w{{.ID}}.x.internal.", "port": "auto"}}}, environ={}
    ).pools
    ms = [MemberInfo("w", s, f"w{s}.x.internal.", (), "", {"grpc": 21000 + s}) for s in (0, 1)]
    values = launch.torchrun(pools, Snapshot("n", {"w": ms}, ms[1], "held"))
    assert values["MASTER_PORT"] == "21000"  # the master's own port, not this node's


def test_identity_has_this_nodes_ports() -> None:
    values = launch.identity(snap(1, {0: 20017, 1: 20444}), POOLS)
    assert values["IDSTORE_PORT"] == "20444"
    assert values["IDSTORE_PORT_GRPC"] == "20444" and values["IDSTORE_PORT_MASTER"] == "29400"


def test_hostfile_one_line_per_member() -> None:
    out = launch.render("hostfile", POOLS, snap(1, {0: 20017, 1: 20444}), slots=4)
    assert out == "worker0.tf.internal slots=4\nworker1.tf.internal slots=4\n"


def test_json_holds_everything_env_knows() -> None:
    doc = json.loads(launch.render("json", POOLS, snap(1, {0: 20017, 1: 20444}), "eth0"))
    assert doc["node"]["IDSTORE_NAME"] == "worker1.tf.internal"
    assert doc["ports"] == {"grpc": 20444, "master": 29400}
    assert doc["interface"] == "eth0"
    assert doc["tf_config"]["task"] == {"type": "worker", "index": 1}
    assert doc["torchrun"]["PET_RDZV_BACKEND"] == "static"
    assert [(m["host"], m["port"]) for m in doc["members"]["worker"]] == [
        ("worker0.tf.internal", 20017),
        ("worker1.tf.internal", 20444),
    ]


def test_interface_of_a_local_address_and_of_a_foreign_one() -> None:
    from idstore.addresses import interface_of

    assert interface_of(["127.0.0.1"]) == "lo"
    assert interface_of(["192.0.2.77"]) is None  # TEST-NET: on no interface of this host
