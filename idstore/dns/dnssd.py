"""DNS-SD browsing (RFC 6763) over the zone, so DNS-SD tools and libraries find the cluster.

- ``_services._dns-sd._udp.<zone>`` PTR: every service type, ``_<service>._<proto>.<zone>``
  for each distinct (service, protocol) of the configured pools (RFC 6763 section 9);
- ``_<service>._<proto>.<zone>`` PTR: every instance of that type, one per member with a
  port (the member's published port for the service, else the pool's), named
  ``<pool>-<slot>._<service>._<proto>.<zone>``: the pool and slot make it unique across
  pools whatever their name patterns;
- each instance: SRV (priority 0, weight 1, port, target = the member's name) and TXT
  ``pool=<p>`` ``slot=<n>`` ``node=<id>`` (RFC 6763 section 6 key=value strings).

What is kept: the instance name of each (pool, slot) and back, to answer and to know
which answers a change touches, and each instance's PTR record packed once (a type's
PTR answer joins them, like a pool's SRV answer).
"""

from __future__ import annotations

from collections.abc import Sequence

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
        for pool in pools:
            owner = _label(f"_{pool.service}") + _label(f"_{pool.protocol}") + apex
            self.type_of_pool[pool.name] = owner
            self.pools_of_type.setdefault(owner, []).append(pool)
        self.instances: dict[bytes, tuple[PoolSettings, int]] = {}
        self.by_slot: dict[tuple[str, int], bytes] = {}
        self.ptr_chunks: dict[bytes, Chunk] = {}
        index.add_name(self.services, apex)
        for owner in self.pools_of_type:
            index.add_name(owner, apex)

    def _port(self, pool: PoolSettings, member: Member) -> int | None:
        return member.ports.get(pool.service, pool.port)

    def add(self, pool: PoolSettings, slot: int, member: Member) -> list[Key]:
        """Index a member; the answers it changes (none if it has no port)."""
        if self._port(pool, member) is None:
            return []
        owner = self.type_of_pool[pool.name]
        instance = _label(f"{pool.name}-{slot}") + owner
        self.instances[instance] = (pool, slot)
        self.by_slot[(pool.name, slot)] = instance
        self.index.add_name(instance, self.apex)
        return self._keys(owner, instance)

    def drop(self, pool: str, slot: int) -> list[Key]:
        instance = self.by_slot.pop((pool, slot), None)
        if instance is None:
            return []
        del self.instances[instance]
        self.ptr_chunks.pop(instance, None)
        self.index.drop_name(instance, self.apex)
        return self._keys(self.type_of_pool[pool], instance)

    @staticmethod
    def _keys(owner: bytes, instance: bytes) -> list[Key]:
        return [(owner, PTR), (owner, ANY), (instance, SRV), (instance, TXT), (instance, ANY)]

    def records(self, qname: bytes, qtype: int, ttl: int) -> list[RR]:
        """The instance's SRV/TXT, or the service-type list."""
        owner = records.labels(qname)
        if qname == self.services and qtype in (PTR, ANY):
            return [records.ptr_rr(owner, records.labels(t), ttl) for t in self.pools_of_type]
        found = self.instances.get(qname)
        if found is None:
            return []
        pool, slot = found
        name = self.index.pool_slots.get(pool.name, {}).get(slot)
        member = self.index.members.get(name) if name is not None else None
        if member is None:
            return []
        out = []
        port = self._port(pool, member)
        if qtype in (SRV, ANY) and port is not None:
            out.append(records.srv_rr(owner, records.labels(name or b"\x00"), port, ttl))
        if qtype in (TXT, ANY):
            out.append(records.txt_rr(owner, member, ttl))
        return out

    def instance_chunks(self, qname: bytes, qtype: int, ttl: int) -> list[Chunk]:
        """The PTR answer of a service type: its instances by pool, then slot; packed
        one instance at a time (and kept), only as many as any message can carry."""
        pools = self.pools_of_type.get(qname)
        if pools is None or qtype not in (PTR, ANY):
            return []
        out: list[Chunk] = []
        size = 0
        owner = records.labels(qname)
        for pool in pools:
            for slot in sorted(self.index.pool_slots.get(pool.name, {})):
                instance = self.by_slot.get((pool.name, slot))
                if instance is None:
                    continue
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
            for pool in pools:
                for slot in sorted(self.index.pool_slots.get(pool.name, {})):
                    instance = self.by_slot.get((pool.name, slot))
                    if instance is not None:
                        target = records.labels(instance)
                        out.append(records.ptr_rr(records.labels(owner), target, ttl))
                        out += self.records(instance, ANY, ttl)
        return out


def instance_name(pool: str, slot: int, service: str, protocol: str, zone: str) -> bytes:
    """The wire name of a member's DNS-SD instance (for tests and tools)."""
    return name_to_wire(f"{pool}-{slot}._{service}._{protocol}.{zone}")
