"""What the zone says: the records of every name, and which answers a change invalidates.

Names served (``<zone>`` = ``dns.zone``):
- every claimed name: A, AAAA, and TXT ``pool=<p>`` ``slot=<n>`` ``node=<id>``;
- ``_<service>._<protocol>.<pool>.<zone>``: SRV of every member (priority 0, weight 1,
  port = the member's published port for the service, else the pool's port; members with
  neither are left out, so a pool without ports answers NODATA), targets' A/AAAA as
  additional records; a pool with several named ports (``ports = {grpc = ..., master =
  ...}``) has one such SRV owner per port name, ``_<port name>._<protocol>.<pool>``;
- DNS-SD browsing (RFC 6763), see idstore.dns.dnssd;
- the apex: SOA and NS. The NS target is ``ns.<zone>``, which resolves to the addresses
  of whichever node answers (each node is a name server for the whole zone); NODATA
  while this node holds no slot. The SOA serial grows with every change of the view;
- PTR of every claimed address inside ``dns.reverse_zones`` (which get SOA/NS too); with
  ``reverse_zones`` not set, of every claimed address, in zones derived from the claims
  (idstore.dns.reverse), which exist while a claim has an address in them.

Answers are cached by (name, type) as ``Prepared`` (idstore.dns.answers); a change pops
exactly the entries it can alter and marks them dead, which is how the whole-reply cache
learns of it. Callers hold the zone's lock around everything here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from dnslib import RR

from idstore.config import DnsSettings, PoolSettings
from idstore.dns import records, reverse, wire
from idstore.dns.answers import BODY_CAP, Chunk, Prepared, negative, positive
from idstore.dns.dnssd import DnsSd
from idstore.dns.index import NameIndex, Revs
from idstore.dns.wire import AA, AAAA, ANY, NOERROR, NS, NXDOMAIN, PTR, SOA, SRV, TXT, name_to_wire
from idstore.view import Member

_A = wire.A
_WANT = {_A: "A", AAAA: "AAAA", ANY: None}


class Content:
    def __init__(self, dns: DnsSettings, pools: Sequence[PoolSettings]) -> None:
        self.dns = dns
        self.pools = {p.name: p for p in pools}
        self.apex = name_to_wire(dns.zone)
        self.ns_name = b"\x02ns" + self.apex
        self.hostmaster = b"\x0ahostmaster" + self.apex
        self.reverse = [name_to_wire(z) for z in dns.reverse_zones]
        # Longest first, so the most specific zone wins when one holds another.
        self.apexes = sorted({self.apex, *self.reverse}, key=len, reverse=True)
        # reverse zones given (even when the settings were made in code with the
        # default reverse_auto) are exactly what is served
        self.index = NameIndex(self.apex, self.reverse, dns.reverse_auto and not self.reverse)
        # Derived reverse zones (dns.reverse_auto) -> addresses in them. When one comes or
        # goes, names that were out of zone come in (or leave): zones_changed tells the
        # zone to drop its whole-reply cache, where their REFUSED replies may sit.
        self.auto_zones: dict[bytes, int] = {}
        self.zones_changed = False
        self.cache: dict[tuple[bytes, int], Prepared] = {}
        self._negatives: dict[tuple[bytes, int, int], Prepared] = {}
        self.identity: bytes | None = None
        self._nsid = b""
        self.serial = int(time.time()) & 0xFFFFFFFF
        self.ttl = dns.ttl
        self.neg_ttl = dns.negative_ttl
        # SRV owner -> pool and the pool's port it lists; pool -> its SRV owners (one per
        # named port; the service's when the pool has no ports)
        self.srv_pool: dict[bytes, str] = {}
        self.srv_port: dict[bytes, str] = {}
        self.pool_owners: dict[str, list[bytes]] = {}
        for apex in self.apexes:
            self.index.names[apex] = 1
        self.index.add_name(self.ns_name, self.apex)
        for pool in self.pools.values():
            for port_name in [p.name for p in pool.ports] or [pool.service]:
                owner = name_to_wire(f"_{port_name}._{pool.protocol}.{pool.name}.{dns.zone}")
                self.srv_pool[owner] = pool.name
                self.srv_port[owner] = port_name
                self.pool_owners.setdefault(pool.name, []).append(owner)
                self.index.add_name(owner, self.apex)
        self.dnssd = DnsSd(self.apex, list(self.pools.values()), self.index)

    # ------------------------------------------------------------------ changes

    def apply(self, pool: str, slot: int, member: Member | None) -> None:
        settings = self.pools.get(pool)
        old = self.index.apply(pool, slot, member)
        if old is not None:
            self._forget(old[0], pool, old[1], self.dnssd.touched(settings, slot))
            self._count_zones(old[1], -1)
        if member is None:
            return
        new = self.index.add(pool, slot, member)
        if new is not None:
            self._count_zones(new[1], 1)
            self._forget(new[0], pool, new[1], self.dnssd.touched(settings, slot))

    def _count_zones(self, revs: Revs, step: int) -> None:
        """Derived reverse zones: one comes with its first address, goes with its last."""
        if not self.index.auto_reverse:
            return
        names = self.index.names
        for _, zone in revs:
            count = self.auto_zones.get(zone, 0) + step
            if count > 0:
                if zone not in self.auto_zones:
                    names[zone] = names.get(zone, 0) + 1
                    self.zones_changed = True
                self.auto_zones[zone] = count
            elif self.auto_zones.pop(zone, None) is not None:
                if names.get(zone, 0) <= 1:
                    names.pop(zone, None)
                else:
                    names[zone] -= 1
                for qtype in (SOA, NS, ANY):
                    self._drop((zone, qtype))
                self.zones_changed = True

    def member_port(self, owner: bytes, member: Member) -> int | None:
        """The port the SRV owner ``owner`` gives ``member`` (None: left out)."""
        return self.pools[self.srv_pool[owner]].member_port(member.ports, self.srv_port[owner])

    def all_apexes(self) -> list[bytes]:
        return [*self.apexes, *self.auto_zones]

    def _drop(self, key: tuple[bytes, int]) -> None:
        entry = self.cache.pop(key, None)
        if entry is not None:
            entry.live = False

    def _forget(self, name: bytes, pool: str, revs: Revs, keys: list[tuple[bytes, int]]
                ) -> None:  # fmt: skip
        """Drop every cached answer a change of this member can alter."""
        for qtype in (_A, AAAA, TXT, ANY):
            self._drop((name, qtype))
        owners = self.pool_owners.get(pool, [])
        self.index.forget_srv(name, owners)
        for owner in owners:
            self._drop((owner, SRV))
            self._drop((owner, ANY))
        for key in keys:  # DNS-SD answers naming this member
            self._drop(key)
        for rev, _ in revs:
            self._drop((rev, PTR))
            self._drop((rev, ANY))
        if name == self.identity:
            self.forget_ns()

    def forget_ns(self) -> None:
        for qtype in (_A, AAAA, ANY):
            self._drop((self.ns_name, qtype))
        for apex in self.all_apexes():
            self._drop((apex, NS))
            self._drop((apex, ANY))

    def forget_all(self) -> None:
        """Every answer goes (new TTLs): each is marked dead for the reply cache."""
        for entry in self.cache.values():
            entry.live = False
        self.cache = {}
        self.index.srv_chunks.clear()
        self.dnssd.ptr_chunks.clear()
        self._forget_negatives()

    def _forget_negatives(self) -> None:
        for entry in self._negatives.values():
            entry.live = False
        self._negatives = {}

    def bump_serial(self) -> None:
        """A new SOA serial: what the SOA says (apex SOA, every negative answer) goes."""
        self.serial = (self.serial + 1) & 0xFFFFFFFF
        for apex in self.all_apexes():
            self._drop((apex, SOA))
            self._drop((apex, ANY))
        self._forget_negatives()

    # ------------------------------------------------------------------ answers

    def apex_of(self, qname: bytes) -> bytes | None:
        for apex in self.apexes:
            if wire.is_subdomain(qname, apex):
                return apex
        if self.auto_zones:  # one lookup, however many derived zones there are
            zone = reverse.zone_of(qname)
            if zone is not None and zone in self.auto_zones:
                return zone
        return None

    def prepare(self, qname: bytes, qtype: int, apex: bytes) -> Prepared:
        """The (cached) answer of an in-zone name."""
        key = (qname, qtype)
        entry = self.cache.get(key)
        if entry is not None:
            return entry
        if qname not in self.index.names and not self.dnssd.exists(qname):
            return self._negative(qname, apex, NXDOMAIN)
        answers, additional = self._records(qname, qtype, apex)
        if not answers:
            return self._negative(qname, apex, NOERROR)
        entry = positive(AA, answers, additional)
        self.cache[key] = entry
        return entry

    def soa_rr(self, apex: bytes, ttl: int) -> RR:
        return records.soa_rr(records.labels(apex), records.labels(self.ns_name),
                              records.labels(self.hostmaster), self.serial, ttl,
                              self.neg_ttl)  # fmt: skip

    def _negative(self, qname: bytes, apex: bytes, rcode: int) -> Prepared:
        """NXDOMAIN/NODATA; its SOA is packed once per serial and position of the apex
        in the question (the owner is a pointer into the question)."""
        offset = 12 + len(qname) - len(apex)
        key = (apex, offset, rcode)
        entry = self._negatives.get(key)
        if entry is None:
            chunk = records.pack_after(apex, [self.soa_rr(apex, self.neg_ttl)], offset)
            entry = self._negatives[key] = negative(AA | rcode, chunk)
        return entry

    def _records(self, qname: bytes, qtype: int, apex: bytes) -> tuple[list[Chunk], list[Chunk]]:
        """Answer and additional chunks of an existing name (no answer = NODATA)."""
        answers: list[Chunk] = []
        additional: list[Chunk] = []
        owner = records.labels(qname)
        index = self.index
        member = index.members.get(qname)
        if member is None and qname == self.ns_name and self.identity is not None:
            member = index.members.get(self.identity)
        rrs: list[RR] = []
        if member is not None:
            if qtype in _WANT:
                rrs += records.address_rrs(owner, member, self.ttl, _WANT[qtype])
            if qtype in (TXT, ANY) and qname != self.ns_name:
                rrs.append(records.txt_rr(owner, member, self.ttl))
        if qname == apex:
            if qtype in (SOA, ANY):
                rrs.append(self.soa_rr(apex, self.ttl))
            if qtype in (NS, ANY):
                rrs.append(records.ns_rr(owner, records.labels(self.ns_name), self.ttl))
                me = index.members.get(self.identity) if self.identity else None
                if me is not None:
                    glue = records.address_rrs(records.labels(self.ns_name), me, self.ttl, None)
                    additional.append((records.pack_after(qname, glue), len(glue)))
        targets = index.ptr.get(qname)
        if targets and qtype in (PTR, ANY):
            rrs += [records.ptr_rr(owner, records.labels(t), self.ttl) for t in targets]
        rrs += self.dnssd.records(qname, qtype, self.ttl)
        if rrs:
            answers.append((records.pack_after(qname, rrs), len(rrs)))
        answers += self.dnssd.instance_chunks(qname, qtype, self.ttl)
        pool = self.srv_pool.get(qname)
        if pool is not None and qtype in (SRV, ANY):
            self._srv(qname, pool, answers, additional)
        return answers, additional

    def _srv(self, qname: bytes, pool: str, answers: list[Chunk], additional: list[Chunk]
             ) -> None:  # fmt: skip
        """Every member with a port, lowest slot first, targets' addresses as additional.

        A pool of thousands does not fit one message (about 1,700 SRV records fit TCP's
        64 KB): members are packed only until their records pass what any answer can
        carry, so ``positive`` still sees the overflow and sets TC, and a 10,000-member
        pool costs the records that fit, not 10,000 (a member's records are packed once
        per change of that member; the answer joins them)."""
        size = 0
        for _, name, m in self.index.pool_members(pool):
            port = self.member_port(qname, m)
            if port is None:
                continue
            srv, addrs = self.index.srv_chunk(qname, name, m, port, self.ttl)
            answers.append(srv)
            additional.append(addrs)
            size += len(srv[0])
            if size > BODY_CAP:
                return
