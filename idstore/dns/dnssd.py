"""DNS-SD browsing (RFC 6763) over the zone, so DNS-SD tools and libraries find the cluster.

- ``_services._dns-sd._udp.<zone>`` PTR: every service type, ``_<service>._<proto>.<zone>``
  for each distinct (service, protocol) of the configured pools (RFC 6763 section 9);
- ``_<service>._<proto>.<zone>`` PTR: every instance of that type, one per member with a
  port (the member's published port for the service, else the pool's), named
  ``<pool>-<slot>._<service>._<proto>.<zone>``: the pool and slot make it unique across
  pools whatever their name patterns;
- each instance: SRV (priority 0, weight 1, port, target = the member's name) and TXT
  ``pool=<p>`` ``slot=<n>`` ``node=<id>`` (RFC 6763 section 6 key=value strings).

Nothing is kept per member but each instance's PTR record, packed once when a type is
first browsed (a type's PTR answer joins them, like a pool's SRV answer): an instance
name is parsed back into its pool and slot, whose member the name index holds.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from dnslib import RR

from idstore.config import PoolSettings
from idstore.dns import records
from idstore.dns.answers import BODY_CAP, Chunk
from idstore.dns.index import NameIndex
from idstore.dns.wire import ANY, PTR, SRV, TXT, name_to_wire
from idstore.view import Member

Key = tuple[bytes, int]


def _label(text: str) -> bytes:
    raw = text.lower().encode("utf-8", "replace")[:63]
    return bytes([len(raw)]) + raw


class DnsSd:
    def __init__(self, apex: bytes, pools: Sequence[PoolSettings], index: NameIndex) -> None:
        self.apex = apex
        self.index = index
        self.services = b"\x09_services\x07_dns-sd\x04_udp" + apex
        self.type_of_pool: dict[str, bytes] = {}
        self.pools_of_type: dict[bytes, list[PoolSettings]] = {}
        self.pool_by_label: dict[bytes, PoolSettings] = {}
        for pool in pools:
            owner = _label(f"_{pool.service}") + _label(f"_{pool.protocol}") + apex
            self.type_of_pool[pool.name] = owner
            self.pools_of_type.setdefault(owner, []).append(pool)
            self.pool_by_label[pool.name.lower().encode("utf-8", "replace")] = pool
        self.ptr_chunks: dict[bytes, Chunk] = {}
        index.add_name(self.services, apex)
        for owner in self.pools_of_type:
            index.add_name(owner, apex)

    def _port(self, pool: PoolSettings, member: Member) -> int | None:
        return pool.member_port(member.ports)

    def instance(self, pool: PoolSettings, slot: int) -> bytes:
        return _label(f"{pool.name}-{slot}") + self.type_of_pool[pool.name]

    def _member(self, qname: bytes) -> tuple[PoolSettings, int, bytes, Member] | None:
        """The (pool, slot, name, member) an instance name stands for, if it exists:
        parsed from the name itself, so nothing is kept per member."""
        length = qname[0] if qname else 0
        first = qname[1 : 1 + length]
        pool_label, dash, slot_text = first.rpartition(b"-")
        pool = self.pool_by_label.get(pool_label)
        if not dash or pool is None or not slot_text.isdigit() or len(slot_text) > 9:
            return None
        if qname[1 + length :] != self.type_of_pool[pool.name]:
            return None
        slot = int(slot_text)
        name = self.index.pool_slots.get(pool.name, {}).get(slot)
        member = self.index.members.get(name) if name is not None else None
        if name is None or member is None or self._port(pool, member) is None:
            return None
        if qname != self.instance(pool, slot):  # e.g. a leading zero in the slot
            return None
        return pool, slot, name, member

    def exists(self, qname: bytes) -> bool:
        return self._member(qname) is not None

    def touched(self, pool: PoolSettings | None, slot: int) -> list[Key]:
        """The answers a change of (pool, slot) can alter."""
        if pool is None:
            return []
        owner = self.type_of_pool[pool.name]
        instance = self.instance(pool, slot)
        self.ptr_chunks.pop(instance, None)
        return [(owner, PTR), (owner, ANY), (instance, SRV), (instance, TXT), (instance, ANY)]

    def records(self, qname: bytes, qtype: int, ttl: int) -> list[RR]:
        """The instance's SRV/TXT, or the service-type list."""
        owner = records.labels(qname)
        if qname == self.services and qtype in (PTR, ANY):
            return [records.ptr_rr(owner, records.labels(t), ttl) for t in self.pools_of_type]
        found = self._member(qname) if qtype in (SRV, TXT, ANY) else None
        if found is None:
            return []
        pool, _, name, member = found
        out = []
        port = self._port(pool, member)
        if qtype in (SRV, ANY) and port is not None:
            out.append(records.srv_rr(owner, records.labels(name), port, ttl))
        if qtype in (TXT, ANY):
            out.append(records.txt_rr(owner, member, ttl))
        return out

    def _instances(self, pools: list[PoolSettings]) -> Iterator[bytes]:
        for pool in pools:
            for slot, _, member in self.index.pool_members(pool.name):
                if self._port(pool, member) is not None:
                    yield self.instance(pool, slot)

    def instance_chunks(self, qname: bytes, qtype: int, ttl: int) -> list[Chunk]:
        """The PTR answer of a service type: its instances by pool, then slot; packed
        one instance at a time (and kept), only as many as any message can carry."""
        pools = self.pools_of_type.get(qname)
        if pools is None or qtype not in (PTR, ANY):
            return []
        out: list[Chunk] = []
        size = 0
        owner = records.labels(qname)
        for instance in self._instances(pools):
            chunk = self.ptr_chunks.get(instance)
            if chunk is None:
                rr = records.ptr_rr(owner, records.labels(instance), ttl)
                chunk = self.ptr_chunks[instance] = (records.pack_after(qname, [rr]), 1)
            out.append(chunk)
            size += len(chunk[0])
            if size > BODY_CAP:
                return out
        return out

    def zone_rrs(self, ttl: int) -> list[RR]:
        """Every DNS-SD record, for a zone transfer."""
        out = self.records(self.services, PTR, ttl)
        for owner, pools in self.pools_of_type.items():
            for instance in self._instances(pools):
                out.append(records.ptr_rr(records.labels(owner), records.labels(instance), ttl))
                out += self.records(instance, ANY, ttl)
        return out


def instance_name(pool: str, slot: int, service: str, protocol: str, zone: str) -> bytes:
    """The wire name of a member's DNS-SD instance (for tests and tools)."""
    return name_to_wire(f"{pool}-{slot}._{service}._{protocol}.{zone}")
