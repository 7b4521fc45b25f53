"""The authoritative zone: the cluster view turned into DNS answers.

Answers are prepared once per (name, type) after a change, packed by dnslib (see
idstore.dns.records, .answers) and cached until a change touches that name, so
answering a query is: guard-parse header and question, one dict lookup, pack a header,
join four byte strings; a repeated query is one lookup in the whole-reply cache
(idstore.dns.replies). The question is copied from the query, which keeps the client's
letter case (0x20) and keeps every compression pointer into it valid.

Only positive answers of existing names are cached by (name, type), so the cache is
bounded by the view and a flood of random names cannot grow it. Negative answers carry
the SOA packed once per serial and question shape.

Names served (``<zone>`` = ``dns.zone``): see idstore.dns.content.

Thread safety: ``update``/``set_*`` run on any thread and mutate under ``_lock``; the
event loop reads the caches without the lock (single dict lookups are atomic) and takes
the lock only to build a missing answer, so a build can never store an answer computed
from data that an update has since replaced.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Callable, Sequence

from idstore.config import MAX_UDP, DnsSettings, PoolSettings
from idstore.dns import records, replies, wire
from idstore.dns.answers import (
    EMPTY,
    FORMERR_ANSWER,
    REFUSED_ANSWER,
    SERVFAIL_ANSWER,
    TCP_MAX,
    TRUNCATED,
    Dep,
    Prepared,
)
from idstore.dns.content import Content
from idstore.dns.ratelimit import ALLOW, DROP, RateLimiter
from idstore.dns.stats import DnsStats, cached_code
from idstore.dns.transfer import TransferGate, TransferRequest, messages, zone_rrs
from idstore.dns.wire import (
    AXFR,
    BADKEY,
    BADVERS,
    CLASS_IN,
    COPIED_FLAGS,
    HEADER,
    IXFR,
    NOTAUTH,
    NOTIMP,
    OPT,
    QR,
    REFUSED,
    SERVFAIL,
    BadQuery,
    Query,
)
from idstore.view import Change

log = logging.getLogger(__name__)

_UPDATE_CHUNK = 512  # changes applied per lock hold, so queries never wait long
_OPCODE = 0x7800


def _always() -> bool:
    return True


class ForwardRequest:
    """An out-of-zone query the server should relay upstream (see idstore.dns.forward)."""

    __slots__ = ("fallback", "query")

    def __init__(self, query: bytes, fallback: bytes | None) -> None:
        self.query = query
        self.fallback = fallback  # SERVFAIL to send when no upstream answers


class Zone(Content):
    def __init__(self, dns: DnsSettings, pools: Sequence[PoolSettings]) -> None:
        super().__init__(dns, pools)
        self.stats = DnsStats()
        self.forwarding = bool(dns.forward)
        self._lock = threading.Lock()
        self._rrl = RateLimiter(dns.rrl_per_second) if dns.rrl_per_second > 0 else None
        self._identity_live: Callable[[], bool] = _always
        self._stale_since: float | None = None
        self._opts: dict[tuple[bool, bool, int | None], bytes] = {}
        self._errors = 0
        self.transfers = TransferGate()
        # Whole UDP replies (idstore.dns.replies). Replaced, never cleared in place,
        # after a change of state that every reply may depend on (identity, staleness,
        # settings), so a reply built from old state can only land in a discarded dict.
        self._replies = replies.Replies()

    # ------------------------------------------------------------------ view input

    def update(self, changes: Sequence[Change]) -> None:
        """Apply a batch of (pool, slot, member or None) from the view; any thread."""
        for start in range(0, len(changes), _UPDATE_CHUNK):
            with self._lock:
                for pool, slot, member in changes[start : start + _UPDATE_CHUNK]:
                    self.apply(pool, slot, member)
                self.bump_serial()
                if self.zones_changed:  # a derived reverse zone came or went
                    self.zones_changed = False
                    self._replies = replies.Replies()

    def set_identity(self, name: str | None, live: Callable[[], bool] | None = None) -> None:
        """This node's claimed name (NSID, ``ns.<zone>``); None while it holds no slot.

        ``live`` is asked at the moment NSID is about to assert the name: a node that was
        paused past its session's deadline must not answer with the name before its
        backend's thread has noticed (and reported LOST)."""
        self._identity_live = live or _always
        with self._lock:
            self.identity = wire.name_to_wire(name) if name else None
            self._nsid = name.encode("ascii", "replace")[:255] if name else b""
            self._opts = {}
            self.forget_ns()
            self._replies = replies.Replies()

    def set_stale(self, since: float | None) -> None:
        """time.monotonic() since which the view is unconfirmed, or None when fresh."""
        with self._lock:
            self._stale_since = since
            self._retune()

    def reconfigure(self, dns: DnsSettings) -> None:
        """Apply reloaded DNS settings (SIGHUP): TTLs, stale limits, forwarding, query
        logging, transfer allow-list. The zone, its reverse zones, the listeners and the
        rate limit are fixed for the life of the process (the node reports them as
        needing a restart)."""
        with self._lock:
            self.dns = dns
            self.forwarding = bool(dns.forward)
            self._retune(rebuild=True)  # cached answers carry the old TTLs

    def _retune(self, rebuild: bool = False) -> None:
        """Answer TTLs for the settings and the stale state; the caller holds the lock.

        Replies built for the earlier state are dropped: max_stale and the stale TTL
        decide what they say. Cached answers go when their TTLs change (or ``rebuild``)."""
        self._replies = replies.Replies()
        since = self._stale_since
        cap = self.dns.stale_ttl if since is not None else None
        ttl = min(self.dns.ttl, cap) if cap is not None else self.dns.ttl
        neg = min(self.dns.negative_ttl, cap) if cap is not None else self.dns.negative_ttl
        if rebuild or (ttl, neg) != (self.ttl, self.neg_ttl):
            self.ttl, self.neg_ttl = ttl, neg
            self.forget_all()

    @property
    def stale(self) -> bool:
        return self._stale_since is not None

    # ------------------------------------------------------------------ request path

    def answer(self, query: bytes, proto: str, client: tuple[str, int] | tuple[object, ...]
               ) -> bytes | None:  # fmt: skip
        """The response to ``query`` (None = send nothing). Never raises.

        Out-of-zone queries get REFUSED here even when forwarding is configured: relaying
        needs the event loop, which ``resolve`` hands to the server. An allowed zone
        transfer comes back as its whole TCP stream (each message length-prefixed).
        """
        result = self.resolve(query, proto, client)
        if isinstance(result, ForwardRequest):
            return self._plain_reply(query, REFUSED)
        if isinstance(result, TransferRequest):
            return b"".join(struct.pack(">H", len(m)) + m for m in self.transfer(result))
        return result

    def resolve(self, query: bytes, proto: str, client: tuple[object, ...]
                ) -> bytes | ForwardRequest | TransferRequest | None:  # fmt: skip
        """Like ``answer`` but out-of-zone queries come back as a ForwardRequest when
        forwarding is configured, and an allowed zone transfer as a TransferRequest."""
        if proto == "udp":
            hit = replies.replay(self._replies, query)
            if hit is not None:
                cached = self.stats.cached
                cached[hit[1]] = cached.get(hit[1], 0) + 1
                return hit[0]
        try:
            return self._resolve(query, proto, client)
        except Exception as e:  # a bug must cost one answer, never the server
            self._errors += 1
            if self._errors <= 10 or self._errors % 1000 == 0:
                log.error("internal error answering a query (%d so far): %r", self._errors, e,
                          exc_info=self._errors <= 3)  # fmt: skip
            return self._plain_reply(query, SERVFAIL)

    def _resolve(self, data: bytes, proto: str, client: tuple[object, ...]
                 ) -> bytes | ForwardRequest | TransferRequest | None:  # fmt: skip
        replies_now = self._replies  # taken before any state is read; see __init__
        try:
            q = wire.parse_query(data)
        except BadQuery as e:
            return self._reject(data, e)
        stats = self.stats
        key = (proto, q.qtype)
        stats.requests[key] = stats.requests.get(key, 0) + 1
        if q.edns and q.version:
            return self._badvers(data, q)
        if q.tsig is not None:
            return self._badkey(data, q)
        if q.qtype in (AXFR, IXFR):
            request = self._transfer_request(data, q, proto, client)
            if request is not None:
                return request
        if q.edns:
            limit = TCP_MAX if proto == "tcp" else min(max(q.udp_size, 512), MAX_UDP)
        else:
            limit = TCP_MAX if proto == "tcp" else 512
        if self._rrl is not None and proto == "udp":
            verdict = self._rrl.check(str(client[0]))
            if verdict != ALLOW:
                stats.rate_limited += 1
                if verdict == DROP:
                    return None
                limit = 0  # slip: a TC=1 reply with just the question
        entry = self.cache.get((q.qname, q.qtype))
        stale = self._stale_since is not None
        if entry is None or stale or q.qclass != CLASS_IN:
            found = self._lookup(q, proto, client)
            if found is None:
                if self.forwarding:
                    return ForwardRequest(data, self._plain_reply(data, SERVFAIL))
                found = REFUSED_ANSWER
            entry = found
        if q.edns:
            ede = None
            if stale and entry is not REFUSED_ANSWER and entry is not FORMERR_ANSWER:
                ede = (records.EDE_NO_REACHABLE_AUTHORITY if entry is SERVFAIL_ANSWER
                       else records.EDE_STALE_ANSWER)  # fmt: skip
            opt = self._opt(q.nsid and self._identity_live(), q.do, ede)
        else:
            opt = b""
        room = limit - q.end - len(opt)
        for variant in entry.variants:
            if variant[0] <= room:
                break
        else:
            variant = TRUNCATED
        _, tc, an, ns, ar, body = variant
        flags = QR | entry.flags | tc | (q.flags & COPIED_FLAGS)
        rcode = entry.flags & 0xF
        stats.responses[rcode] = stats.responses.get(rcode, 0) + 1
        if self.dns.log_queries:
            self._log_query(q, proto, client, rcode)
        header = HEADER.pack((data[0] << 8) | data[1], flags, 1, an, ns, ar + (1 if opt else 0))
        reply = b"".join((header, data[12 : q.end], body, opt))
        # A reply carrying NSID asserts our identity, which must be re-checked each time.
        if proto == "udp" and not q.nsid and self._replies_ok():
            replies.remember(replies_now, data, q.end - 4, reply,
                             cached_code(q.qtype, rcode), entry)  # fmt: skip
        return reply

    @property
    def replies(self) -> replies.Replies:
        """The whole-reply cache of UDP answers right now (idstore.dns.replies), for the
        server's batch path, which must count every replay in ``stats.cached``; never
        mutate it."""
        return self._replies

    def _replies_ok(self) -> bool:
        """Is a reply a pure function of the query bytes and the view right now?"""
        return self._rrl is None and self._stale_since is None and not self.dns.log_queries

    def _lookup(self, q: Query, proto: str, client: tuple[object, ...]) -> Prepared | None:
        """The answer for a cache miss (or any query while stale); None = not our zone."""
        qname = q.qname
        apex = self.apex_of(qname)
        if apex is None:
            return None
        since = self._stale_since
        if since is not None and time.monotonic() - since > self.dns.max_stale:
            return SERVFAIL_ANSWER
        if q.qclass != CLASS_IN:
            return REFUSED_ANSWER
        if q.qtype in (AXFR, IXFR):
            return REFUSED_ANSWER  # over UDP, or from outside dns.transfer_allow
        if q.qtype == OPT:
            return FORMERR_ANSWER
        with self._lock:
            return self.prepare(qname, q.qtype, apex)

    def _transfer_request(self, data: bytes, q: Query, proto: str, client: tuple[object, ...]
                          ) -> TransferRequest | None:  # fmt: skip
        """An AXFR/IXFR of one of our zones over TCP from an allowed client; None (and
        REFUSED by ``_lookup``) otherwise."""
        apex = self.apex_of(q.qname)
        if apex is None or q.qclass != CLASS_IN:
            return None
        peer = client[0] if client else "?"
        zone = wire.wire_to_text(q.qname)
        if q.qname != apex:
            self.transfers.refused(peer, zone, "not a zone apex")
        elif proto != "tcp":
            self.transfers.refused(peer, zone, "over UDP")
        elif not self.transfers.allowed(self.dns.transfer_allow, peer):
            self.transfers.refused(peer, zone, "not in dns.transfer_allow")
        else:
            log.info("zone transfer of %s to %s, serial %d", zone, peer, self.serial)
            self.stats.responses[0] = self.stats.responses.get(0, 0) + 1
            return TransferRequest(data, q, apex)
        return None

    def transfer(self, request: TransferRequest) -> list[bytes]:
        """The messages of an allowed transfer: a snapshot under the lock, packed outside
        it (the server runs this in a worker thread)."""
        with self._lock:
            rrs = zone_rrs(self, request.apex)
        return messages(request, rrs)

    def _opt(self, nsid: bool, do: bool, ede: int | None) -> bytes:
        key = (nsid and bool(self._nsid), do, ede)
        opt = self._opts.get(key)
        if opt is None:
            opt = records.opt_record(MAX_UDP, 0, do, self._nsid if key[0] else b"", ede)
            self._opts[key] = opt
        return opt

    # ------------------------------------------------------------------ error replies

    def _reject(self, data: bytes, e: BadQuery) -> bytes | None:
        if e.rcode is None:
            self.stats.dropped += 1
            return None
        self.stats.responses[e.rcode] = self.stats.responses.get(e.rcode, 0) + 1
        return self._plain_reply(data, e.rcode)

    def _plain_reply(self, data: bytes, rcode: int) -> bytes | None:
        """Header-only reply with the query's ID (no question: it may not be parseable).

        NOTIMP (an opcode we do not know) sets QR and echoes the opcode but copies no
        other flag: the flags may mean something else under that opcode (RFC 8906
        3.1.4)."""
        if len(data) < 12 or data[2] & 0x80:
            return None
        copied = _OPCODE if rcode == NOTIMP else COPIED_FLAGS | _OPCODE
        flags = QR | (((data[2] << 8) | data[3]) & copied) | rcode
        return data[:2] + struct.pack(">HHHHH", flags, 0, 0, 0, 0)

    def _badvers(self, data: bytes, q: Query) -> bytes:
        self.stats.responses[BADVERS] = self.stats.responses.get(BADVERS, 0) + 1
        opt = records.opt_record(MAX_UDP, BADVERS >> 4, q.do)
        flags = QR | (q.flags & COPIED_FLAGS) | (BADVERS & 0xF)
        return HEADER.pack((data[0] << 8) | data[1], flags, 1, 0, 0, 1) + data[12 : q.end] + opt

    def _badkey(self, data: bytes, q: Query) -> bytes:
        """A TSIG-signed query: no key is configured, so NOTAUTH with TSIG error BADKEY,
        unsigned (RFC 8945 5.2.1: empty MAC, the query's time and fudge echoed)."""
        self.stats.responses[NOTAUTH] = self.stats.responses.get(NOTAUTH, 0) + 1
        assert q.tsig is not None
        key, algorithm, time_fudge = q.tsig
        rdata = algorithm + time_fudge + struct.pack(">HHHH", 0, (data[0] << 8) | data[1],
                                                     BADKEY, 0)  # fmt: skip
        tsig = records.tsig_rr(records.labels(key), rdata)
        opt = records.opt_record(MAX_UDP, 0, q.do) if q.edns else b""
        body = opt + records.pack_after(q.qname, [tsig], 12)
        flags = QR | (q.flags & COPIED_FLAGS) | NOTAUTH
        header = HEADER.pack((data[0] << 8) | data[1], flags, 1, 0, 0, 2 if opt else 1)
        return header + data[12 : q.end] + body

    def _log_query(self, q: Query, proto: str, client: tuple[object, ...], rcode: int) -> None:
        log.info("query %s %s %s %s from %s -> %s", proto, wire.wire_to_text(q.qname),
                 wire.TYPE_NAMES.get(q.qtype, q.qtype), "edns" if q.edns else "-",
                 client[0] if client else "?", wire.RCODE_NAMES.get(rcode, rcode))  # fmt: skip


__all__ = ["EMPTY", "Dep", "ForwardRequest", "Prepared", "TransferRequest", "Zone"]
