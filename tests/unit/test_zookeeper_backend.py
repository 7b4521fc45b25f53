"""ZooKeeper-specific behaviour the conformance suite cannot express: an outage.

kazoo only learns that its session expired after it reconnects; the backend must report
LOST by itself before the server could have expired the session and handed the slot to
someone else, and come back CONNECTED under a new session once the server returns.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from idstore.backends.base import ConnectionState, SlotRecord, StoreOptions
from idstore.backends.zookeeper import LOST_AFTER, ZooKeeperStore, parse_endpoints
from idstore.errors import ConfigError
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
        # session before killed + TTL: LOST must come earlier, with margin.
        assert lost_at - killed <= TTL * LOST_AFTER + 0.3, f"LOST after {lost_at - killed:.2f}s"

        zk.start()
        wait_until(lambda: store.state is ConnectionState.CONNECTED, 20.0, "CONNECTED again")
        assert store.session_id and store.session_id != old_session
        # The given-up session was closed, so its slot is free for the new one.
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
def test_reconnect_backoff_stays_well_inside_the_session(ttl: float) -> None:
    """Regression: kazoo's pause between reconnect passes grew to 1 s (x1.4 jitter), so
    after a leader's loss the ensemble was back within a 3 s session but a client on the
    killed leader slept past the moment the session is presumed lost, and went LOST."""
    from idstore.backends.base import StoreOptions

    client = ZooKeeperStore(StoreOptions(ttl=ttl))._new_client()
    try:
        retry = client._conn_retry
        assert retry.max_tries == -1
        assert retry.max_delay <= min(1.0, ttl / 10)
        worst_pause = retry.max_delay * (1 + retry.max_jitter)
        assert worst_pause < ttl * LOST_AFTER / 4
    finally:
        client.close()


def test_a_connection_reset_event_on_a_slot_watch_is_ignored() -> None:
    """Regression: kazoo fires every armed data watch with a NONE event and no path when
    the connection drops; the slot watch read ``event.path.rsplit`` first and raised
    AttributeError in kazoo's callback thread (a traceback per slot on every failover)."""
    from kazoo.protocol.states import EventType, KeeperState, WatchedEvent

    from idstore.backends.base import Listing, StoreOptions
    from idstore.backends.zookeeper import _PoolWatch

    store = ZooKeeperStore(StoreOptions(ttl=TTL))
    watch = _PoolWatch(store, Listing("worker", {}, 0), lambda evs: None, lambda why: None)
    watch._on_data(WatchedEvent(EventType.NONE, KeeperState.CONNECTING, None))


# -- TLS settings (no server needed: they are checked before any connection) ------------


def tls_store(**tls: str) -> ZooKeeperStore:
    return ZooKeeperStore(StoreOptions(endpoints=("127.0.0.1:1",), connect_timeout=1.0, **tls))


def test_tls_trusts_only_the_configured_ca_and_checks_the_host_name(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    store = tls_store(
        tls_ca=str(pki.ca), tls_cert=str(pki.client.cert), tls_key=str(pki.client.key)
    )
    context = store._tls_context()
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
