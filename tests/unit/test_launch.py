"""TF_CONFIG, torchrun values and shell exports rendered from a cluster snapshot."""

from __future__ import annotations

import json
import subprocess

import pytest

from idstore import config, launch
from idstore.errors import ConfigError
from idstore.launch import MemberInfo, Snapshot

SETTINGS = config.load(
    raw={
        "pools": {
            "ps": {"pattern": "ps{{.ID}}.tf.local.", "limit": 2, "port": 2223},
            "worker": {"pattern": "worker{{.ID}}.tf.local.", "limit": 8, "port": 2222},
        }
    },
    environ={},
)


def member(pool: str, slot: int, addr: str = "192.0.2.1") -> MemberInfo:
    return MemberInfo(pool, slot, f"{pool}{slot}.tf.local.", (addr,), f"{pool}-{slot}")


def snap(me: MemberInfo | None, workers: list[int], ps: list[int] | None = None) -> Snapshot:
    members = {
        "worker": [member("worker", s) for s in workers],
        "ps": [member("ps", s) for s in (ps or [])],
    }
    return Snapshot("me", members, me, "held" if me else "none")


def test_tf_config_lists_every_pool_with_ports_and_the_task_index() -> None:
    doc = launch.tf_config(SETTINGS.pools, snap(member("worker", 2), [0, 1, 2], [0]))
    assert doc == {
        "cluster": {
            "ps": ["ps0.tf.local:2223"],
            "worker": ["worker0.tf.local:2222", "worker1.tf.local:2222", "worker2.tf.local:2222"],
        },
        "task": {"type": "worker", "index": 2},
    }


def test_index_is_the_position_in_the_list_when_the_pool_has_a_hole() -> None:
    doc = launch.tf_config(SETTINGS.pools, snap(member("worker", 3), [0, 3]))
    assert doc["cluster"]["worker"] == ["worker0.tf.local:2222", "worker3.tf.local:2222"]
    assert doc["task"] == {"type": "worker", "index": 1}
    assert "ps" not in doc["cluster"]  # no member yet: TensorFlow rejects empty jobs


def test_this_node_is_listed_even_if_the_listing_predates_its_claim() -> None:
    doc = launch.tf_config(SETTINGS.pools, snap(member("worker", 1), [0]))
    assert doc["cluster"]["worker"][1] == "worker1.tf.local:2222"


def test_torchrun_master_is_the_lowest_slot_of_the_pool() -> None:
    values = launch.torchrun(SETTINGS.pools, snap(member("worker", 1), [0, 1, 2]))
    assert values["NNODES"] == "3"
    assert values["NODE_RANK"] == "1"
    assert values["MASTER_ADDR"] == "worker0.tf.local"
    assert values["MASTER_PORT"] == "2222"
    assert values["PET_NODE_RANK"] == "1"


def test_torchrun_port_defaults_to_torchruns_own() -> None:
    pools = config.load(raw={"pools": {"w": {"pattern": "w{{.ID}}.x."}}}, environ={}).pools
    s = Snapshot("me", {"w": [MemberInfo("w", 0, "w0.x.")]}, MemberInfo("w", 0, "w0.x."))
    assert launch.torchrun(pools, s)["MASTER_PORT"] == "29500"


def test_no_slot_is_an_error() -> None:
    for fmt in launch.FORMATS:
        with pytest.raises(launch.NoSlot, match="holds no slot"):
            launch.render(fmt, SETTINGS.pools, snap(None, [0, 1]))


def test_tf_config_needs_the_pool_port() -> None:
    pools = config.load(raw={"pools": {"w": {"pattern": "w{{.ID}}.x."}}}, environ={}).pools
    s = Snapshot("me", {"w": [MemberInfo("w", 0, "w0.x.")]}, MemberInfo("w", 0, "w0.x."))
    with pytest.raises(ConfigError, match=r"pools\.w\.port"):
        launch.tf_config(pools, s)


def test_shell_exports_survive_eval_in_bash() -> None:
    me = MemberInfo("worker", 1, "worker1.tf.local.", ("192.0.2.2", "2001:db8::2"), "it's $me")
    out = launch.render("shell", SETTINGS.pools, snap(me, [0, 1], [0]))
    assert all(line.startswith("export ") for line in out.splitlines())
    script = out + 'printf "%s\\n" "$TF_CONFIG" "$IDSTORE_NAME" "$IDSTORE_ADDRESSES" "$NODE_RANK"'
    result = subprocess.run(["bash", "-c", f'eval "$(cat <<"EOF_"\n{out}EOF_\n)"; {script}'],
                            capture_output=True, text=True, check=True)  # fmt: skip
    tf, name, addrs, rank = result.stdout.splitlines()
    assert json.loads(tf)["task"] == {"type": "worker", "index": 1}
    assert (name, addrs, rank) == ("worker1.tf.local", "192.0.2.2,2001:db8::2", "1")


def test_tf_config_format_is_one_json_line() -> None:
    out = launch.render("tf-config", SETTINGS.pools, snap(member("worker", 0), [0]))
    assert out.count("\n") == 1
    assert json.loads(out)["task"]["index"] == 0
