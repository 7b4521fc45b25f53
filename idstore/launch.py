"""From claimed names to a running job: TF_CONFIG, torchrun values and shell exports.

Everything here is a pure function of a :class:`Snapshot` (who holds which slot, and which
one is this node), so the same output comes whether the snapshot was read from the store
or from the local server's ``/status``.

Decisions (documented in the README):
- job types are pool names; a pool's list holds its members' names, without the trailing
  dot, sorted by slot, each with its own primary port (``name:port``): the one its claim
  publishes (``auto``, a range), else the pool's fixed ``port``;
- a node's index / rank is its position in its pool's list, which equals ``slot - first``
  while the pool is dense (run ``idstore wait`` first so every node sees the same list);
- torchrun's master is the lowest-slot member of this node's pool; ``MASTER_PORT`` is
  that member's port named ``master`` when the pool names one, else its primary port,
  else torchrun's own default 29500; ``PET_RDZV_BACKEND=static``, because torchrun
  ignores the node rank with any other rendezvous backend;
- the ``*_SOCKET_IFNAME`` values name the interface holding this node's published
  address (given by the caller, which looks on the host it runs on): gloo otherwise
  picks the interface the host name resolves to, loopback in many containers;
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

FORMATS = ("tf-config", "torchrun", "shell", "hostfile", "json")
TORCHRUN_DEFAULT_PORT = 29500  # torchrun's own default for --master-port
MASTER_PORT_NAME = "master"  # a pool's port of this name is torchrun's master port
# Each library's variable naming the interface to use: gloo, NCCL, TensorPipe (RPC).
IFNAME_VARS = ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME", "TP_SOCKET_IFNAME")


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
        if not pool.ports:
            raise ConfigError(
                f"pools.{pool.name}.port", None, "must be set: TF_CONFIG lists host:port"
            )
        cluster[pool.name] = [f"{m.host}:{_port_of(pool, m)}" for m in members]
    return {"cluster": cluster, "task": {"type": me.pool, "index": index_of(snap, me)}}


def _port_of(pool: PoolSettings, m: MemberInfo, name: str | None = None) -> int:
    port = pool.member_port(m.ports, name)
    if port is None:
        raise IdstoreError(
            f"{m.host} publishes no {name or pool.service} port (pools.{pool.name}.port is "
            f"chosen per node; a node of an older idstore does not publish it): restart it"
        )
    return port


def _pool(pools: Sequence[PoolSettings], name: str) -> PoolSettings | None:
    return next((p for p in pools if p.name == name), None)


def torchrun(
    pools: Sequence[PoolSettings], snap: Snapshot, ifname: str | None = None
) -> dict[str, str]:
    me = _require_me(snap)
    members = _members_with_me(snap, me)
    pool = _pool(pools, me.pool)
    port = TORCHRUN_DEFAULT_PORT
    if pool is not None and pool.ports:
        named = pool.port_spec(MASTER_PORT_NAME) is not None
        port = _port_of(pool, members[0], MASTER_PORT_NAME if named else None)
    values = {
        "NNODES": str(len(members)),
        "NODE_RANK": str([m.slot for m in members].index(me.slot)),
        "MASTER_ADDR": members[0].host,
        "MASTER_PORT": str(port),
    }
    # torchrun reads its options from PET_<OPTION> when the flag is not given, so a plain
    # `torchrun train.py` after eval needs no flags at all.
    out = values | {f"PET_{k}": v for k, v in values.items()} | {"PET_RDZV_BACKEND": "static"}
    if ifname is not None:
        out |= {var: ifname for var in IFNAME_VARS}
    return out


def identity(snap: Snapshot, pools: Sequence[PoolSettings] = ()) -> dict[str, str]:
    me = _require_me(snap)
    out = {
        "IDSTORE_POOL": me.pool,
        "IDSTORE_SLOT": str(me.slot),
        "IDSTORE_INDEX": str(index_of(_with_me(snap, me), me)),
        "IDSTORE_NAME": me.host,
        "IDSTORE_ADDRESSES": ",".join(me.addresses),
    }
    pool = _pool(pools, me.pool)
    if pool is not None and pool.ports:
        primary = pool.member_port(me.ports)
        if primary is not None:
            out["IDSTORE_PORT"] = str(primary)
        for spec in pool.ports:
            port = pool.member_port(me.ports, spec.name)
            if port is not None:
                out[f"IDSTORE_PORT_{spec.name.upper().replace('-', '_')}"] = str(port)
    return out


def hostfile(pools: Sequence[PoolSettings], snap: Snapshot, slots: int = 1) -> str:
    """DeepSpeed / MPI style: ``name slots=N``, one line per member of this node's pool."""
    me = _require_me(snap)
    return "".join(f"{m.host} slots={slots}\n" for m in _members_with_me(snap, me))


def everything(
    pools: Sequence[PoolSettings], snap: Snapshot, ifname: str | None = None
) -> dict[str, Any]:
    """All that ``env`` knows, for launchers it has no format for."""
    me = _require_me(snap)
    snap = _with_me(snap, me)
    try:
        tf: dict[str, Any] | None = tf_config(pools, snap)
    except IdstoreError:  # no ports: everything else still holds
        tf = None
    by_pool = {p.name: p for p in pools}
    return {
        "node": identity(snap, pools),
        "ports": dict(me.ports),
        "interface": ifname,
        "members": {
            pool: [
                m.to_json() | {"host": m.host, "port": _member_primary(by_pool.get(pool), m)}
                for m in ms
            ]
            for pool, ms in snap.members.items()
        },
        "tf_config": tf,
        "torchrun": torchrun(pools, snap, ifname),
    }


def _member_primary(pool: PoolSettings | None, m: MemberInfo) -> int | None:
    return pool.member_port(m.ports) if pool is not None else None


def exports(values: Mapping[str, str]) -> str:
    """``export K=V`` lines, quoted so that ``eval "$(...)"`` sets exactly these values."""
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in values.items())


def render(
    fmt: str,
    pools: Sequence[PoolSettings],
    snap: Snapshot,
    ifname: str | None = None,
    slots: int = 1,
) -> str:
    """``fmt`` of FORMATS; ``ifname``: the interface holding this node's address."""
    if fmt == "tf-config":
        return json.dumps(tf_config(pools, snap), separators=(",", ":")) + "\n"
    if fmt == "torchrun":
        return exports(torchrun(pools, snap, ifname))
    if fmt == "shell":
        values = identity(snap, pools)
        values["TF_CONFIG"] = json.dumps(tf_config(pools, snap), separators=(",", ":"))
        return exports(values | torchrun(pools, snap, ifname))
    if fmt == "hostfile":
        return hostfile(pools, snap, slots)
    if fmt == "json":
        return json.dumps(everything(pools, snap, ifname), indent=2) + "\n"
    raise ConfigError("format", fmt, f"must be one of {', '.join(FORMATS)}")


def _with_me(snap: Snapshot, me: MemberInfo) -> Snapshot:
    members = dict(snap.members)
    members[me.pool] = _members_with_me(snap, me)
    return Snapshot(snap.node_id, members, me, snap.state, snap.source, snap.extra)
