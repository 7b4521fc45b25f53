"""Zone transfers (AXFR, RFC 5936) over TCP, for clients inside ``dns.transfer_allow``.

So a BIND, Knot or NSD secondary can serve the cluster's names (say, to resolvers that
only talk to the site's own name servers). Off by default: the allow-list is empty, and
every transfer request is then REFUSED, as is one over UDP or from outside the list
(logged at most once a minute per client, so a scanner cannot flood the log). An IXFR
request gets the whole zone in AXFR form (RFC 1995 section 4: no history is kept). The
SOA serial grows with every change of the view, so a secondary polling the SOA (the
refresh timer: no NOTIFY is sent) sees when to transfer again.

The records are a snapshot taken under the zone's lock, built with dnslib's RR classes
and packed by dnslib off the event loop (a worker thread), at most ``_PER_MESSAGE`` to a
message, each message compressed against the question it repeats.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from dnslib import RR

from idstore.dns import records
from idstore.dns.wire import AA, COPIED_FLAGS, HEADER, QR, Query

if TYPE_CHECKING:
    from idstore.dns.content import Content

log = logging.getLogger(__name__)

_PER_MESSAGE = 200  # records per message: far below 64 KB even for long TXT records
_LOG_EVERY = 60.0  # seconds between refusal logs per client
_MAX_REMEMBERED = 10_000


class TransferRequest:
    """An allowed AXFR the TCP connection should stream (see ``messages``)."""

    __slots__ = ("apex", "data", "q")

    def __init__(self, data: bytes, q: Query, apex: bytes) -> None:
        self.data = data
        self.q = q
        self.apex = apex


class TransferGate:
    """Who may transfer, and the rate-limited log of who was refused."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._logged: dict[str, float] = {}

    def allowed(self, networks: tuple[str, ...], client: object) -> bool:
        if not networks:
            return False
        try:
            ip = ipaddress.ip_address(str(client).split("%", 1)[0])
        except ValueError:
            return False
        return any(ip in ipaddress.ip_network(net) for net in networks)

    def refused(self, client: object, zone: str, why: str) -> None:
        """Log a refused transfer, at most once a minute per client."""
        key = str(client)
        now = self._clock()
        last = self._logged.get(key)
        if last is not None and now - last < _LOG_EVERY:
            return
        if len(self._logged) >= _MAX_REMEMBERED:
            self._logged.clear()
        self._logged[key] = now
        log.warning("zone transfer of %s refused to %s: %s", zone, key, why)


def zone_rrs(content: Content, apex: bytes) -> list[RR]:
    """Every record of the zone at ``apex``, SOA first and last (caller holds the lock)."""
    ttl = content.ttl
    soa = content.soa_rr(apex, ttl)
    out: list[RR] = [soa]
    label = records.labels
    ns = label(content.ns_name)
    out.append(records.ns_rr(label(apex), ns, ttl))
    index = content.index
    if apex != content.apex:  # a reverse zone: its PTR records
        for rev, targets in index.ptr.items():
            if rev.endswith(apex) and content.apex_of(rev) == apex:
                out += [records.ptr_rr(label(rev), label(t), ttl) for t in targets]
        out.append(soa)
        return out
    me = index.members.get(content.identity) if content.identity else None
    if me is not None:
        out += records.address_rrs(ns, me, ttl, None)
    for name, member in index.members.items():
        owner = label(name)
        out += records.address_rrs(owner, member, ttl, None)
        out.append(records.txt_rr(owner, member, ttl))
    for owner, pool in content.srv_pool.items():
        for _, name, m in index.pool_members(pool):
            port = content.member_port(owner, m)
            if port is not None:
                out.append(records.srv_rr(label(owner), label(name), port, ttl))
    out += content.dnssd.zone_rrs(ttl)
    out.append(soa)
    return out


def messages(request: TransferRequest, rrs: list[RR]) -> list[bytes]:
    """The transfer as DNS messages, each repeating the query's ID and question."""
    data, q = request.data, request.q
    flags = QR | AA | (q.flags & COPIED_FLAGS)
    qid = (data[0] << 8) | data[1]
    question = data[12 : q.end]
    out = []
    for start in range(0, len(rrs), _PER_MESSAGE):
        batch = rrs[start : start + _PER_MESSAGE]
        header = HEADER.pack(qid, flags, 1, len(batch), 0, 0)
        out.append(header + question + records.pack_after(q.qname, batch))
    return out
