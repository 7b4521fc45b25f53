"""ZooKeeper-specific behaviour the conformance suite cannot express: an outage.

kazoo only learns that its session expired after it reconnects; the backend must report
LOST by itself before the server could have expired the session and handed the slot to
someone else, and come back CONNECTED under a new session once the server returns.
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from idstore.backends.base import ConnectionState, SlotRecord, StoreOptions
from idstore.backends.zookeeper import LOST_AFTER, ZooKeeperStore, parse_endpoints
from idstore.backends.zookeeper.connection import tls_context
from idstore.errors import ConfigError, StoreError
from tests.harness.tls import make_pki
from tests.harness.waiting import wait_for as wait_until
from tests.harness.zk_server import ZooKeeperServer

TTL = 3.0


@pytest.fixture
def zk() -> Iterator[ZooKeeperServer]:
    # A private server: this test kills it.
    with ZooKeeperServer() as server:
        yield server


class StateLog:
    def __init__(self) -> None:
        self.entries: list[tuple[float, ConnectionState]] = []
        self.lock = threading.Lock()

    def __call__(self, state: ConnectionState) -> None:
        with self.lock:
            self.entries.append((time.monotonic(), state))

    def first(self, state: ConnectionState, after: float = 0.0) -> float | None:
        with self.lock:
            return next((t for t, s in self.entries if s is state and t >= after), None)


def test_outage_is_lost_locally_before_expiry_then_a_new_session(zk: ZooKeeperServer) -> None:
    store = ZooKeeperStore(zk.env().options(ttl=TTL, connect_timeout=10.0))
    states = StateLog()
    store.add_listener(states)
    store.open()
    try:
        old_session = store.session_id
        store.claim("worker", 0, SlotRecord("n1", "boot1"))

        killed = time.monotonic()
        zk.kill()
        wait_until(lambda: states.first(ConnectionState.SUSPENDED, killed), 5.0, "SUSPENDED")
        wait_until(lambda: states.first(ConnectionState.LOST, killed), 2 * TTL, "local LOST")
        lost_at = states.first(ConnectionState.LOST, killed)
        assert lost_at is not None
        # The server last heard from us at or before the kill, so it cannot expire the
        # session before killed + TTL: LOST must come before that (it is due at
        # LOST_AFTER of it; the rest is margin for a loaded machine).
        assert lost_at - killed < TTL, f"LOST after {lost_at - killed:.2f}s"

        zk.start()
        wait_until(lambda: store.state is ConnectionState.CONNECTED, 20.0, "CONNECTED again")
        assert store.session_id
        if store.session_id == old_session:
            # A restarted server restores its sessions: ours survived its presumed loss
            # and is kept, its claim with it (deleting that would make the name vanish).
            assert store.list("worker").claims[0].session == old_session
        else:
            # Expired meanwhile: the new session finds the slot free.
            wait_until(lambda: 0 not in store.list("worker").claims, 10.0, "old claim gone")
        again = store.claim("worker", 0, SlotRecord("n1", "boot1"))
        assert again.session == store.session_id
    finally:
        store.close()


def test_endpoints_become_a_connect_string_and_chroot() -> None:
    from idstore.backends.base import StoreOptions

    spec = parse_endpoints(StoreOptions(endpoints=("zk://10.0.0.1:2181", "10.0.0.2:2181/apps")))
    assert spec.hosts == "10.0.0.1:2181,10.0.0.2:2181"
    assert spec.root == "/apps"
    spec = parse_endpoints(
        StoreOptions(endpoints=("a:1,b:2",), extra={"chroot": "/x/y/"}),
    )
    assert (spec.hosts, spec.root) == ("a:1,b:2", "/x/y")


@pytest.mark.parametrize("ttl", [2.0, 3.0, 10.0, 60.0])
def test_reconnect_backoff_stays_well_inside_the_session(
    ttl: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: kazoo's pause between reconnect passes grew to 1 s (x1.4 jitter), so
    after a leader's loss the ensemble was back within a 3 s session but a client on the
    killed leader slept past the moment the session is presumed lost, and went LOST."""
    from kazoo.retry import KazooRetry

    from idstore.backends.base import StoreOptions
    from idstore.backends.zookeeper import connection
    from idstore.backends.zookeeper.session import SessionLog

    built: dict[str, object] = {}

    def client_spy(**kwargs: object) -> object:
        built.update(kwargs)
        return object()

    # kazoo keeps the retry it was given private: see what the store hands it instead.
    monkeypatch.setattr(connection, "KazooClient", client_spy)
    options = StoreOptions(ttl=ttl)
    handler = connection.Handler(None)
    connection.new_client(
        options, connection.parse_endpoints(options), handler, SessionLog(logging.getLogger()), None
    )
    retry = built["connection_retry"]
    assert isinstance(retry, KazooRetry)
    assert retry.max_tries == -1
    assert retry.max_delay <= min(1.0, ttl / 10)
    worst_pause = retry.max_delay * (1 + retry.max_jitter)
    assert worst_pause < ttl * LOST_AFTER / 4
    assert built["timeout"] == ttl and built["handler"] is handler


def test_a_connection_reset_event_on_a_slot_watch_is_ignored() -> None:
    """Regression: kazoo fires every armed data watch with a NONE event and no path when
    the connection drops; the slot watch read ``event.path.rsplit`` first and raised
    AttributeError in kazoo's callback thread (a traceback per slot on every failover)."""
    from kazoo.protocol.states import EventType, KeeperState, WatchedEvent

    from idstore.backends.base import Listing, StoreOptions
    from idstore.backends.dispatch import WatchRegistry
    from idstore.backends.zookeeper.watch import PoolWatch

    store = ZooKeeperStore(StoreOptions(ttl=TTL))
    watch = PoolWatch(
        store._io, Listing("worker", {}, 0), lambda evs: None, lambda why: None, WatchRegistry()
    )
    watch._on_data(WatchedEvent(EventType.NONE, KeeperState.CONNECTING, None))


def test_a_watch_reads_a_new_slot_once_and_delivers_each_change_once(
    zk: ZooKeeperServer,
) -> None:
    """After a children notification the watch sends the listing, then a read of the
    lowest free slot. A claim of that slot is delivered from that read (the listing
    adopts it: no second read); a claim above it needs a read after the listing. Each
    claim and release reaches the watcher once, in order."""
    from idstore.backends.base import EventType, SlotEvent

    options = zk.env().options(ttl=TTL, connect_timeout=10.0)  # one cluster for both
    watcher, claimer = ZooKeeperStore(options), ZooKeeperStore(options)
    batches: queue.Queue[list[tuple[EventType, int]] | str] = queue.Queue()

    def on_events(events: Sequence[SlotEvent]) -> None:
        batches.put([(e.type, e.slot) for e in events])

    watcher.open()
    claimer.open()
    try:
        handle = watcher.watch(watcher.list("pw"), on_events, batches.put)
        sent = watcher.wire_requests
        lowest = claimer.claim("pw", 0, SlotRecord("a", "0"))
        assert batches.get(timeout=10) == [(EventType.PUT, 0)]
        assert watcher.wire_requests - sent == 2  # the listing and the read behind it
        sent = watcher.wire_requests
        higher = claimer.claim("pw", 5, SlotRecord("b", "5"))
        assert batches.get(timeout=10) == [(EventType.PUT, 5)]
        # The listing, the read of slot 1 behind it (free), then the read of slot 5.
        assert watcher.wire_requests - sent == 3
        assert claimer.release(higher) and claimer.release(lowest)
        # Two releases in a row may come in one listing or two, delivered in one batch or
        # two (one batch of both: clean-clone run at 518a401). Deletions seen by one
        # listing share its revision and have no order among them, so the contract is
        # each release once, not their batching or order.
        released: list[tuple[EventType, int]] = []
        while len(released) < 2:
            batch = batches.get(timeout=10)
            assert not isinstance(batch, str), batch  # the watch's error callback
            released.extend(batch)
        assert sorted(released) == [(EventType.DELETE, 0), (EventType.DELETE, 5)]
        claimer.claim("pw", 1, SlotRecord("c", "1"))
        # Nothing was delivered twice: the next batch is the next change.
        assert batches.get(timeout=10) == [(EventType.PUT, 1)]
        handle.cancel()
    finally:
        claimer.close()
        watcher.close()


# -- TLS settings (no server needed: they are checked before any connection) ------------


def tls_store(**tls: str) -> ZooKeeperStore:
    return ZooKeeperStore(StoreOptions(endpoints=("127.0.0.1:1",), connect_timeout=1.0, **tls))


def test_tls_trusts_only_the_configured_ca_and_checks_the_host_name(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    store = tls_store(
        tls_ca=str(pki.ca), tls_cert=str(pki.client.cert), tls_key=str(pki.client.key)
    )
    context = tls_context(store.options)
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    # kazoo's own context would add the system's CAs: here it is ours alone.
    assert len(context.get_ca_certs()) == 1


@pytest.mark.parametrize(
    ("tls", "key"),
    [
        ({"tls_ca": "/nonexistent/ca.pem"}, "store.tls_ca"),
        ({"tls_cert": "/nonexistent/client.crt"}, "store.tls_cert"),  # no key given
        ({"tls_cert": "/nonexistent/c.crt", "tls_key": "/nonexistent/c.key"}, "store.tls_cert"),
    ],
)
def test_a_bad_tls_setting_is_a_config_error_naming_the_key(tls: dict[str, str], key: str) -> None:
    store = tls_store(**tls)
    with pytest.raises(ConfigError) as err:
        store.open()  # before any connection attempt: not "store unreachable"
    assert key in str(err.value)
    store.close()


# -- the session deadline, from what idstore observes through kazoo's public API ---------


def test_the_deadline_is_finite_and_idle_heartbeats_move_it(zk: ZooKeeperServer) -> None:
    store = ZooKeeperStore(zk.env().options(ttl=TTL, connect_timeout=10.0))
    assert store.session_valid_until() == 0.0  # no session yet
    store.open()
    try:
        first = store.session_valid_until()
        # Never past what the granted timeout allows from now, never infinite.
        assert time.monotonic() < first <= time.monotonic() + TTL * LOST_AFTER
        renewals = store.renewals
        sent = store.wire_requests
        # Idle: only idstore's own heartbeats can move it.
        wait_until(lambda: store.session_valid_until() > first + TTL / 2, 3 * TTL, "a heartbeat")
        assert store.session_valid_until() <= time.monotonic() + TTL * LOST_AFTER
        assert store.renewals > renewals
        assert store.wire_requests == sent, "heartbeats are keepalives, not requests"
    finally:
        store.close()
    assert store.session_valid_until() == 0.0


def test_a_session_shorter_than_the_ttl_bounds_the_deadline(zk: ZooKeeperServer) -> None:
    """The harness's server grants at most 60 s (maxSessionTimeout): a ttl of 90 s must
    not be believed."""
    ttl = 90.0
    store = ZooKeeperStore(zk.env().options(ttl=ttl, connect_timeout=10.0))
    store.open()
    try:
        assert store.session_valid_until() <= time.monotonic() + 60.0 * LOST_AFTER
    finally:
        store.close()


def test_a_kazoo_that_does_not_report_the_granted_timeout_fails_open(
    zk: ZooKeeperServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from idstore.backends.zookeeper.session import SessionLog

    monkeypatch.setattr(SessionLog, "log", logging.LoggerAdapter.log)  # as if never logged
    store = ZooKeeperStore(zk.env().options(ttl=TTL, connect_timeout=10.0))
    with pytest.raises(StoreError) as err:
        store.open()
    assert "negotiated session timeout" in str(err.value)
    assert store.state is ConnectionState.LOST and store.session_valid_until() == 0.0


def test_close_without_release_leaves_the_session_to_expire(zk: ZooKeeperServer) -> None:
    """A crash's close sends no closeSession: the claim outlives the client until the
    server expires the session (then the slot is free)."""
    options = zk.env().options(ttl=TTL, connect_timeout=10.0)
    holder, observer = ZooKeeperStore(options), ZooKeeperStore(options)
    holder.open()
    observer.open()
    try:
        holder.claim("worker", 0, SlotRecord("n1", "boot1"))
        holder.close(release=False)
        assert 0 in observer.list("worker").claims
        wait_until(lambda: 0 not in observer.list("worker").claims, 3 * TTL, "expiry")
    finally:
        holder.close()
        observer.close()


class _Request:
    """A kazoo async result that the test answers (or never does)."""

    def __init__(self) -> None:
        self.callbacks: list[object] = []
        self.ok = True

    def rawlink(self, callback: object) -> None:
        self.callbacks.append(callback)

    def successful(self) -> bool:
        return self.ok

    def answer(self, ok: bool = True) -> None:
        self.ok = ok
        for callback in self.callbacks:
            callback(self)  # type: ignore[operator]


class _Client:
    def __init__(self) -> None:
        self.requests: list[_Request] = []

    def exists_async(self, path: str) -> _Request:
        assert path == "/"
        self.requests.append(_Request())
        return self.requests[-1]


def test_heartbeats_prove_only_their_own_session_and_a_lost_one_holds_nothing_back() -> None:
    """kazoo drops requests still queued when a session expires, unanswered: such a
    heartbeat must not stop the next one. A late answer for an older session, or a
    failed one, must not move the deadline."""
    from idstore.backends.zookeeper.session import Session

    store = ZooKeeperStore(StoreOptions(ttl=TTL))
    session = Session(store, store._set_state, parse_endpoints(store.options), None, print)
    client = _Client()
    session.client, session.sid = client, 1  # type: ignore[assignment]
    store._set_state(ConnectionState.CONNECTED)

    session._heartbeat()
    session._heartbeat()  # one at a time
    assert len(client.requests) == 1
    first_sent = session._heartbeat_out
    assert first_sent is not None
    session.sid = 2  # the session was replaced; the heartbeat of 1 is never answered
    session._heartbeat()
    assert len(client.requests) == 2

    before = session.valid_until()
    client.requests[0].answer()  # late, for session 1
    client.requests[1].answer(ok=False)  # ConnectionLoss, say
    assert session.valid_until() == before
    assert store.renewals == 0
    session._heartbeat()
    client.requests[2].answer()
    assert session.valid_until() > before and store.renewals == 1
    # Never more than the timeout's share past the heartbeat's send time.
    assert session.valid_until() <= time.monotonic() + TTL * LOST_AFTER


class _SessionLog:
    def __init__(self, sid: int, granted: float) -> None:
        self.granted = (sid, granted)


class _StoppableClient:
    """What _on_connected reads of a kazoo client; stopping it would close the session."""

    def __init__(self, sid: int) -> None:
        self.client_id = (sid, b"")
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True

    def start_async(self) -> None:
        raise AssertionError("a surviving session must not be replaced")


def test_a_session_that_outlives_its_presumed_loss_is_kept_not_closed() -> None:
    """Presumed LOST (SUSPENDED past the deadline), the session then reconnects alive:
    closing it would delete its ephemerals, and every peer whose connection stayed up
    would answer NXDOMAIN for this node's names until it claimed again (chaos soak,
    seed 4242, a member's cable cut). It is kept; the holder hears CONNECTED and takes
    back its own claim."""
    from idstore.backends.zookeeper.session import Session

    store = ZooKeeperStore(StoreOptions(ttl=TTL))
    states = StateLog()
    store.add_listener(states)
    resets: list[str] = []
    session = Session(store, store._set_state, parse_endpoints(store.options), None, resets.append)
    client = _StoppableClient(7)
    session.client, session.session_log = client, _SessionLog(7, TTL)  # type: ignore[assignment]
    session._on_connected(time.monotonic())
    assert store.state is ConnectionState.CONNECTED and session.sid == 7

    store._set_state(ConnectionState.SUSPENDED)
    session._presume_lost()
    assert store.state is ConnectionState.LOST and session.valid_until() == 0.0

    session._on_connected(time.monotonic())  # the same session, back
    assert not client.stopped
    assert store.state is ConnectionState.CONNECTED and session.sid == 7
    assert session.valid_until() > time.monotonic()
    assert [s for _, s in states.entries][-2:] == [ConnectionState.LOST, ConnectionState.CONNECTED]
    assert resets[-1].startswith("reconnected")  # watches re-sync before CONNECTED is heard


class _Handler:
    def __init__(self) -> None:
        self.cuts = 0

    def cut(self) -> None:
        self.cuts += 1


@pytest.mark.parametrize("hosts, cuts", [("10.0.0.1:2181,10.0.0.2:2181", 1), ("10.0.0.1:2181", 0)])
def test_a_silent_server_is_left_for_another_once_per_heartbeat(hosts: str, cuts: int) -> None:
    """A heartbeat unanswered for FAILOVER_AFTER of the session: the socket is cut so
    kazoo moves the session to the next server long before it could expire (kazoo's own
    read timeout is 2/3 of it); once per heartbeat, and never with one server."""
    from idstore.backends.zookeeper.session import FAILOVER_AFTER, Session

    store = ZooKeeperStore(StoreOptions(ttl=TTL, endpoints=tuple(hosts.split(","))))
    session = Session(store, store._set_state, parse_endpoints(store.options), None, print)
    client, handler = _Client(), _Handler()
    session.client, session.handler, session.sid = client, handler, 1  # type: ignore[assignment]
    store._set_state(ConnectionState.CONNECTED)
    session._heartbeat()
    assert session._heartbeat_out is not None
    session._tick()
    assert handler.cuts == 0  # just sent
    session._heartbeat_out = (1, time.monotonic() - TTL * FAILOVER_AFTER - 0.01)
    session._tick()
    session._tick()
    assert handler.cuts == cuts
