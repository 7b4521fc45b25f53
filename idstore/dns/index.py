"""Which names exist in the zone and what each one is: the view re-keyed by DNS name.

What is kept, and why (the view already holds every claim; this is the DNS side's own
index of it, not a copy of the claims):

- ``names``: a count per existing name, empty non-terminals included, to tell NXDOMAIN
  from NODATA in one lookup;
- ``members``: owner name -> the view's own ``Member`` object (a reference, not a
  copy), from which the name's records are packed when first asked for after a change;
- ``slots`` / ``pool_slots``: (pool, slot) -> owner name and the reverse names it
  holds, so a release finds what to unindex, and the SRV answer of a pool lists its
  members in slot order;
- ``ptr``: reverse name -> owner names;
- ``srv_chunks``: per (SRV owner, member name), the member's SRV record and its address
  records packed by dnslib. A pool's SRV answer joins these, so one claim in a
  10,000-member pool packs that member's few records, not the pool's.

Everything else served (A, AAAA, TXT, PTR, apex records) is packed by dnslib into the
zone's answer cache, keyed by (name, type), when a query first needs it after a change.

Why the index keeps a reference to each ``Member`` instead of only packed records:
dnslib packs one RR in ~12 us here, so packing every record of every name as it changes
(A, TXT, SRV and its glue, PTR: ~5 per name) would cost ~0.6 s for a 10,000-name view
at boot, past the 0.2-0.5 s the whole mirror -> view -> zone chain takes; packing on
first use costs only the names asked for, once per change. Zone transfers also read
the members. DNS-SD (idstore.dns.dnssd) keeps nothing per member. Measured with
tracemalloc, 10,000 names each asked once: 5.8 MB for this index, 7.0 MB for answers
and whole replies.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from idstore.dns import records, reverse, wire
from idstore.dns.answers import Chunk
from idstore.dns.wire import name_to_wire
from idstore.view import Member

log = logging.getLogger(__name__)

Revs = tuple[tuple[bytes, bytes], ...]  # (reverse name, its reverse zone) per address


class NameIndex:
    def __init__(self, apex: bytes, reverse: list[bytes], auto_reverse: bool = False) -> None:
        self.apex = apex
        self.reverse = reverse
        # every address in its derived zone (idstore.dns.reverse) instead of ``reverse``
        self.auto_reverse = auto_reverse
        self.names: dict[bytes, int] = {}
        self.members: dict[bytes, Member] = {}
        self.slots: dict[tuple[str, int], tuple[bytes, Revs]] = {}
        self.pool_slots: dict[str, dict[int, bytes]] = {}
        # reverse name -> member names (a tuple: nearly always one name, and a dict per
        # address would cost more than the rest of the entry at 10,000 members)
        self.ptr: dict[bytes, tuple[bytes, ...]] = {}
        self.srv_chunks: dict[tuple[bytes, bytes], tuple[Chunk, Chunk]] = {}

    def apply(self, pool: str, slot: int, member: Member | None) -> tuple[bytes, Revs] | None:
        """Index one change of the view; returns the (name, reverse names) it dropped,
        if any, for the caller to forget their answers (the new ones are returned by
        ``add``)."""
        old = self.slots.pop((pool, slot), None)
        if old is not None:
            self._unindex(pool, slot, *old)
        return old

    def add(self, pool: str, slot: int, member: Member) -> tuple[bytes, Revs] | None:
        try:
            name = name_to_wire(member.name)
        except (ValueError, UnicodeError):
            log.warning("not serving %r: not a valid DNS name", member.name)
            return None
        if not wire.is_subdomain(name, self.apex) or name == self.apex:
            log.warning("not serving %s: outside the zone %s", member.name,
                        wire.wire_to_text(self.apex))  # fmt: skip
            return None
        revs = self._reverse_names(member)
        self.slots[(pool, slot)] = (name, revs)
        self.members[name] = member
        self.add_name(name, self.apex)
        self.pool_slots.setdefault(pool, {})[slot] = name
        for rev, apex in revs:
            targets = self.ptr.get(rev, ())
            if name not in targets:
                self.ptr[rev] = (*targets, name)
            self.add_name(rev, apex)
        return name, revs

    def _unindex(self, pool: str, slot: int, name: bytes, revs: Revs) -> None:
        self.members.pop(name, None)
        self.drop_name(name, self.apex)
        self.pool_slots.get(pool, {}).pop(slot, None)
        for rev, apex in revs:
            targets = self.ptr.get(rev)
            if targets is not None:
                rest = tuple(t for t in targets if t != name)
                if rest:
                    self.ptr[rev] = rest
                else:
                    del self.ptr[rev]
            self.drop_name(rev, apex)

    def _reverse_names(self, member: Member) -> Revs:
        if self.auto_reverse:
            return tuple(
                (rev, zone)
                for rev in map(reverse.reverse_name, member.addresses)
                if rev is not None and (zone := reverse.zone_of(rev)) is not None
            )
        if not self.reverse:
            return ()
        out = []
        for addr in member.addresses:
            try:
                rev = reverse.pointer(addr)
            except ValueError:
                continue
            for apex in self.reverse:
                if wire.is_subdomain(rev, apex):
                    out.append((rev, apex))
                    break
        return tuple(out)

    def add_name(self, name: bytes, apex: bytes) -> None:
        """Count ``name`` and every name between it and the apex (empty non-terminals)."""
        stop = len(name) - len(apex)
        for off in wire.label_offsets(name):
            if off >= stop:
                break
            suffix = name[off:]
            self.names[suffix] = self.names.get(suffix, 0) + 1

    def drop_name(self, name: bytes, apex: bytes) -> None:
        stop = len(name) - len(apex)
        for off in wire.label_offsets(name):
            if off >= stop:
                break
            suffix = name[off:]
            left = self.names.get(suffix, 0) - 1
            if left > 0:
                self.names[suffix] = left
            else:
                self.names.pop(suffix, None)

    def pool_members(self, pool: str) -> Iterator[tuple[int, bytes, Member]]:
        """(slot, name, member) of a pool, lowest slot first."""
        slots = self.pool_slots.get(pool, {})
        members = self.members
        for slot in sorted(slots):
            name = slots[slot]
            member = members.get(name)
            if member is not None:
                yield slot, name, member

    def srv_chunk(self, owner: bytes, name: bytes, member: Member, port: int, ttl: int
                  ) -> tuple[Chunk, Chunk]:  # fmt: skip
        """The member's SRV record under ``owner`` and its address records (packed once
        per change of the member; ``forget_srv`` drops them)."""
        key = (owner, name)
        hit = self.srv_chunks.get(key)
        if hit is not None:
            return hit
        target = records.labels(name)
        srv = records.srv_rr(records.labels(owner), target, port, ttl)
        addrs = records.address_rrs(target, member, ttl, None)
        made = ((records.pack_after(owner, [srv]), 1),
                (records.pack_after(owner, addrs), len(addrs)))  # fmt: skip
        self.srv_chunks[key] = made
        return made

    def forget_srv(self, name: bytes, owners: list[bytes]) -> None:
        for owner in owners:
            self.srv_chunks.pop((owner, name), None)
