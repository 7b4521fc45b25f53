"""The session: an etcd lease, its keepalive thread, its loss and a new one after.

Only the keepalive thread (and open/close) change the session's state; writers read the
lease with ``write_lease`` and report a lease etcd no longer knows with ``lease_gone``.
The deadline (``valid_until``) counts from when the last acknowledged keepalive was
*sent*, so the lease cannot have expired on the server before it.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable

from idstore.backends.base import ConnectionState, StoreOptions
from idstore.backends.etcd.connection import Connection, Transport
from idstore.backends.etcd.keys import session_name
from idstore.backends.etcd.requests import lease_grant, lease_keepalive, lease_revoke
from idstore.errors import SessionLost, StoreError, StoreUnavailable

log = logging.getLogger(__name__)

_BACKOFF_FIRST = 0.2  # a new lease after LOST: first pause, doubled up to _BACKOFF_MAX
# Kept short: until a LOST node has a new session it serves a stale view, which after a
# partition heals can still name it as the owner of a slot another node now holds.
_BACKOFF_MAX = 1.0
_MIN_REQUEST_TIMEOUT = 0.05  # a renewal sent with less time than this cannot succeed
# A failed renewal is retried after this (doubled per failure, up to the renewal interval),
# not a whole interval later: the failure may be one dead member or an election, and the
# next endpoint is likely to answer. With TTL/3 between attempts, two failed attempts
# after a member loss used up the lease's deadline and the session was presumed LOST.
_RENEW_RETRY_FIRST = 0.1
# A renewal's own deadline, as a share of the TTL: a member that takes a keepalive and
# never answers it (cut off from its peers before it noticed it has no leader) costs one
# such slice, and the retries through the other endpoints still fit in the lease's
# lifetime. With the whole request_timeout (5 s by default, the TTL of small setups) one
# unanswered keepalive used up the lease and the node was presumed LOST.
_RENEW_SHARE = 0.25


class Session:
    def __init__(
        self,
        options: StoreOptions,
        transport: Transport,
        set_state: Callable[[ConnectionState], None],
        renewed: Callable[[bool], None],
    ) -> None:
        """``set_state`` reports each state; ``renewed(ok)`` each renewal's outcome."""
        self._options = options
        self._transport = transport
        self._set_state = set_state
        self._renewed = renewed
        self._lock = threading.Lock()
        self._lease_id: int | None = None
        self._deadline = 0.0  # monotonic time until which the lease is surely alive
        self.granted_ttl = math.ceil(options.ttl)
        self._lost_hint: int | None = None
        self._stale_leases: list[int] = []
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._keepalive: threading.Thread | None = None

    @property
    def id(self) -> str:
        lease = self._lease_id
        return session_name(lease) if lease is not None else ""

    def valid_until(self) -> float:
        with self._lock:
            return self._deadline if self._lease_id is not None else 0.0

    @property
    def running(self) -> bool:
        return self._keepalive is not None

    # -- open and close ------------------------------------------------------------------

    def open(self) -> None:
        """Connect to the first endpoint that grants a lease; StoreUnavailable naming every
        endpoint when none did within ``connect_timeout``."""
        deadline = time.monotonic() + self._options.connect_timeout
        endpoints = self._transport.endpoints
        errors: dict[str, str] = {}
        index = 0
        while (remaining := deadline - time.monotonic()) > 0:
            self._transport.use(index)
            try:
                sent = time.monotonic()
                lease_id, ttl = self._grant(min(self._options.request_timeout, remaining), False)
            except StoreUnavailable as e:
                errors[endpoints[index % len(endpoints)].url] = str(e)
                index += 1
                if index % len(endpoints) == 0:  # every endpoint failed once: pause
                    time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
                continue
            self._start(lease_id, ttl, sent)
            return
        self._transport.close()
        tried = "; ".join(errors.get(ep.url, f"{ep.url}: not tried") for ep in endpoints)
        raise StoreUnavailable(
            f"no etcd endpoint answered within {self._options.connect_timeout:g} s "
            f"(tried {', '.join(ep.url for ep in endpoints)}): {tried}"
        )

    def _start(self, lease_id: int, ttl: int, sent: float) -> None:
        with self._lock:
            self._lease_id, self._deadline = lease_id, sent + ttl
        self._stop.clear()
        self._set_state(ConnectionState.CONNECTED)
        self._keepalive = threading.Thread(
            target=self._keepalive_loop, name=f"etcd-keepalive-{lease_id:x}", daemon=True
        )
        self._keepalive.start()

    def close(self, release: bool) -> None:
        """Stop renewing; with ``release`` revoke the lease and every presumed-lost one."""
        self._stop.set()
        self._wake.set()
        thread, self._keepalive = self._keepalive, None
        # A state listener may close the store from the keepalive thread itself.
        if thread is not None and thread is not threading.current_thread():
            thread.join(self._options.request_timeout * 2 + 1)
        with self._lock:
            lease, self._lease_id = self._lease_id, None
        if not release:
            return
        with self._lock:
            stale, self._stale_leases = self._stale_leases, []
        for old in stale if lease is None else [lease, *stale]:
            self._revoke(old)

    def _grant(self, timeout: float, failover_retry: bool = True) -> tuple[int, int]:
        want = math.ceil(self._options.ttl)  # etcd leases are whole seconds: never shorter
        req = lease_grant(want)
        resp = self._transport.rpc(
            "lease grant",
            lambda c, t: c.lease.LeaseGrant(req, timeout=t, metadata=c.metadata),
            timeout=timeout,
            failover_retry=failover_retry,
        )
        if resp.error:
            raise StoreError(f"etcd refused a lease of {want} s: {resp.error}")
        granted = int(resp.TTL)
        if granted != want:
            log.warning("asked etcd for a %s s lease, it granted %s s", want, granted)
        self.granted_ttl = granted
        log.info("etcd session %x opened (TTL %s s)", resp.ID, granted)
        return int(resp.ID), granted

    def _revoke(self, lease_id: int) -> bool:
        req = lease_revoke(lease_id)
        try:
            self._transport.rpc(
                "lease revoke",
                lambda c, t: c.lease.LeaseRevoke(req, timeout=t, metadata=c.metadata),
            )
        except SessionLost:
            return True  # already gone: that is what we wanted
        except StoreError as e:
            log.warning("could not revoke etcd lease %x: %s", lease_id, e)
            return False
        return True

    # -- for writers ---------------------------------------------------------------------

    def write_lease(self) -> int:
        """The lease new writes go under; SessionLost once its deadline has passed."""
        with self._lock:
            lease, deadline = self._lease_id, self._deadline
        if lease is None:
            raise SessionLost("no etcd session: the lease was lost and no new one yet")
        if time.monotonic() >= deadline:
            self._wake.set()
            raise SessionLost(f"etcd session {lease:x} expired: no renewal within its TTL")
        return lease

    def lease_gone(self, lease: int) -> None:
        """A write found our lease unknown to etcd: the keepalive thread goes LOST now."""
        with self._lock:
            self._lost_hint = lease
        self._wake.set()

    # -- the keepalive thread ------------------------------------------------------------

    def _keepalive_loop(self) -> None:
        interval = max(self.granted_ttl / 3.0, 0.1)
        next_at = time.monotonic() + interval
        retry = _RENEW_RETRY_FIRST
        while not self._stop.is_set():
            self._wake.clear()
            with self._lock:
                lease, deadline, hint = self._lease_id, self._deadline, self._lost_hint
            if lease is None:
                self._regain()
                interval = max(self.granted_ttl / 3.0, 0.1)
                next_at = time.monotonic() + interval
                continue
            now = time.monotonic()
            if hint == lease:
                self._lose(lease, "etcd no longer knows the lease")
            elif now >= deadline:
                self._lose(lease, f"no renewal succeeded within the {self.granted_ttl} s TTL")
            elif now < next_at:
                self._wake.wait(min(next_at, deadline) - now)
            elif self._renew(lease, deadline):
                next_at = now + interval  # "at most every TTL/3", counted from each attempt
                retry = _RENEW_RETRY_FIRST
            else:
                next_at = time.monotonic() + random.uniform(retry / 2, retry)
                retry = min(retry * 2, interval)

    def _renew(self, lease: int, deadline: float) -> bool:
        """One renewal attempt; whether it succeeded."""
        timeout = min(
            self._options.request_timeout,
            self.granted_ttl * _RENEW_SHARE,
            deadline - time.monotonic(),
        )
        if timeout < _MIN_REQUEST_TIMEOUT:
            return False  # the deadline check in the loop declares LOST
        sent = time.monotonic()
        try:
            ttl = self._refresh_once(lease, timeout)
        except StoreError as e:
            self._renewed(False)
            log.warning("etcd lease %x renewal failed: %s", lease, e)
            if isinstance(e, SessionLost):
                self._lose(lease, str(e))
            else:
                self._set_state(ConnectionState.SUSPENDED)
            return False
        if ttl <= 0:
            self._renewed(False)
            self._lose(lease, "etcd reports the lease expired (TTL 0)")
            return False
        self._renewed(True)
        with self._lock:
            if self._lease_id == lease:
                self._deadline = sent + ttl  # from when we sent: the server's clock ran later
        self._set_state(ConnectionState.CONNECTED)
        return True

    def _refresh_once(self, lease: int, timeout: float) -> int:
        """One keepalive round trip with its own deadline (not counted as a request)."""

        def call(c: Connection, t: float) -> int:
            stream = c.lease.LeaseKeepAlive(
                iter([lease_keepalive(lease)]), timeout=t, metadata=c.metadata
            )
            try:
                for resp in stream:
                    return int(resp.TTL)
            finally:
                stream.cancel()
            raise StoreUnavailable("etcd closed the keepalive stream without a reply")

        return self._transport.rpc("lease keepalive", call, timeout=timeout, count=False)

    def _lose(self, lease: int, reason: str) -> None:
        with self._lock:
            if self._lease_id != lease:
                return
            self._lease_id = None
            self._stale_leases.append(lease)
        log.warning("etcd session %x lost: %s", lease, reason)
        self._set_state(ConnectionState.LOST)

    def _regain(self) -> None:
        """After LOST: grant a new lease, retrying with bounded backoff and jitter."""
        delay = _BACKOFF_FIRST
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                lease_id, ttl = self._grant(self._options.request_timeout)
            except StoreError as e:
                pause = random.uniform(delay / 2, delay)
                log.info("no new etcd session yet (%s); retrying in %.1f s", e, pause)
                self._stop.wait(pause)
                delay = min(delay * 2, _BACKOFF_MAX)
                continue
            # The presumed-lost lease is NOT revoked here: a restarted etcd extends every
            # lease, so its claims may still be valid, and revoking would make our name
            # vanish until we claim again. The allocator re-takes our own claims under the
            # new lease (fenced on their version); the old lease then holds nothing and
            # expires by itself, or is revoked on a clean close.
            with self._lock:
                self._lease_id, self._deadline = lease_id, sent + ttl
            self._set_state(ConnectionState.CONNECTED)
            return
