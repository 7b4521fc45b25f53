"""From claimed names to a running job: TF_CONFIG, torchrun values and shell exports.

Everything here is a pure function of a :class:`Snapshot` (who holds which slot, and which
one is this node), so the same output comes whether the snapshot was read from the store
or from the local server's ``/status``.

Decisions (documented in the README):
- job types are pool names; a pool's list holds its members' names, without the trailing
  dot, sorted by slot, each with the pool's ``port`` (``name:port``);
- a node's index / rank is its position in its pool's list, which equals ``slot - first``
  while the pool is dense (run ``idstore wait`` first so every node sees the same list);
- torchrun's master is the lowest-slot member of this node's pool; ``MASTER_PORT`` is the
  pool's ``port``, else torchrun's own default 29500;
- pools with no member yet are left out of TF_CONFIG (TensorFlow rejects empty jobs).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from idstore.config import PoolSettings
from idstore.errors import ConfigError, IdstoreError
from idstore.status import MemberInfo as MemberInfo  # re-exported: launch's input type

FORMATS = ("tf-config", "torchrun", "shell")
TORCHRUN_DEFAULT_PORT = 29500  # torchrun's own default for --master-port


class NoSlot(IdstoreError):
    """This node holds no slot, so there is nothing to export."""


@dataclass(frozen=True)
class Snapshot:
    """The cluster as one node sees it, plus that node's own state."""

    node_id: str
    members: Mapping[str, Sequence[MemberInfo]]  # pool -> members sorted by slot
    me: MemberInfo | None = None
    # held / waiting / lost / duplicate / starting from a running server; held / none
    # when read from the store (the store cannot tell waiting from not running).
    state: str = "none"
    source: str = "store"  # "store" or the URL of the local server
    extra: Mapping[str, Any] = field(default_factory=dict)

    def count(self, pool: str) -> int:
        return len(self.members.get(pool, ()))


def _require_me(snap: Snapshot) -> MemberInfo:
    if snap.me is None:
        raise NoSlot(f"this node (node id {snap.node_id!r}) holds no slot ({snap.state})")
    return snap.me


def index_of(snap: Snapshot, me: MemberInfo) -> int:
    return [m.slot for m in snap.members.get(me.pool, ())].index(me.slot)


def _members_with_me(snap: Snapshot, me: MemberInfo) -> list[MemberInfo]:
    """This node's pool as listed, with this node in it even if the listing predates it."""
    members = list(snap.members.get(me.pool, ()))
    if all(m.slot != me.slot for m in members):
        members = sorted([*members, me], key=lambda m: m.slot)
    return members


def tf_config(pools: Sequence[PoolSettings], snap: Snapshot) -> dict[str, Any]:
    me = _require_me(snap)
    snap = _with_me(snap, me)
    cluster: dict[str, list[str]] = {}
    for pool in pools:
        members = snap.members.get(pool.name, ())
        if not members:
            continue
        if pool.port is None:
            raise ConfigError(
                f"pools.{pool.name}.port", None, "must be set: TF_CONFIG lists host:port"
            )
        cluster[pool.name] = [f"{m.host}:{pool.port}" for m in members]
    return {"cluster": cluster, "task": {"type": me.pool, "index": index_of(snap, me)}}


def torchrun(pools: Sequence[PoolSettings], snap: Snapshot) -> dict[str, str]:
    me = _require_me(snap)
    members = _members_with_me(snap, me)
    port = next((p.port for p in pools if p.name == me.pool), None)
    values = {
        "NNODES": str(len(members)),
        "NODE_RANK": str([m.slot for m in members].index(me.slot)),
        "MASTER_ADDR": members[0].host,
        "MASTER_PORT": str(port or TORCHRUN_DEFAULT_PORT),
    }
    # torchrun reads its options from PET_<OPTION> when the flag is not given, so a plain
    # `torchrun train.py` after eval needs no flags at all.
    return values | {f"PET_{k}": v for k, v in values.items()}


def identity(snap: Snapshot) -> dict[str, str]:
    me = _require_me(snap)
    return {
        "IDSTORE_POOL": me.pool,
        "IDSTORE_SLOT": str(me.slot),
        "IDSTORE_INDEX": str(index_of(_with_me(snap, me), me)),
        "IDSTORE_NAME": me.host,
        "IDSTORE_ADDRESSES": ",".join(me.addresses),
    }


def exports(values: Mapping[str, str]) -> str:
    """``export K=V`` lines, quoted so that ``eval "$(...)"`` sets exactly these values."""
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in values.items())


def render(fmt: str, pools: Sequence[PoolSettings], snap: Snapshot) -> str:
    if fmt == "tf-config":
        return json.dumps(tf_config(pools, snap), separators=(",", ":")) + "\n"
    if fmt == "torchrun":
        return exports(torchrun(pools, snap))
    if fmt == "shell":
        values = identity(snap)
        values["TF_CONFIG"] = json.dumps(tf_config(pools, snap), separators=(",", ":"))
        return exports(values | torchrun(pools, snap))
    raise ConfigError("format", fmt, f"must be one of {', '.join(FORMATS)}")


def _with_me(snap: Snapshot, me: MemberInfo) -> Snapshot:
    members = dict(snap.members)
    members[me.pool] = _members_with_me(snap, me)
    return Snapshot(snap.node_id, members, me, snap.state, snap.source, snap.extra)
