"""Where ``whoami``, ``wait`` and ``env`` read the cluster: the local server or the store.

The local server's answer is its ``/status`` document, parsed by the one schema the
server writes it with (idstore.status.NodeStatus).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from idstore import backends
from idstore.backends.base import SlotStore
from idstore.config import Settings
from idstore.errors import StoreError
from idstore.launch import Snapshot
from idstore.status import MemberInfo, NodeStatus


class StatusUnavailable(StoreError, OSError):
    """The local server's /status did not answer."""


@contextmanager
def cluster_reader(settings: Settings, explicit_http: bool) -> Iterator[Callable[[], Snapshot]]:
    """A function returning the cluster as seen now: from the local server's /status when
    its address is known (``--http``, or ``http`` in the config with a server answering
    there), else from the store through a short session of our own."""
    if settings.http is not None:
        url = status_url(*settings.http)
        if _answers(url, explicit_http):
            yield lambda: snapshot_from_status(fetch_status(url), url)
            return
    store = backends.create(settings.backend, settings.store)
    store.open()
    try:
        yield lambda: snapshot_from_store(settings, store)
    finally:
        store.close(release=True)


def status_url(host: str, port: int) -> str:
    """Where the local server answers: a wildcard bind is reached over loopback."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "localhost": "127.0.0.1"}.get(host, host)
    return f"http://[{host}]:{port}/status" if ":" in host else f"http://{host}:{port}/status"


def fetch_status(url: str) -> NodeStatus:
    """The local server's /status; OSError when it does not answer (as a StoreError
    would from the store, so ``wait`` keeps going through a restart of the server)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return NodeStatus.from_json(json.load(resp))
    except (OSError, ValueError) as e:
        raise StatusUnavailable(f"{url}: {_reason(e)}") from e


def _answers(url: str, required: bool) -> bool:
    try:
        fetch_status(url)
    except (OSError, ValueError) as e:
        if required:
            raise StoreError(f"no idstore serve answers at {_reason(e)}") from None
        return False
    return True


def _reason(e: Exception) -> str:
    return str(e.reason) if isinstance(e, urllib.error.URLError) else str(e)


def snapshot_from_status(status: NodeStatus, source: str) -> Snapshot:
    return Snapshot(
        node_id=status.node_id,
        members={pool: list(ms) for pool, ms in status.cluster.items()},
        me=status.me,
        state=status.state,
        source=source,
        extra={"pool": status.pool},
    )


def snapshot_from_store(settings: Settings, store: SlotStore) -> Snapshot:
    members: dict[str, list[MemberInfo]] = {}
    for p in settings.pools:
        claims = sorted(store.list(p.name).claims.values(), key=lambda c: c.slot)
        members[p.name] = [
            MemberInfo(
                p.name,
                c.slot,
                p.name_of(c.slot),
                c.record.addresses,
                c.record.node_id,
                dict(c.record.ports),
            )
            for c in claims
            if c.slot in p.slots()
        ]
    mine = [m for ms in members.values() for m in ms if m.node_id == settings.node_id]
    # The node's own pool first: with a duplicated identity, that is the claim it serves.
    mine.sort(key=lambda m: m.pool != settings.pool)
    me = mine[0] if mine else None
    return Snapshot(
        node_id=settings.node_id,
        members=members,
        me=me,
        state="held" if me else "none",
        source="store",
        extra={"pool": settings.pool},
    )
