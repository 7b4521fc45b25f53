"""The authoritative zone: the cluster view turned into DNS answers.

Answers are wire-format bodies (everything after the question) prepared once per
(name, type) and cached until a change touches that name, so answering a query is:
parse header and question, one dict lookup, pack a header, join four byte strings. The
question is copied from the query, which keeps the client's letter case (0x20) and keeps
every compression pointer into it valid, since only the case can differ.

Only positive answers are cached, and only for names that exist, so the cache is bounded
by the view and a flood of random names cannot grow it. Negative answers (NXDOMAIN,
NODATA) are a pointer to the apex inside the question plus a prepared SOA record.

Names served (``<zone>`` = ``dns.zone``):
- every claimed name: A, AAAA, and TXT ``pool=<p>`` ``slot=<n>`` ``node=<id>``;
- ``_<service>._<protocol>.<pool>.<zone>``: SRV of every member (priority 0, weight 1,
  port = the member's published port for the service, else the pool's port; members with
  neither are left out, so a pool without ports answers NODATA), targets' A/AAAA as
  additional records;
- the apex: SOA and NS. The NS target is ``ns.<zone>``, which resolves to the addresses
  of whichever node answers (each node is a name server for the whole zone); NODATA
  while this node holds no slot;
- PTR of every claimed address inside ``dns.reverse_zones`` (which get SOA/NS too).

Thread safety: ``update``/``set_*`` run on any thread and mutate under ``_lock``; the
event loop reads the cache without the lock (single dict lookups are atomic) and takes
the lock only to build a missing answer, so a build can never store an answer computed
from data that an update has since replaced.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence

from idstore.config import MAX_UDP, DnsSettings, PoolSettings
from idstore.dns import wire
from idstore.dns.ratelimit import ALLOW, DROP, RateLimiter
from idstore.dns.stats import DnsStats, cached_code
from idstore.dns.wire import (
    AA,
    AAAA,
    ANY,
    AXFR,
    BADVERS,
    CLASS_IN,
    COPIED_FLAGS,
    FORMERR,
    HEADER,
    IXFR,
    NOERROR,
    NS,
    NXDOMAIN,
    OPT,
    PTR,
    QR,
    REFUSED,
    SERVFAIL,
    SOA,
    SRV,
    TC,
    TXT,
    BadQuery,
    Query,
    Writer,
    name_to_wire,
    opt_record,
)
from idstore.view import Change, Member

log = logging.getLogger(__name__)

# No secondaries transfer this zone; the SOA timers are there for form and tooling.
SOA_REFRESH, SOA_RETRY, SOA_EXPIRE = 3600, 600, 86400
TCP_MAX = 65535
# Room kept free in a TCP answer for header, the longest question and an OPT with NSID.
_BODY_CAP = TCP_MAX - 12 - 259 - 11 - 4 - 255
_UPDATE_CHUNK = 512  # changes applied per lock hold, so queries never wait long
_MAX_REPLIES = 20_000  # bound on remembered whole replies
_A = wire.A

RR = tuple[bytes, int, int, list[bytes | tuple[bytes, bool]]]  # owner, type, ttl, rdata
Variant = tuple[int, int, int, int, int, bytes]  # body length, TC, an, ns, ar, body
_Reply = tuple[bytes, int]  # reply after the ID, stats.cached_code(qtype, rcode)
_Revs = tuple[tuple[bytes, bytes], ...]  # (reverse name, its reverse zone) per address


def _always() -> bool:
    return True


class Prepared:
    """An answer minus header and question: flags/rcode plus bodies of decreasing size.

    The first variant whose body fits the room left by the query wins; when none fits the
    reply is TC=1 with just the question.
    """

    __slots__ = ("flags", "variants")

    def __init__(self, flags: int, variants: tuple[Variant, ...] = ()) -> None:
        self.flags = flags  # AA and the rcode
        self.variants = variants


class ForwardRequest:
    """An out-of-zone query the server should relay upstream (see idstore.dns.forward)."""

    __slots__ = ("fallback", "query")

    def __init__(self, query: bytes, fallback: bytes | None) -> None:
        self.query = query
        self.fallback = fallback  # SERVFAIL to send when no upstream answers


_EMPTY: tuple[Variant, ...] = ((0, 0, 0, 0, 0, b""),)
_TRUNCATED: Variant = (0, TC, 0, 0, 0, b"")  # nothing fits: TC=1 with just the question
_REFUSED = Prepared(REFUSED, _EMPTY)
_SERVFAIL = Prepared(SERVFAIL, _EMPTY)
_FORMERR = Prepared(FORMERR, _EMPTY)


class Zone:
    def __init__(self, dns: DnsSettings, pools: Sequence[PoolSettings]) -> None:
        self.dns = dns
        self.pools = {p.name: p for p in pools}
        self.stats = DnsStats()
        self.forwarding = bool(dns.forward)
        self._lock = threading.Lock()
        self._rrl = RateLimiter(dns.rrl_per_second) if dns.rrl_per_second > 0 else None

        self.apex = name_to_wire(dns.zone)
        self.ns_name = b"\x02ns" + self.apex
        self.hostmaster = b"\x0ahostmaster" + self.apex
        self._reverse = [name_to_wire(z) for z in dns.reverse_zones]
        # Longest first, so the most specific zone wins when one holds another.
        self._apexes = sorted({self.apex, *self._reverse}, key=len, reverse=True)

        self._names: dict[bytes, int] = {}  # every existing name (incl. empty non-terminals)
        self._members: dict[bytes, Member] = {}
        self._slots: dict[tuple[str, int], tuple[bytes, Member, _Revs]] = {}
        self._pool_members: dict[str, dict[int, Member]] = {p: {} for p in self.pools}
        self._srv_pool: dict[bytes, str] = {}
        # reverse name -> member names (a tuple: nearly always one name, and a dict per
        # address would cost more than the rest of the entry at 10,000 members)
        self._ptr: dict[bytes, tuple[bytes, ...]] = {}
        self._cache: dict[tuple[bytes, int], Prepared] = {}

        self._identity: bytes | None = None
        self._identity_live: Callable[[], bool] = _always
        self._nsid = b""
        self._stale_since: float | None = None
        self._serial = int(time.time()) & 0xFFFFFFFF
        self._ttl = dns.ttl
        self._neg_ttl = dns.negative_ttl
        self._soa_tail: dict[bytes, bytes] = {}
        self._opt: tuple[bytes, bytes] = (b"", b"")
        self._opt_nsid: tuple[bytes, bytes] = (b"", b"")
        self._errors = 0
        # Whole UDP replies by query bytes after the ID: the hot path of a repeated query
        # is one lookup and a concatenation. Replaced (never edited) after every change of
        # state, so a reply built from old state can only land in a discarded dict.
        self._replies: dict[bytes, _Reply] = {}

        for apex in self._apexes:
            self._names[apex] = 1
        self._add_name(self.ns_name, self.apex)
        for pool in self.pools.values():
            owner = name_to_wire(f"_{pool.service}._{pool.protocol}.{pool.name}.{dns.zone}")
            self._srv_pool[owner] = pool.name
            self._add_name(owner, self.apex)
        self._rebuild_soa()
        self._rebuild_opt()

    # ------------------------------------------------------------------ view input

    def update(self, changes: Sequence[Change]) -> None:
        """Apply a batch of (pool, slot, member or None) from the view; any thread."""
        for start in range(0, len(changes), _UPDATE_CHUNK):
            with self._lock:
                for pool, slot, member in changes[start : start + _UPDATE_CHUNK]:
                    self._apply(pool, slot, member)
                self._bump_serial()
                self._replies = {}

    def set_identity(self, name: str | None, live: Callable[[], bool] | None = None) -> None:
        """This node's claimed name (NSID, ``ns.<zone>``); None while it holds no slot.

        ``live`` is asked at the moment NSID is about to assert the name: a node that was
        paused past its session's deadline must not answer with the name before its
        backend's thread has noticed (and reported LOST)."""
        self._identity_live = live or _always
        with self._lock:
            self._identity = name_to_wire(name) if name else None
            self._nsid = name.encode("ascii", "replace")[:255] if name else b""
            self._rebuild_opt()
            self._forget_ns()
            self._replies = {}

    def set_stale(self, since: float | None) -> None:
        """time.monotonic() since which the view is unconfirmed, or None when fresh."""
        with self._lock:
            self._stale_since = since
            self._retune()

    def reconfigure(self, dns: DnsSettings) -> None:
        """Apply reloaded DNS settings (SIGHUP): TTLs, stale limits, forwarding, query
        logging. The zone, its reverse zones, the listeners and the rate limit are fixed
        for the life of the process (the node reports them as needing a restart)."""
        with self._lock:
            self.dns = dns
            self.forwarding = bool(dns.forward)
            self._retune(rebuild=True)  # cached answers carry the old TTLs

    def _retune(self, rebuild: bool = False) -> None:
        """Answer TTLs for the settings and the stale state; the caller holds the lock.

        Replies built for the earlier state are dropped: max_stale and the stale TTL
        decide what they say. Cached answers go when their TTLs change (or ``rebuild``)."""
        self._replies = {}
        since = self._stale_since
        cap = self.dns.stale_ttl if since is not None else None
        ttl = min(self.dns.ttl, cap) if cap is not None else self.dns.ttl
        neg = min(self.dns.negative_ttl, cap) if cap is not None else self.dns.negative_ttl
        if rebuild or (ttl, neg) != (self._ttl, self._neg_ttl):
            self._ttl, self._neg_ttl = ttl, neg
            self._cache = {}
            self._rebuild_soa()

    @property
    def serial(self) -> int:
        return self._serial

    def _apply(self, pool: str, slot: int, member: Member | None) -> None:
        old = self._slots.pop((pool, slot), None)
        if old is not None:
            self._unindex(pool, slot, *old)
        if member is None:
            return
        try:
            name = name_to_wire(member.name)
        except (ValueError, UnicodeError):
            log.warning("not serving %r: not a valid DNS name", member.name)
            return
        if not wire.is_subdomain(name, self.apex) or name == self.apex:
            log.warning("not serving %s: outside the zone %s", member.name, self.dns.zone)
            return
        revs = self._reverse_names(member)
        self._slots[(pool, slot)] = (name, member, revs)
        self._members[name] = member
        self._add_name(name, self.apex)
        self._pool_members.setdefault(pool, {})[slot] = member
        for rev, apex in revs:
            targets = self._ptr.get(rev, ())
            if name not in targets:
                self._ptr[rev] = (*targets, name)
            self._add_name(rev, apex)
        self._forget(name, pool, revs)

    def _unindex(self, pool: str, slot: int, name: bytes, member: Member, revs: _Revs) -> None:
        if self._members.get(name) is member:
            del self._members[name]
        self._drop_name(name, self.apex)
        self._pool_members.get(pool, {}).pop(slot, None)
        for rev, apex in revs:
            targets = self._ptr.get(rev)
            if targets is not None:
                rest = tuple(t for t in targets if t != name)
                if rest:
                    self._ptr[rev] = rest
                else:
                    del self._ptr[rev]
            self._drop_name(rev, apex)
        self._forget(name, pool, revs)

    def _reverse_names(self, member: Member) -> _Revs:
        if not self._reverse:
            return ()
        out = []
        for addr in member.addresses:
            try:
                rev = name_to_wire(ipaddress.ip_address(addr).reverse_pointer)
            except ValueError:
                continue
            for apex in self._reverse:
                if wire.is_subdomain(rev, apex):
                    out.append((rev, apex))
                    break
        return tuple(out)

    def _add_name(self, name: bytes, apex: bytes) -> None:
        """Count ``name`` and every name between it and the apex (empty non-terminals)."""
        stop = len(name) - len(apex)
        for off in wire.label_offsets(name):
            if off >= stop:
                break
            suffix = name[off:]
            self._names[suffix] = self._names.get(suffix, 0) + 1

    def _drop_name(self, name: bytes, apex: bytes) -> None:
        stop = len(name) - len(apex)
        for off in wire.label_offsets(name):
            if off >= stop:
                break
            suffix = name[off:]
            left = self._names.get(suffix, 0) - 1
            if left > 0:
                self._names[suffix] = left
            else:
                self._names.pop(suffix, None)

    def _forget(self, name: bytes, pool: str, revs: _Revs) -> None:
        """Drop every cached answer a change of this member can alter."""
        cache = self._cache
        for qtype in (_A, AAAA, TXT, ANY):
            cache.pop((name, qtype), None)
        for owner, p in self._srv_pool.items():
            if p == pool:
                cache.pop((owner, SRV), None)
                cache.pop((owner, ANY), None)
        for rev, _ in revs:
            cache.pop((rev, PTR), None)
            cache.pop((rev, ANY), None)
        if name == self._identity:
            self._forget_ns()

    def _forget_ns(self) -> None:
        for key in ((self.ns_name, _A), (self.ns_name, AAAA), (self.ns_name, ANY)):
            self._cache.pop(key, None)
        for apex in self._apexes:
            self._cache.pop((apex, NS), None)
            self._cache.pop((apex, ANY), None)

    def _bump_serial(self) -> None:
        self._serial = (self._serial + 1) & 0xFFFFFFFF
        for apex in self._apexes:
            self._cache.pop((apex, SOA), None)
            self._cache.pop((apex, ANY), None)
        self._rebuild_soa()

    def _rebuild_soa(self) -> None:
        """The SOA record of negative answers, minus its owner (a pointer per query)."""
        rdata = self.ns_name + self.hostmaster + self._soa_numbers()
        fixed = struct.pack(">HHIH", SOA, CLASS_IN, self._neg_ttl, len(rdata))
        self._soa_tail = {apex: fixed + rdata for apex in self._apexes}

    def _soa_numbers(self) -> bytes:
        return struct.pack(">IIIII", self._serial, SOA_REFRESH, SOA_RETRY, SOA_EXPIRE,
                           self._neg_ttl)  # fmt: skip

    def _rebuild_opt(self) -> None:
        self._opt = (opt_record(MAX_UDP), opt_record(MAX_UDP, do=True))
        if self._nsid:
            nsid = self._nsid
            self._opt_nsid = (opt_record(MAX_UDP, nsid=nsid), opt_record(MAX_UDP, 0, True, nsid))
        else:
            self._opt_nsid = self._opt

    # ------------------------------------------------------------------ request path

    def answer(self, query: bytes, proto: str, client: tuple[str, int] | tuple[object, ...]
               ) -> bytes | None:  # fmt: skip
        """The response to ``query`` (None = send nothing). Never raises.

        Out-of-zone queries get REFUSED here even when forwarding is configured: relaying
        needs the event loop, which ``resolve`` hands to the server.
        """
        result = self.resolve(query, proto, client)
        if isinstance(result, ForwardRequest):
            return self._plain_reply(query, REFUSED)
        return result

    def resolve(self, query: bytes, proto: str, client: tuple[object, ...]
                ) -> bytes | ForwardRequest | None:  # fmt: skip
        """Like ``answer`` but out-of-zone queries come back as a ForwardRequest when
        forwarding is configured."""
        if proto == "udp":
            hit = self._replies.get(query[2:])
            if hit is not None:
                cached = self.stats.cached
                cached[hit[1]] = cached.get(hit[1], 0) + 1
                return query[:2] + hit[0]
        try:
            return self._resolve(query, proto, client)
        except Exception as e:  # a bug must cost one answer, never the server
            self._errors += 1
            if self._errors <= 10 or self._errors % 1000 == 0:
                log.error("internal error answering a query (%d so far): %r", self._errors, e,
                          exc_info=self._errors <= 3)  # fmt: skip
            return self._plain_reply(query, SERVFAIL)

    def _resolve(self, data: bytes, proto: str, client: tuple[object, ...]
                 ) -> bytes | ForwardRequest | None:  # fmt: skip
        replies = self._replies  # taken before any state is read; see __init__
        try:
            q = wire.parse_query(data)
        except BadQuery as e:
            return self._reject(data, e)
        stats = self.stats
        key = (proto, q.qtype)
        stats.requests[key] = stats.requests.get(key, 0) + 1
        if q.edns:
            if q.version:
                return self._badvers(data, q)
            nsid = q.nsid and self._identity_live()
            opt = (self._opt_nsid if nsid else self._opt)[q.do]
            limit = TCP_MAX if proto == "tcp" else min(max(q.udp_size, 512), MAX_UDP)
        else:
            opt = b""
            limit = TCP_MAX if proto == "tcp" else 512
        if self._rrl is not None and proto == "udp":
            verdict = self._rrl.check(str(client[0]))
            if verdict != ALLOW:
                stats.rate_limited += 1
                if verdict == DROP:
                    return None
                limit = 0  # slip: a TC=1 reply with just the question
        entry = self._cache.get((q.qname, q.qtype))
        if entry is None or self._stale_since is not None or q.qclass != CLASS_IN:
            found = self._lookup(q)
            if found is None:
                if self.forwarding:
                    return ForwardRequest(data, self._plain_reply(data, SERVFAIL))
                found = _REFUSED
            entry = found
        room = limit - q.end - len(opt)
        for variant in entry.variants:
            if variant[0] <= room:
                break
        else:
            variant = _TRUNCATED
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
            if len(replies) >= _MAX_REPLIES:
                replies.clear()  # a flood of distinct queries (random case, cookies)
            replies[data[2:]] = (reply[2:], cached_code(q.qtype, rcode))
        return reply

    @property
    def replies(self) -> dict[bytes, _Reply]:
        """The whole-reply cache of UDP answers right now: query bytes after the ID ->
        (reply after the ID, ``stats.cached`` key). For the server's batch path, which
        must count every replay in ``stats.cached``; never mutate it."""
        return self._replies

    def _replies_ok(self) -> bool:
        """Is a reply a pure function of the query bytes and the view right now?"""
        return self._rrl is None and self._stale_since is None and not self.dns.log_queries

    def _lookup(self, q: Query) -> Prepared | None:
        """The answer for a cache miss (or any query while stale); None = not our zone."""
        qname = q.qname
        apex = self._apex_of(qname)
        if apex is None:
            return None
        since = self._stale_since
        if since is not None and time.monotonic() - since > self.dns.max_stale:
            return _SERVFAIL
        if q.qclass != CLASS_IN:
            return _REFUSED
        if q.qtype in (AXFR, IXFR):
            return _REFUSED  # no zone transfers: the view lives in the store
        if q.qtype == OPT:
            return _FORMERR
        with self._lock:
            key = (qname, q.qtype)
            entry = self._cache.get(key)
            if entry is not None:
                return entry
            if qname not in self._names:
                return self._negative(qname, apex, NXDOMAIN)
            answers, additional = self._records(qname, q.qtype, apex)
            if not answers:
                return self._negative(qname, apex, NOERROR)
            entry = self._positive(qname, answers, additional)
            self._cache[key] = entry
            return entry

    def _apex_of(self, qname: bytes) -> bytes | None:
        for apex in self._apexes:
            if wire.is_subdomain(qname, apex):
                return apex
        return None

    def _negative(self, qname: bytes, apex: bytes, rcode: int) -> Prepared:
        owner = struct.pack(">H", 0xC000 | (12 + len(qname) - len(apex)))
        body = owner + self._soa_tail[apex]
        return Prepared(AA | rcode, ((len(body), 0, 0, 1, 0, body),))

    def _positive(self, qname: bytes, answers: list[RR], additional: list[RR]) -> Prepared:
        w = Writer(qname)
        ends = []
        for rr in answers:
            _write_rr(w, rr)
            ends.append(len(w))
        answer_len = len(w)
        added = 0
        for rr in additional:
            before = len(w)
            _write_rr(w, rr)
            if len(w) > _BODY_CAP:
                w.truncate(before)
                break
            added += 1
        body = bytes(w.buf)
        variants: list[Variant] = []
        if answer_len <= _BODY_CAP:
            variants.append((len(body), 0, len(answers), 0, added, body))
            if added:
                variants.append((answer_len, 0, len(answers), 0, 0, body[:answer_len]))
        else:
            # More than TCP can carry (a pool of thousands in one SRV answer): as many
            # records as fit, flagged TC so the client knows the set is partial.
            fit = sum(1 for end in ends if end <= _BODY_CAP)
            cut = ends[fit - 1] if fit else 0
            variants.append((cut, TC, fit, 0, 0, body[:cut]))
        return Prepared(AA | NOERROR, tuple(variants))

    def _records(self, qname: bytes, qtype: int, apex: bytes) -> tuple[list[RR], list[RR]]:
        """Answer and additional records of an existing name (empty answer = NODATA)."""
        answers: list[RR] = []
        additional: list[RR] = []
        member = self._members.get(qname)
        if member is None and qname == self.ns_name and self._identity is not None:
            member = self._members.get(self._identity)
        if member is not None:
            if qtype in (_A, AAAA, ANY):
                answers += _address_records(qname, member, self._ttl, qtype)
            if qtype in (TXT, ANY) and qname != self.ns_name:
                answers.append((qname, TXT, self._ttl, [_txt(member)]))
        if qname == apex:
            if qtype in (SOA, ANY):
                rdata: list[bytes | tuple[bytes, bool]] = [
                    (self.ns_name, True),
                    (self.hostmaster, True),
                    self._soa_numbers(),
                ]
                answers.append((qname, SOA, self._ttl, rdata))
            if qtype in (NS, ANY):
                answers.append((qname, NS, self._ttl, [(self.ns_name, True)]))
                me = self._members.get(self._identity) if self._identity else None
                if me is not None:
                    additional += _address_records(self.ns_name, me, self._ttl, ANY)
        pool = self._srv_pool.get(qname)
        if pool is not None and qtype in (SRV, ANY):
            self._srv(qname, pool, answers, additional)
        targets = self._ptr.get(qname)
        if targets and qtype in (PTR, ANY):
            answers += [(qname, PTR, self._ttl, [(t, True)]) for t in targets]
        return answers, additional

    def _srv(self, qname: bytes, pool: str, answers: list[RR], additional: list[RR]) -> None:
        """Every member with a port, lowest slot first, targets' addresses as additional.

        A pool of thousands does not fit one message (about 1,700 SRV records fit TCP's
        64 KB): records are built only until a lower bound of their wire size passes
        what any answer can carry, so ``_positive`` still sees the overflow and sets TC,
        and a 10,000-member pool costs the records that fit, not 10,000 (the build runs
        on the event loop after every change of the pool)."""
        settings = self.pools[pool]
        members = self._pool_members.get(pool, {})
        slots = self._slots
        size = 0  # lower bound of the answers' wire size: owner compressed to a pointer
        extra = 0  # the same for the additional records
        for slot in sorted(members):
            m = members[slot]
            port = m.ports.get(settings.service, settings.port)
            if port is None:
                continue
            known = slots.get((pool, slot))
            target = known[0] if known is not None else name_to_wire(m.name)
            fixed = struct.pack(">HHH", 0, 1, port)
            # RFC 2782: the target is never compressed.
            answers.append((qname, SRV, self._ttl, [fixed, (target, False)]))
            size += 18 + len(target)
            if size > _BODY_CAP:
                additional.clear()  # answers overflow: _positive sends no additional
                return
            if size + extra <= _BODY_CAP:
                records = _address_records(target, m, self._ttl, ANY)
                additional += records
                extra += 16 * len(records)

    # ------------------------------------------------------------------ error replies

    def _reject(self, data: bytes, e: BadQuery) -> bytes | None:
        if e.rcode is None:
            self.stats.dropped += 1
            return None
        self.stats.responses[e.rcode] = self.stats.responses.get(e.rcode, 0) + 1
        return self._plain_reply(data, e.rcode)

    def _plain_reply(self, data: bytes, rcode: int) -> bytes | None:
        """Header-only reply with the query's ID (no question: it may not be parseable)."""
        if len(data) < 12 or data[2] & 0x80:
            return None
        flags = QR | (((data[2] << 8) | data[3]) & (COPIED_FLAGS | 0x7800)) | rcode
        return data[:2] + struct.pack(">HHHHH", flags, 0, 0, 0, 0)

    def _badvers(self, data: bytes, q: Query) -> bytes:
        self.stats.responses[BADVERS] = self.stats.responses.get(BADVERS, 0) + 1
        opt = opt_record(MAX_UDP, BADVERS >> 4, q.do)
        flags = QR | (q.flags & COPIED_FLAGS) | (BADVERS & 0xF)
        return HEADER.pack((data[0] << 8) | data[1], flags, 1, 0, 0, 1) + data[12 : q.end] + opt

    def _log_query(self, q: Query, proto: str, client: tuple[object, ...], rcode: int) -> None:
        log.info("query %s %s %s %s from %s -> %s", proto, wire.wire_to_text(q.qname),
                 wire.TYPE_NAMES.get(q.qtype, q.qtype), "edns" if q.edns else "-",
                 client[0] if client else "?", wire.RCODE_NAMES.get(rcode, rcode))  # fmt: skip


# --------------------------------------------------------------------------- records


def _write_rr(w: Writer, rr: RR) -> None:
    owner, rtype, ttl, parts = rr
    at = w.rr(owner, rtype, ttl)
    for part in parts:
        if isinstance(part, bytes):
            w.buf += part
        else:
            w.name(part[0], part[1])
    w.end_rdata(at)


def _address_records(owner: bytes, member: Member, ttl: int, qtype: int) -> list[RR]:
    out: list[RR] = []
    for addr in member.addresses:
        v6 = ":" in addr
        if (v6 and qtype == _A) or (not v6 and qtype == AAAA):
            continue
        try:
            packed = socket.inet_pton(socket.AF_INET6 if v6 else socket.AF_INET, addr)
        except OSError:
            continue
        out.append((owner, AAAA if v6 else _A, ttl, [packed]))
    return out


def _txt(member: Member) -> bytes:
    out = bytearray()
    for text in (f"pool={member.pool}", f"slot={member.slot}", f"node={member.node_id}"):
        raw = text.encode("utf-8", "replace")[:255]
        out.append(len(raw))
        out += raw
    return bytes(out)
