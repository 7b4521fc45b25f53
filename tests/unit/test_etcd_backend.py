"""etcd-specific behaviour beyond the conformance suite, on real etcd servers."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from idstore.backends.base import (
    ConnectionState,
    SlotEvent,
    SlotRecord,
    StoreOptions,
)
from idstore.backends.etcd import EtcdStore, api
from idstore.backends.etcd.connection import parse_endpoint
from idstore.backends.etcd.keys import parse_slot
from idstore.backends.etcd.watch import pool_changed_after
from idstore.errors import BackendNotFound, ConfigError, SessionLost, StoreUnavailable
from tests.harness.etcd_server import EtcdCluster, EtcdServer, etcdctl, free_port
from tests.harness.waiting import wait_for

POOL = "worker"


def rec(node: str = "n1") -> SlotRecord:
    return SlotRecord(node_id=node, nonce=uuid.uuid4().hex, addresses=("192.0.2.1",))


@pytest.fixture(scope="module")
def server() -> Iterator[EtcdServer]:
    with EtcdServer() as s:
        yield s


@pytest.fixture
def stores(server: EtcdServer) -> Iterator[Callable[..., EtcdStore]]:
    made: list[EtcdStore] = []
    cluster = f"u{uuid.uuid4().hex[:8]}"

    def make(**kw: object) -> EtcdStore:
        opts = replace(StoreOptions(endpoints=server.endpoints, cluster=cluster), **kw)  # type: ignore[arg-type]
        store = EtcdStore(opts)
        store.open()
        made.append(store)
        return store

    yield make
    for s in made:
        s.close()


# -- pure helpers ------------------------------------------------------------------------


def test_endpoint_parsing() -> None:
    assert parse_endpoint("http://127.0.0.1:2379").target == "127.0.0.1:2379"
    assert parse_endpoint("https://[::1]:23790").target == "[::1]:23790"
    assert parse_endpoint("https://[::1]:23790").secure
    assert parse_endpoint("etcd.local").target == "etcd.local:2379"
    with pytest.raises(ConfigError):
        parse_endpoint("ftp://x:1")


def test_only_canonical_integer_keys_are_slots() -> None:
    p = b"/idstore/c/worker/"
    assert parse_slot(p + b"12", p) == 12
    assert parse_slot(p + b"0", p) == 0
    for bad in (b"012", b"x", b"1/queue", b"", b"-1"):
        assert parse_slot(p + bad, p) is None


def test_ttl_below_floor_is_refused() -> None:
    with pytest.raises(ConfigError, match="etcd does not grant"):
        EtcdStore(StoreOptions(endpoints=("http://127.0.0.1:1",), ttl=1.0))


@pytest.mark.parametrize("implementation", ["upb", "python"])
def test_loads_whatever_protobuf_the_process_has(implementation: str) -> None:
    """etcd3's generated modules need pure-Python protobuf; the backend never imports
    them, so it works after anything loaded protobuf first (upb) and with the slow one."""
    code = (
        "import google.protobuf.descriptor_pb2\n"  # protobuf loaded first, as any user may
        "from google.protobuf.internal import api_implementation\n"
        "from idstore.backends import backend_class\n"
        "from idstore.backends.etcd.api import load\n"
        "from idstore.backends.etcd.requests import created_at, txn\n"
        "backend_class('etcd')\n"
        "t = txn(compare=[created_at(b'k', 0)])\n"
        "assert load().message('etcdserverpb.TxnRequest').FromString(t.SerializeToString()) == t\n"
        "print(api_implementation.Type(), load().event_delete)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"}
    if implementation == "python":
        env["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "python"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [implementation, "1"]


def test_a_missing_etcd3_is_a_backend_not_found(monkeypatch: pytest.MonkeyPatch) -> None:
    api.load.cache_clear()
    monkeypatch.setattr(api.importlib.util, "find_spec", lambda name: None)
    try:
        with pytest.raises(BackendNotFound, match="etcd3"):
            api.load()
        with pytest.raises(BackendNotFound, match="etcd3"):
            EtcdStore(StoreOptions(endpoints=("http://127.0.0.1:1",)))
    finally:
        api.load.cache_clear()


def test_the_descriptor_is_read_without_running_the_module(tmp_path: Path) -> None:
    module = tmp_path / "x_pb2.py"
    module.write_text("raise SystemExit('never run')\nD = F(serialized_pb=_b('\\n\\x01x'))\n")
    assert api.embedded_descriptor(module) == b"\n\x01x"
    (tmp_path / "empty_pb2.py").write_text("x = 1\n")
    with pytest.raises(ValueError, match="serialized_pb"):
        api.embedded_descriptor(tmp_path / "empty_pb2.py")


# -- against one etcd --------------------------------------------------------------------


def test_open_with_no_reachable_endpoint_names_every_endpoint() -> None:
    dead = (f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}")
    store = EtcdStore(StoreOptions(endpoints=dead, connect_timeout=1.0, request_timeout=0.5))
    start = time.monotonic()
    with pytest.raises(StoreUnavailable) as info:
        store.open()
    # Gives up instead of hanging: a generous bound on a loaded machine, not a figure.
    assert time.monotonic() - start < 10.0
    for url in dead:
        assert url in str(info.value)
    assert store.state is ConnectionState.LOST


def test_open_fails_over_to_a_live_endpoint(server: EtcdServer) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    store = EtcdStore(StoreOptions(endpoints=(dead, *server.endpoints), connect_timeout=5.0))
    store.open()
    try:
        assert store.state is ConnectionState.CONNECTED
        store.claim(POOL, 0, rec())
    finally:
        store.close()


def test_write_under_revoked_lease_raises_session_lost(
    server: EtcdServer, stores: Callable[..., EtcdStore]
) -> None:
    store = stores(ttl=10.0)
    states: list[ConnectionState] = []
    store.add_listener(states.append)
    old = store.session_id
    etcdctl(server.endpoints, "lease", "revoke", old)
    with pytest.raises(SessionLost):
        store.claim(POOL, 0, rec())
    # The write's failure makes the keepalive thread go LOST at once, not at the next
    # renewal (3.3 s away with this TTL).
    wait_for(lambda: store.session_id not in ("", old), 2.0, "a new session")
    assert states[:2] == [ConnectionState.LOST, ConnectionState.CONNECTED]
    assert store.claim(POOL, 0, rec()).session == store.session_id


def test_list_skips_foreign_keys_and_unreadable_values(
    server: EtcdServer, stores: Callable[..., EtcdStore]
) -> None:
    store = stores()
    base = store.options.pool_path(POOL)
    etcdctl(server.endpoints, "put", f"{base}/queue/1", "x")
    etcdctl(server.endpoints, "put", f"{base}/7", "not json")
    etcdctl(server.endpoints, "put", f"{base}x/1", "other pool sharing a prefix")
    store.claim(POOL, 3, rec())
    assert set(store.list(POOL).claims) == {3}


def test_watch_from_compacted_revision_reports_broken(
    server: EtcdServer, stores: Callable[..., EtcdStore]
) -> None:
    store = stores()
    listing = store.list(POOL)
    c = store.claim(POOL, 0, rec())
    store.release(c)
    store.claim(POOL, 1, rec())
    rev = store.list(POOL).revision
    etcdctl(server.endpoints, "compact", str(rev))
    broken: list[str] = []
    store.watch(listing, lambda evs: None, broken.append)
    wait_for(lambda: bool(broken), 5.0, "on_broken after compaction")
    assert "compacted" in broken[0]


# -- store outages (own servers: these kill etcd) ----------------------------------------


def test_etcd_down_suspends_then_loses_then_recovers_with_new_session() -> None:
    ttl = 3.0
    with EtcdServer() as srv:
        store = EtcdStore(StoreOptions(endpoints=srv.endpoints, ttl=ttl, request_timeout=1.0))
        store.open()
        states: list[tuple[float, ConnectionState]] = []
        store.add_listener(lambda s: states.append((time.monotonic(), s)))
        broken: list[str] = []
        store.watch(store.list(POOL), lambda evs: None, broken.append)
        first = store.session_id
        store.claim(POOL, 0, rec("me"))
        try:
            killed = time.monotonic()
            srv.kill()
            wait_for(lambda: store.state is ConnectionState.SUSPENDED, ttl, "SUSPENDED")
            wait_for(lambda: store.state is ConnectionState.LOST, ttl + 1.0, "LOST")
            lost_after = states[-1][0] - killed
            # Lost is presumed no later than TTL after the last successful renewal.
            assert lost_after <= ttl + 0.5, lost_after
            with pytest.raises(SessionLost):
                store.claim(POOL, 1, rec("me"))
            wait_for(lambda: bool(broken), 2.0, "watch broken by the outage")
            srv.start()
            restarted = time.monotonic()
            wait_for(lambda: store.state is ConnectionState.CONNECTED, 10.0, "CONNECTED")
            back_after = time.monotonic() - restarted
            assert store.session_id not in ("", first)
            # The presumed-lost lease is not revoked (a restarted etcd extends leases, and
            # revoking would make the name vanish): the old claim may still be there, and
            # this node takes it back under its new session, fenced on its version.
            old = store.list(POOL).claims.get(0)
            if old is None:
                store.claim(POOL, 0, rec("me"))
            else:
                assert old.session == first
                assert store.reclaim(old, rec("me")).session == store.session_id
            assert store.list(POOL).claims[0].session == store.session_id
            print(f"\nLOST {lost_after:.2f}s after kill (TTL {ttl}); CONNECTED {back_after:.2f}s")
            print("states:", [(round(t - killed, 2), s.value) for t, s in states])
        finally:
            store.close()


def test_crashed_holder_key_deleted_near_ttl(
    server: EtcdServer, stores: Callable[..., EtcdStore]
) -> None:
    ttl = 2.0
    holder, peer = stores(ttl=ttl), stores()
    holder.claim(POOL, 0, rec("h"))
    gone = threading.Event()
    gone_at: list[float] = []

    def on_events(events: Sequence[SlotEvent]) -> None:
        if any(e.claim is None for e in events):
            gone_at.append(time.monotonic())
            gone.set()

    peer.watch(peer.list(POOL), on_events, print)
    # The holder asserts its slot until this moment (its last acknowledged renewal's send
    # time + the lease TTL): the store must not free the slot before it. A fixed fraction
    # of the TTL would instead depend on when the keepalive thread last ran.
    valid_until = holder.session_valid_until()
    crashed = time.monotonic()
    holder.close(release=False)
    assert gone.wait(ttl * 4)
    print(f"\nkey deleted {gone_at[0] - crashed:.2f}s after the holder crashed (TTL {ttl})")
    assert gone_at[0] >= valid_until, f"freed {valid_until - gone_at[0]:.2f}s early"


def test_failover_to_another_member_keeps_the_session() -> None:
    with EtcdCluster(size=3) as cluster:
        store = EtcdStore(StoreOptions(endpoints=cluster.endpoints, ttl=4.0, request_timeout=1.0))
        store.open()
        try:
            session = store.session_id
            store.claim(POOL, 0, rec("a"))
            cluster.kill(0)  # the member the store is talking to
            wait_for(lambda: _claims_ok(store), 10.0, "requests through another member")
            time.sleep(4.0)  # past a TTL: renewals must go through the new member
            assert store.session_id == session
            assert store.state is ConnectionState.CONNECTED
            assert store.list(POOL).claims[0].session == session
        finally:
            store.close()


def _claims_ok(store: EtcdStore) -> bool:
    try:
        store.list(POOL)
        return True
    except StoreUnavailable:
        return False


def test_watch_on_a_member_cut_off_from_quorum_reports_broken() -> None:
    with EtcdCluster(size=3) as cluster:
        opts = StoreOptions(
            endpoints=cluster.endpoints[:1],
            request_timeout=1.0,
            extra={"watch_check_interval": 1.0},
        )
        store = EtcdStore(opts)
        store.open()
        broken: list[str] = []
        store.watch(store.list(POOL), lambda evs: None, broken.append)
        peers = [m.proc for m in cluster.members[1:] if m.proc is not None]
        try:
            for p in peers:  # m0 stays up, its stream open, but it has no quorum
                p.send_signal(signal.SIGSTOP)
            took = wait_for(lambda: bool(broken), 6.0, "on_broken from a cut-off member")
            print(f"\nwatch on a cut-off member broken after {took:.2f}s: {broken[0]}")
        finally:
            for p in peers:
                p.send_signal(signal.SIGCONT)
            store.close(release=False)


def test_failed_renewals_are_retried_soon_and_keep_the_session(
    stores: Callable[..., EtcdStore],
) -> None:
    """Regression: a failed keepalive (a member just killed, an election, a channel closed
    by another request's failover) was retried only a whole TTL/3 later, so two failures
    in a row used up a 3 s lease: killing one member of three made every node LOST."""
    store = stores(ttl=3.0, request_timeout=1.0)
    session = store.session_id
    states: list[ConnectionState] = []
    store.add_listener(states.append)
    real = store._session._refresh_once
    calls: list[float] = []

    def flaky(lease: int, timeout: float) -> int:
        calls.append(time.monotonic())
        if len(calls) <= 2:
            raise StoreUnavailable("injected: the member we talk to just died")
        return real(lease, timeout)

    store._session._refresh_once = flaky  # type: ignore[method-assign]
    wait_for(lambda: len(calls) >= 3 and store.state is ConnectionState.CONNECTED, 6, "renewed")
    time.sleep(1.5)  # past the old deadline had the retries come a whole interval apart
    print(f"\nrenewal attempts {[round(t - calls[0], 2) for t in calls[:4]]} s after the first")
    assert ConnectionState.LOST not in states
    assert states[:2] == [ConnectionState.SUSPENDED, ConnectionState.CONNECTED]
    assert store.session_id == session


@pytest.mark.parametrize(
    "message", ["Cannot invoke RPC on closed channel!", "Cannot invoke RPC: Channel closed!"]
)
def test_grpc_closed_channel_errors_become_store_unavailable(
    stores: Callable[..., EtcdStore], message: str
) -> None:
    """Both of grpc's closed-channel ValueErrors are "unavailable" (a StoreError the
    keepalive loop handles). Regression: "Channel closed!", from a lease grant racing the
    store's close, escaped and killed the keepalive thread (suite run, chaos test)."""
    transport = stores()._transport

    def closed(conn: object, timeout: float) -> None:
        raise ValueError(message)

    with pytest.raises(StoreUnavailable, match=re.escape(message)):
        transport.rpc("grant a lease", closed)


def test_a_request_racing_a_failover_is_sent_on_the_new_channel(
    stores: Callable[..., EtcdStore],
) -> None:
    """Regression: a request that took the current connection just before another
    request's failover closed its channel raised grpc's ValueError ("Cannot invoke RPC on
    closed channel!"), which escaped every handler: it killed the keepalive thread in the
    middle of a quorum loss, and the store never opened a new session."""
    store = stores()
    transport = store._transport
    stale = transport.current()
    transport.use(transport.index)  # another thread's failover: a new channel, the old closed
    handed = iter([stale])
    current = transport.current
    transport.current = lambda: next(handed, None) or current()  # type: ignore[method-assign]
    assert store.list(POOL).claims == {}
    # A channel closed with nothing to move on to is "unavailable", like any other failure.
    transport.current = lambda: stale  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable, match="closed channel"):
        store.list(POOL)
    with pytest.raises(StoreUnavailable, match="closed channel"):
        pool_changed_after(stale, store._claims.keys.pool(POOL), 0, 1.0)
    transport.current = current  # type: ignore[method-assign]
