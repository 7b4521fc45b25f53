"""The ZooKeeper session: its states, its supervision, and its deadline.

States. kazoo reports SUSPENDED on a lost connection but learns of expiry only after it
reconnects, while the server expires the session a session timeout after it last heard
from us and may hand our slot to another node (field notes: a partitioned client stays
SUSPENDED, never LOST). Like Curator, idstore presumes the session LOST once it is
SUSPENDED past the session's deadline. If the session then turns out to have survived
(the deadline keeps a margin, so it often does), it is kept, as an etcd lease that
outlived its presumed loss is: the holder was told LOST and stopped asserting its slot,
and on CONNECTED the allocator takes back its own claim, still held by this very
session. Closing it instead would delete its ephemerals and make its names vanish on
every peer whose own connection stayed up (a chaos soak found exactly that:
NXDOMAIN for live names after a member's cable was cut).

Deadline (``valid_until``), from what idstore itself observes through kazoo's public
API: the server cannot have heard from us later than it did, so it keeps the session at
least a granted timeout past

- the start of the connection attempt that came up CONNECTED (the handler opens every
  socket: connection.Handler), and
- the send time of idstore's own latest acknowledged heartbeat, an ``exists("/")`` sent
  by the supervisor HEARTBEATS times per granted timeout (kazoo's own pings are not
  observable through its API; ours replace them while the session is idle, since any
  request resets kazoo's ping timer). Send time, not reply time: after a pause (SIGSTOP)
  stale replies are read from the socket buffer long after the server sent them.

The deadline is that moment plus LOST_AFTER of the session timeout, and it is never
infinite. The timeout is ``min(ttl, granted)``: the server may grant less than asked
(its maxSessionTimeout). kazoo (2.9 to 2.11) keeps the granted value private and only
logs it, on the client's logger, when a session is established ("negotiated session
timeout"); every client gets its own SessionLog, which reads that record. Asking the
server (the ``conf`` four-letter word) would need 4lw whitelisting and plain-text access
on every member, and would give the configured bounds rather than what this session
got. A kazoo that does not log it fails open() with a StoreError saying so.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections.abc import Callable, MutableMapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import KazooState
from kazoo.security import ACL

from idstore.backends.base import ConnectionState, SlotStore
from idstore.backends.zookeeper.connection import (
    ConnectSpec,
    Handler,
    connect_cap,
    new_client,
    tls_context,
)
from idstore.errors import StoreError, StoreUnavailable

log = logging.getLogger(__name__)

# The deadline is this fraction of the session timeout past the last moment the server
# surely heard from us: the rest is the margin for clock rate, scheduling and the
# holder's reaction.
LOST_AFTER = 0.8
# Heartbeats per granted session timeout: the deadline then stays 0.55 to 0.8 of the
# timeout ahead while the server answers, and kazoo's own pings (due a third of the
# timeout after the last request) are superseded rather than doubled.
HEARTBEATS = 4
# A server that stops answering (its cable cut, say) is left when a heartbeat has gone
# unanswered this share of the session timeout. kazoo alone waits 2/3 of it (its read
# timeout) and may try the silent server first again, so with a short ttl the session
# expired before the client reached another server, and every peer answered NXDOMAIN
# for a live node's names until it claimed again (chaos soak, ZooKeeper, a member's
# cable cut). Cutting the socket makes kazoo move to the next server at once, with the
# session intact; a slow answer on a busy node costs one reconnect and a re-sync.
FAILOVER_AFTER = 1 / 3
# How long open() waits for the state machine to see the new session.
STATE_SETTLE = 5.0
# The znode the heartbeat asks about: it always exists and any client may ask.
HEARTBEAT_PATH = "/"
_GRANTED = re.compile(r"negotiated session timeout: (\d+)")
_SESSION = re.compile(r"session_id: (\d+)")


def _kazoo_version() -> str:
    try:
        return version("kazoo")
    except PackageNotFoundError:
        return "(version unknown)"


class SessionLog(logging.LoggerAdapter[logging.Logger]):
    """The logger one kazoo client writes through (KazooClient's ``logger`` argument):
    everything goes on to ``kazoo.client`` as before; the session-created record also
    tells which session timeout the server granted, whatever the log level."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__(logger, {})
        self.granted: tuple[int, float] | None = None  # (session id, seconds)

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if isinstance(msg, str) and "negotiated session timeout" in msg:
            self._learn(msg, args)
        super().log(level, msg, *args, **kwargs)

    def _learn(self, msg: str, args: tuple[Any, ...]) -> None:
        try:
            text = msg % args if args else msg
        except (TypeError, ValueError):
            return
        timeout, sid = _GRANTED.search(text), _SESSION.search(text)
        if timeout and sid:
            self.granted = (int(sid.group(1)), int(timeout.group(1)) / 1000.0)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        return msg, kwargs  # nothing to add: records look as kazoo's own


class Session:
    """One store's kazoo client and the state machine over it (supervisor thread)."""

    def __init__(
        self,
        store: SlotStore,
        set_state: Callable[[ConnectionState], None],
        spec: ConnectSpec,
        acl: list[ACL] | None,
        on_reset: Callable[[str], None],
    ) -> None:
        self.store = store  # its state and renewal counters
        self.set_state = set_state  # the store's transition, heard by its listeners
        self.options = store.options
        self.spec = spec
        self.acl = acl
        self.on_reset = on_reset  # every watch must re-sync (reason)
        self.client: KazooClient | None = None
        self.handler: Handler | None = None
        self.session_log: SessionLog | None = None
        self.sid: int | None = None
        self.timeout = self.options.ttl  # min(ttl, granted) once the session is up
        self._inbox: queue.Queue[tuple[str, float] | None] = queue.Queue()
        self._supervisor: threading.Thread | None = None
        self._closing = False
        # A session we told the holder is lost; if it reappears it is kept (logged).
        self._given_up_sid: int | None = None
        self._confirmed = 0.0  # monotonic: the server heard from us at or after this
        self._heartbeat_at = 0.0  # monotonic: when the next heartbeat is due
        # The outstanding heartbeat (session, send time). kazoo drops requests still
        # queued when a session expires without ever answering them: one outstanding for
        # a session since replaced, or for a whole timeout, no longer holds the next back.
        self._heartbeat_out: tuple[int, float] | None = None
        self._failed_over: tuple[int, float] | None = None  # the heartbeat we left over
        self._servers = len(spec.hosts.split("/", 1)[0].split(","))
        self._missing: str | None = None  # what kazoo did not tell us (open() fails)
        self._connected = threading.Event()

    # -- lifecycle -------------------------------------------------------------------

    def open(self) -> None:
        tls = tls_context(self.options)  # a configuration error before any connection
        self._closing = False
        self._missing = None
        self._connected.clear()
        if self._supervisor is None or not self._supervisor.is_alive():
            self._supervisor = threading.Thread(
                target=self._supervise, name="zk-supervisor", daemon=True
            )
            self._supervisor.start()
        handler = Handler(tls, connect_cap(self.options.ttl))
        session_log = SessionLog(logging.getLogger("kazoo.client"))
        client = new_client(self.options, self.spec, handler, session_log, self.acl)
        client.add_listener(lambda state: self._on_kazoo_state(handler, state))
        self.client, self.handler, self.session_log = client, handler, session_log
        try:
            client.start(timeout=self.options.connect_timeout)
        except (KazooTimeoutError, KazooException, OSError) as e:
            self.client = None
            failure = handler.last_error
            raise StoreUnavailable(
                f"no ZooKeeper session within {self.options.connect_timeout}s "
                f"(tried {self.spec.hosts})" + (f"; last attempt: {failure}" if failure else "")
            ) from e
        if not self._connected.wait(STATE_SETTLE):
            raise StoreUnavailable(f"ZooKeeper session on {self.spec.hosts} did not settle")
        if self._missing is not None:
            missing = self._missing
            self.close(release=True)
            raise StoreError(missing)

    def close(self, release: bool) -> None:
        self._closing = True
        client, self.client = self.client, None
        handler = self.handler
        if client is not None:
            try:
                if not release and handler is not None:
                    # As a crash would: no closeSession reaches the server, so the
                    # session and its ephemerals live on until it times out.
                    handler.drop()
                client.stop()  # with the connection up: closeSession, ephemerals go now
                client.close()
            except Exception:  # closing must not fail; the session ends either way
                log.warning("closing the ZooKeeper client failed", exc_info=True)
        self._inbox.put(None)
        self.sid = None

    @property
    def session_id(self) -> str:
        sid = self.sid
        return f"{sid:x}" if sid else ""

    def valid_until(self) -> float:
        """time.monotonic() until which the session is surely alive on the server."""
        if self.store.state is ConnectionState.LOST or self.sid is None:
            return 0.0
        return self._confirmed + self.timeout * LOST_AFTER

    # -- kazoo's threads: never block ------------------------------------------------

    def _on_kazoo_state(self, handler: Handler, state: str) -> None:
        """kazoo's listener, on its connection thread: only queue. The attempt's start
        goes along: it bounds when the server (re)validated a session now CONNECTED."""
        if state == KazooState.SUSPENDED:
            self.store.renewal_failures += 1
        self._inbox.put((state, handler.attempt_started))

    def _on_heartbeat(self, result: Any, sid: int, sent: float) -> None:
        if self._heartbeat_out == (sid, sent):
            self._heartbeat_out = None
        if not result.successful() or sid != self.sid:
            return  # unanswered, or for a session since replaced: proves nothing
        # Only the supervisor thread lowers _confirmed (a new session): a late reply
        # can but raise it, and only for its own session.
        self._confirmed = max(self._confirmed, sent)
        self.store.renewals += 1

    # -- the supervisor thread -------------------------------------------------------

    def _supervise(self) -> None:
        while True:
            try:
                item = self._inbox.get(timeout=self._next_wakeup())
            except queue.Empty:
                item = None
            else:
                if item is None and self._closing:
                    return
            try:
                if item is not None:
                    self._handle(*item)
                self._tick()
            except Exception:  # the state machine must outlive any bug in one step
                log.exception("ZooKeeper session supervision failed at %s", item)

    def _next_wakeup(self) -> float | None:
        state = self.store.state
        if self._closing or state is ConnectionState.LOST:
            return None  # nothing to do until kazoo reports a state
        if state is ConnectionState.CONNECTED:
            due = self._heartbeat_at
            failover = self._failover_due()
            if failover is not None:
                due = min(due, failover)
        else:
            due = self.valid_until()
        return max(0.0, due - time.monotonic())

    def _failover_due(self) -> float | None:
        """When to leave the server for the next one, if the outstanding heartbeat stays
        unanswered (None: nothing outstanding, already left, or no other server)."""
        out = self._heartbeat_out
        if out is None or out[0] != self.sid or out == self._failed_over or self._servers < 2:
            return None
        return out[1] + self.timeout * FAILOVER_AFTER

    def _tick(self) -> None:
        if self._closing:
            return
        state = self.store.state
        if state is ConnectionState.SUSPENDED and time.monotonic() >= self.valid_until():
            self._presume_lost()
        elif state is ConnectionState.CONNECTED:
            failover = self._failover_due()
            if failover is not None and time.monotonic() >= failover:
                self._fail_over()
            if time.monotonic() >= self._heartbeat_at:
                self._heartbeat()

    def _fail_over(self) -> None:
        self._failed_over = self._heartbeat_out
        handler = self.handler
        if handler is None:
            return
        log.warning(
            "no ZooKeeper answer to a heartbeat in %.1fs (of a %.1fs session): moving "
            "session %s to another server",
            self.timeout * FAILOVER_AFTER,
            self.timeout,
            self.session_id,
        )
        handler.cut()

    def _heartbeat(self) -> None:
        client, sid = self.client, self.sid
        sent = time.monotonic()
        self._heartbeat_at = sent + self.timeout / HEARTBEATS
        if client is None or sid is None:
            return
        out = self._heartbeat_out
        if out is not None and out[0] == sid and sent - out[1] < self.timeout:
            return  # one at a time: kazoo's own timeouts catch a silent connection
        self._heartbeat_out = (sid, sent)
        try:
            request = client.exists_async(HEARTBEAT_PATH)
        except Exception:
            self._heartbeat_out = None
            log.debug("heartbeat not sent", exc_info=True)
            return
        request.rawlink(lambda result: self._on_heartbeat(result, sid, sent))

    def _presume_lost(self) -> None:
        log.warning(
            "no ZooKeeper answer to requests sent since %.1fs ago, of a %.1fs session: "
            "presuming session %s lost",
            time.monotonic() - self._confirmed,
            self.timeout,
            self.session_id,
        )
        self._given_up_sid = self.sid
        self.set_state(ConnectionState.LOST)
        self.on_reset("session presumed lost (ZooKeeper unreachable)")

    def _handle(self, state: str, attempt_started: float) -> None:
        if self._closing:
            return
        if state == KazooState.CONNECTED:
            self._on_connected(attempt_started)
        elif state == KazooState.SUSPENDED:
            if self.store.state is ConnectionState.CONNECTED:
                self.set_state(ConnectionState.SUSPENDED)
        elif state == KazooState.LOST:
            self.set_state(ConnectionState.LOST)
            self.on_reset("ZooKeeper session lost")

    def _granted(self, client: KazooClient, sid: int) -> float | None:
        learned = self.session_log.granted if self.session_log else None
        if learned is None or learned[0] != sid:
            self._missing = (
                f"kazoo {_kazoo_version()} did not log the negotiated "
                "session timeout of the new session (its 'Session created ... negotiated "
                "session timeout' record on the client's logger), which idstore needs to "
                "bound the session's lifetime; use kazoo>=2.9,<3"
            )
            return None
        granted = learned[1]
        if abs(granted - self.options.ttl) > 0.05:
            log.warning(
                "ZooKeeper granted a session timeout of %.1fs instead of ttl %.1fs "
                "(the server's min/maxSessionTimeout); using %.1fs",
                granted,
                self.options.ttl,
                min(granted, self.options.ttl),
            )
        return min(granted, self.options.ttl)

    def _on_connected(self, attempt_started: float) -> None:
        client = self.client
        if client is None or client.client_id is None:
            return
        sid = int(client.client_id[0])
        granted = self._granted(client, sid)
        if granted is None:
            self._connected.set()  # open() fails with what is missing
            return
        if sid == self._given_up_sid:
            self._given_up_sid = None
            log.info(
                "session %x survived the outage after it was presumed lost: keeping it "
                "(its claims are taken back, not deleted)",
                sid,
            )
        previous = self.store.state
        if self.sid is not None and sid != self.sid and previous is not ConnectionState.LOST:
            # A new session means the old one expired, even if kazoo never said so.
            self.set_state(ConnectionState.LOST)
        if previous is not ConnectionState.CONNECTED:
            # Before anyone hears CONNECTED: a watch made after that is valid.
            self.on_reset("reconnected to ZooKeeper: watches were reset")
        self._confirmed = (
            attempt_started if sid != self.sid else max(self._confirmed, attempt_started)
        )
        self.timeout = granted
        self.sid = sid
        self._heartbeat_at = 0.0  # one right away: renewals show the session is back
        self.set_state(ConnectionState.CONNECTED)
        self._connected.set()
