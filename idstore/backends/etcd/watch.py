"""One pool's watch: a raw gRPC Watch stream, read on one thread, delivered by the
shared dispatcher (idstore.backends.dispatch).

The dispatcher also guards against a silent stall (a member cut off from its cluster
keeps the stream open but sends nothing): after ``check_interval`` without news it asks
the same member, linearizably, whether the pool changed since the last revision
delivered; a failed check, or a change the stream then fails to deliver within
``check_grace``, breaks the watch so the caller re-lists.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence

import grpc

from idstore.backends.base import BrokenCallback, EventsCallback, EventType, Listing, SlotEvent
from idstore.backends.dispatch import DispatchedWatch, WatchBroken, WatchRegistry
from idstore.backends.etcd import messages as m
from idstore.backends.etcd.api import load
from idstore.backends.etcd.claims import claim_of
from idstore.backends.etcd.connection import (
    Connection,
    closed_channel,
    error_code,
    token_expired,
    translate,
)
from idstore.backends.etcd.keys import parse_slot, prefix_end
from idstore.backends.etcd.requests import range_request, watch_create
from idstore.errors import StoreError, StoreUnavailable


class EtcdWatch(DispatchedWatch[m.WatchResponse]):
    def __init__(
        self,
        conn: Connection,
        since: Listing,
        on_events: EventsCallback,
        on_broken: BrokenCallback,
        registry: WatchRegistry,
        *,
        prefix: bytes,
        check_interval: float,
        check_grace: float,
        request_timeout: float,
        sent: Callable[[], None],
    ) -> None:
        super().__init__(since.pool, on_events, on_broken, registry, f"etcd-watch-{since.pool}")
        self._conn = conn
        self._prefix = prefix
        self._last = since.revision  # every change up to here has been delivered
        self.check_interval = check_interval
        self.check_grace = check_grace
        self._request_timeout = request_timeout
        self._sent = sent
        self._event_delete = load().event_delete
        # (revision, deadline) of a change the check saw but the stream did not deliver
        self._pending: tuple[int, float] | None = None
        self._stopped = threading.Event()  # keeps the request stream open until set
        self._call: m.Stream[m.WatchResponse] | None = None

    def start(self) -> None:
        """Open the stream from the revision after ``since``; StoreUnavailable when a
        failover closed the channel meanwhile (the caller retries)."""
        create = watch_create(self._prefix, prefix_end(self._prefix), self._last + 1)
        self._sent()
        try:
            self._call = self._conn.watch.Watch(
                self._requests(create), metadata=self._conn.metadata
            )
        except ValueError as e:
            if not closed_channel(e):
                raise
            self.cancel()
            raise StoreUnavailable(f"etcd watch at {self._conn.endpoint.url}: {e}") from e
        self.start_dispatch()
        threading.Thread(
            target=self._read, name=f"etcd-watch-{self.pool}-reader", daemon=True
        ).start()

    def _requests(self, create: m.Message) -> Iterator[m.Message]:
        yield create
        self._stopped.wait()  # keep the stream open until the watch ends

    def _release(self) -> None:
        self._stopped.set()
        if self._call is not None:
            self._call.cancel()

    # -- the reader thread ---------------------------------------------------------------

    def _read(self) -> None:
        call = self._call
        if call is None:
            return
        try:
            for resp in call:
                self.post(resp)
            self.post_broken("the watch stream ended")
        except grpc.RpcError as e:
            code, details = error_code(e)
            self.post_broken(f"watch stream error at {self._conn.endpoint.url}: {code}: {details}")
        except Exception as e:  # never let the reader die silently
            self.post_broken(f"watch stream failed: {e!r}")

    # -- the dispatch thread -------------------------------------------------------------

    def _translate(self, item: m.WatchResponse) -> Sequence[SlotEvent]:
        if item.compact_revision:
            raise WatchBroken(
                f"revision {self._last + 1} is compacted "
                f"(oldest available: {item.compact_revision})"
            )
        if item.canceled:
            raise WatchBroken(f"etcd canceled the watch: {item.cancel_reason or 'no reason given'}")
        events = [e for e in map(self._event, item.events) if e is not None]
        if item.events:
            self._last = max(self._last, int(item.events[-1].kv.mod_revision))
        elif not item.created and item.header.revision:
            # A progress notification: everything up to this revision was sent.
            self._last = max(self._last, int(item.header.revision))
        if self._pending is not None and self._last > self._pending[0]:
            self._pending = None
        return events

    def _event(self, ev: m.Event) -> SlotEvent | None:
        kv = ev.kv
        slot = parse_slot(kv.key, self._prefix)
        if slot is None:
            return None
        revision = int(kv.mod_revision)
        if ev.type == self._event_delete:
            return SlotEvent(EventType.DELETE, self.pool, slot, None, revision)
        claim = claim_of(self.pool, slot, kv)
        if claim is None:
            return None
        return SlotEvent(EventType.PUT, self.pool, slot, claim, revision)

    def _idle_wait(self) -> float:
        if self._pending is None:
            return self.check_interval
        return max(0.01, self._pending[1] - time.monotonic())

    def _on_idle(self) -> None:
        """A quiet stream: is it quiet because nothing changed?"""
        pending, self._pending = self._pending, None
        if pending is not None:
            if self._last > pending[0]:
                return
            raise WatchBroken(
                f"watch stalled: the pool changed after revision {pending[0]} "
                f"but nothing arrived within {self.check_grace:g} s"
            )
        self._sent()
        try:
            changed = pool_changed_after(
                self._conn, self._prefix, self._last, self._request_timeout
            )
        except StoreError as e:
            raise WatchBroken(f"watch check failed: {e}") from e
        if changed:
            self._pending = (self._last, time.monotonic() + self.check_grace)


def pool_changed_after(conn: Connection, prefix: bytes, revision: int, timeout: float) -> bool:
    """Whether a key below ``prefix`` was written after ``revision`` (a linearizable read
    on ``conn``, so a member cut off from its cluster fails it instead of answering)."""
    req = range_request(
        prefix, prefix_end(prefix), keys_only=True, limit=1, min_mod_revision=revision + 1
    )
    try:
        try:
            resp = conn.kv.Range(req, timeout=timeout, metadata=conn.metadata)
        except grpc.RpcError as e:
            if not token_expired(e):
                raise
            # A quiet watch outlives auth tokens: log in again once, as Transport.rpc does.
            conn.forget_token()
            conn.ensure_auth(timeout)
            resp = conn.kv.Range(req, timeout=timeout, metadata=conn.metadata)
    except grpc.RpcError as e:
        raise translate(e, "watch check", conn.endpoint.url) from e
    except ValueError as e:  # the channel was closed by a failover: the watch breaks
        if not closed_channel(e):
            raise
        raise StoreUnavailable(f"etcd watch check at {conn.endpoint.url}: {e}") from e
    return len(resp.kvs) > 0
