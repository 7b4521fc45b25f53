"""Every record idstore serves, built with dnslib's RR classes and packed by dnslib.

Records are packed into *chunks*: wire bytes meant to follow one question in a message,
so that names compress against that question (the owner of most records is the question
itself: a two-byte pointer). ``pack_after(qname, rrs)`` lays the lower-cased question
out at offset 12 in a dnslib ``DNSBuffer``, lets each RR pack itself after it and keeps
what follows the question. Such a chunk stays valid after any question that matches
``qname`` case-insensitively (same length, same label boundaries), which is every query
that can be answered with it; pointers into the question give the owner the query's own
letter case, as a resolver using 0x20 randomisation expects.

Chunks are packed when a change of the view makes them needed (see idstore.dns.index),
never per query: the hot path only joins byte strings.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable

from dnslib import (
    AAAA,
    CLASS,
    EDNS0,
    NS,
    PTR,
    QTYPE,
    RD,
    RR,
    SOA,
    SRV,
    TXT,
    A,
    DNSBuffer,
    DNSLabel,
    EDNSOption,
)

from idstore.view import Member

OPT_NSID = 3
OPT_EDE = 15  # RFC 8914 Extended DNS Error
EDE_STALE_ANSWER = 3
EDE_NO_REACHABLE_AUTHORITY = 22

# SOA timers, read only by secondaries (idstore.dns.transfer). idstore sends no NOTIFY;
# the README has secondaries cap their refresh instead of changing answers served today.
SOA_REFRESH, SOA_RETRY, SOA_EXPIRE = 3600, 600, 86400

_ADDR = {"A": QTYPE.A, "AAAA": QTYPE.AAAA}


def labels(wire: bytes) -> DNSLabel:
    """dnslib's label for an uncompressed wire name (already validated by the guard)."""
    out = []
    pos = 0
    while pos < len(wire) and wire[pos]:
        length = wire[pos]
        out.append(wire[pos + 1 : pos + 1 + length])
        pos += length + 1
    return DNSLabel(out)


def pack_after(qname: bytes, rrs: Iterable[RR], offset: int = 12) -> bytes:
    """The records packed as they sit after the question ``qname`` (lower-case wire name)
    placed at ``offset``; see the module docstring. ``offset`` other than 12 serves the
    negative answers, whose SOA owner is the apex inside a longer question."""
    buf = DNSBuffer()
    buf.append(b"\x00" * offset)
    buf.encode_name(labels(qname))
    buf.pack("!HH", 0, 1)  # qtype/qclass placeholders: never part of the chunk
    start = len(buf.data)
    for rr in rrs:
        rr.pack(buf)
    return bytes(buf.data[start:])


def address_rrs(owner: DNSLabel, member: Member, ttl: int, want: str | None) -> list[RR]:
    """A and/or AAAA records of ``member``'s addresses (``want`` "A", "AAAA" or None)."""
    out = []
    for addr in member.addresses:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            continue
        kind = "AAAA" if ip.version == 6 else "A"
        if want is not None and kind != want:
            continue
        rdata = AAAA(str(ip)) if ip.version == 6 else A(str(ip))
        out.append(RR(owner, _ADDR[kind], CLASS.IN, ttl, rdata))
    return out


def member_txt(member: Member) -> list[bytes]:
    """The TXT strings of a member (pool, slot, node), each at most 255 octets."""
    texts = (f"pool={member.pool}", f"slot={member.slot}", f"node={member.node_id}")
    return [t.encode("utf-8", "replace")[:255] for t in texts]


def txt_rr(owner: DNSLabel, member: Member, ttl: int) -> RR:
    return RR(owner, QTYPE.TXT, CLASS.IN, ttl, TXT(member_txt(member)))


def srv_rr(owner: DNSLabel, target: DNSLabel, port: int, ttl: int) -> RR:
    # dnslib packs the SRV target uncompressed, as RFC 2782 requires.
    return RR(owner, QTYPE.SRV, CLASS.IN, ttl, SRV(0, 1, port, target))


def ptr_rr(owner: DNSLabel, target: DNSLabel, ttl: int) -> RR:
    return RR(owner, QTYPE.PTR, CLASS.IN, ttl, PTR(target))


def ns_rr(owner: DNSLabel, target: DNSLabel, ttl: int) -> RR:
    return RR(owner, QTYPE.NS, CLASS.IN, ttl, NS(target))


def soa_rr(apex: DNSLabel, ns: DNSLabel, hostmaster: DNSLabel, serial: int, ttl: int,
           minimum: int) -> RR:  # fmt: skip
    times = (SOA_REFRESH, SOA_RETRY, SOA_EXPIRE, minimum)
    return RR(apex, QTYPE.SOA, CLASS.IN, ttl, SOA(ns, hostmaster, (serial, *times)))


def opt_record(udp_size: int, ext_rcode: int = 0, do: bool = False, nsid: bytes = b"",
               ede: int | None = None) -> bytes:  # fmt: skip
    """A packed OPT pseudo-record: NSID (RFC 5001) when ``nsid``, an Extended DNS Error
    (RFC 8914) when ``ede``."""
    opts = []
    if nsid:
        opts.append(EDNSOption(OPT_NSID, nsid))
    if ede is not None:
        opts.append(EDNSOption(OPT_EDE, struct.pack(">H", ede)))
    rr = EDNS0(ext_rcode=ext_rcode, flags="do" if do else "", udp_len=udp_size, opts=opts)
    buf = DNSBuffer()
    rr.pack(buf)
    return bytes(buf.data)


def tsig_rr(key: DNSLabel, rdata: bytes) -> RR:
    """A TSIG record (RFC 8945) with prepared RDATA; class ANY, TTL 0."""
    return RR(key, QTYPE.TSIG, 255, 0, RD(rdata))  # class ANY
