"""DNS wire format: a small, strict query parser for the hot path and a message writer.

The parser reads only what a query may hold: a header, one question whose name uses no
compression (a query has no earlier name to point at, so any pointer there is either a
loop, a chain or garbage), and an additional section with at most one OPT record. Every
loop is bounded by the 255-octet name limit or the packet length, so no input costs
more than a few microseconds. dnslib is never handed client bytes: its pointer handling
recurses (RecursionError on a two-pointer loop, ~1 s of CPU on a 6 KB chain).
"""

from __future__ import annotations

import functools
import struct

# Record types
A = 1
NS = 2
SOA = 6
PTR = 12
TXT = 16
AAAA = 28
SRV = 33
OPT = 41
IXFR = 251
TSIG = 250
AXFR = 252
ANY = 255

TYPE_NAMES = {A: "A", NS: "NS", SOA: "SOA", PTR: "PTR", TXT: "TXT", AAAA: "AAAA",
              SRV: "SRV", OPT: "OPT", TSIG: "TSIG", IXFR: "IXFR", AXFR: "AXFR",
              ANY: "ANY"}  # fmt: skip

CLASS_IN = 1

# Response codes (BADVERS is extended: its upper 8 bits travel in the OPT record)
NOERROR = 0
FORMERR = 1
SERVFAIL = 2
NXDOMAIN = 3
NOTIMP = 4
REFUSED = 5
NOTAUTH = 9
BADVERS = 16
BADKEY = 17  # a TSIG error (RFC 8945), carried in the TSIG record, not the header

RCODE_NAMES = {NOERROR: "NOERROR", FORMERR: "FORMERR", SERVFAIL: "SERVFAIL",
               NXDOMAIN: "NXDOMAIN", NOTIMP: "NOTIMP", REFUSED: "REFUSED",
               NOTAUTH: "NOTAUTH", BADVERS: "BADVERS"}  # fmt: skip

# Header flag bits
QR = 0x8000
AA = 0x0400
TC = 0x0200
RD = 0x0100
CD = 0x0010
COPIED_FLAGS = RD | CD  # echoed from the query into the response

OPT_NSID = 3
MAX_NAME_WIRE = 255
MAX_ADDITIONAL = 4  # OPT plus room for e.g. a TSIG we ignore; more is not a sane query
MAX_OPTIONS = 32

HEADER = struct.Struct(">HHHHHH")
_RR_FIXED = struct.Struct(">HHIH")


class BadQuery(Exception):
    """The packet is not a query we can answer; ``rcode`` None means drop silently."""

    def __init__(self, rcode: int | None, why: str) -> None:
        super().__init__(why)
        self.rcode = rcode


class Query:
    """What the hot path needs from a parsed query."""

    __slots__ = ("do", "edns", "end", "flags", "nsid", "qclass", "qname", "qtype", "tsig",
                 "udp_size", "version")  # fmt: skip

    def __init__(self) -> None:
        self.flags = 0
        self.qname = b""  # wire form, lower-cased (ASCII only, as DNS compares names)
        self.end = 12  # offset just past the question: data[12:end] is echoed verbatim
        self.qtype = 0
        self.qclass = 0
        self.edns = False
        self.udp_size = 512
        self.version = 0
        self.do = False
        self.nsid = False
        # A TSIG record's (key name, algorithm, time signed + fudge): no key is
        # configured, so a signed query gets NOTAUTH/BADKEY (RFC 8945 5.2.1).
        self.tsig: tuple[bytes, bytes, bytes] | None = None


def parse_query(data: bytes) -> Query:
    """Parse a query; raise BadQuery (with the rcode to answer, or None to drop)."""
    n = len(data)
    if n < 12:
        raise BadQuery(None, "shorter than a header")
    flags = (data[2] << 8) | data[3]
    if flags & QR:
        raise BadQuery(None, "a response, not a query")  # never answer: reflection loops
    if flags & 0x7800:
        raise BadQuery(NOTIMP, "opcode is not QUERY")
    if data[4:6] != b"\x00\x01":
        raise BadQuery(FORMERR, "QDCOUNT is not 1")
    if data[6:10] != b"\x00\x00\x00\x00":
        raise BadQuery(FORMERR, "a query with answer or authority records")
    q = Query()
    q.flags = flags
    pos = 12
    while True:
        if pos >= n:
            raise BadQuery(FORMERR, "question name runs past the end")
        length = data[pos]
        if length == 0:
            pos += 1
            break
        if length > 63:
            raise BadQuery(FORMERR, "compression pointer or bad label in the question")
        pos += length + 1
        if pos - 12 >= MAX_NAME_WIRE:
            raise BadQuery(FORMERR, "question name longer than 255 octets")
    end = pos + 4
    if end > n:
        raise BadQuery(FORMERR, "question truncated")
    q.qname = data[12:pos].lower()
    q.qtype = (data[pos] << 8) | data[pos + 1]
    q.qclass = (data[pos + 2] << 8) | data[pos + 3]
    q.end = end
    arcount = (data[10] << 8) | data[11]
    if arcount or end != n:
        _parse_additional(data, end, arcount, q)
    return q


def _parse_additional(data: bytes, pos: int, count: int, q: Query) -> None:
    n = len(data)
    if count > MAX_ADDITIONAL:
        raise BadQuery(FORMERR, "too many additional records")
    for _ in range(count):
        owner = pos
        pos = _skip_name(data, pos)
        if pos + 10 > n:
            raise BadQuery(FORMERR, "additional record truncated")
        rtype, rclass, ttl, rdlen = _RR_FIXED.unpack_from(data, pos)
        pos += 10
        if pos + rdlen > n:
            raise BadQuery(FORMERR, "additional record data truncated")
        if rtype == OPT:
            if q.edns:
                raise BadQuery(FORMERR, "two OPT records")
            if data[owner] != 0:
                raise BadQuery(FORMERR, "OPT owner is not the root")
            q.edns = True
            q.udp_size = rclass
            q.version = (ttl >> 16) & 0xFF
            q.do = bool(ttl & 0x8000)
            q.nsid = _has_nsid(data, pos, pos + rdlen)
        elif rtype == TSIG:
            if pos + rdlen != n:
                raise BadQuery(FORMERR, "TSIG is not the last record")
            q.tsig = (read_name(data, owner), *_tsig_fields(data, pos, pos + rdlen))
        pos += rdlen
    if pos != n:
        raise BadQuery(FORMERR, "trailing bytes after the last record")


def _skip_name(data: bytes, pos: int) -> int:
    """Offset past a (possibly compressed) name; a pointer ends it, so nothing to follow."""
    start = pos
    n = len(data)
    while pos < n:
        length = data[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:
            if pos + 2 > n or (((length & 0x3F) << 8) | data[pos + 1]) >= start:
                raise BadQuery(FORMERR, "compression pointer not strictly backward")
            return pos + 2
        if length > 63:
            raise BadQuery(FORMERR, "bad label type")
        pos += length + 1
        if pos - start >= MAX_NAME_WIRE:
            raise BadQuery(FORMERR, "name longer than 255 octets")
    raise BadQuery(FORMERR, "name runs past the end")


def read_name(data: bytes, pos: int) -> bytes:
    """The uncompressed wire form of the name at ``pos``, lower-cased. Pointers must
    point strictly backward, so each hop moves toward the start and the walk ends."""
    out = bytearray()
    n = len(data)
    limit = pos
    while pos < n:
        length = data[pos]
        if length == 0:
            out.append(0)
            return bytes(out).lower()
        if length & 0xC0 == 0xC0:
            if pos + 2 > n:
                break
            target = ((length & 0x3F) << 8) | data[pos + 1]
            if target >= limit:
                raise BadQuery(FORMERR, "compression pointer not strictly backward")
            pos = limit = target
            continue
        if length > 63:
            break
        out += data[pos : pos + length + 1]
        pos += length + 1
        if len(out) >= MAX_NAME_WIRE:
            raise BadQuery(FORMERR, "name longer than 255 octets")
    raise BadQuery(FORMERR, "bad name")


def _tsig_fields(data: bytes, pos: int, end: int) -> tuple[bytes, bytes]:
    """Algorithm name (as written) and the 8 octets of time signed and fudge."""
    start = pos
    while pos < end and data[pos]:
        if data[pos] > 63:
            raise BadQuery(FORMERR, "compressed or bad TSIG algorithm name")
        pos += data[pos] + 1
    pos += 1
    if pos + 10 > end or pos - start > MAX_NAME_WIRE:
        raise BadQuery(FORMERR, "TSIG record truncated")
    return data[start:pos], data[pos : pos + 8]


def _has_nsid(data: bytes, pos: int, end: int) -> bool:
    nsid = False
    for _ in range(MAX_OPTIONS):
        if pos == end:
            return nsid
        if pos + 4 > end:
            break
        code = (data[pos] << 8) | data[pos + 1]
        olen = (data[pos + 2] << 8) | data[pos + 3]
        pos += 4 + olen
        if pos > end:
            break
        if code == OPT_NSID:
            nsid = True
    raise BadQuery(FORMERR, "malformed EDNS options")


# --------------------------------------------------------------------------- names


# Cached: every change of the view converts the member's name and its DNS-SD instance
# name, and a churning pool converts the same few names again and again. Bounded, so a
# 10,000-member pool's names do not all stay in memory twice.
@functools.lru_cache(maxsize=4096)
def name_to_wire(name: str) -> bytes:
    """``worker3.tf.local.`` -> ``\\x07worker3\\x02tf\\x05local\\x00`` (lower-cased)."""
    text = name.strip().lower().rstrip(".")
    if not text:
        return b"\x00"
    out = bytearray()
    for label in text.split("."):
        raw = label.encode("ascii")
        if not 0 < len(raw) <= 63:
            raise ValueError(f"bad label {label!r} in {name!r}")
        out.append(len(raw))
        out += raw
    out.append(0)
    if len(out) > MAX_NAME_WIRE:
        raise ValueError(f"name {name!r} longer than 255 octets")
    return bytes(out)


def wire_to_text(wire: bytes) -> str:
    """Readable form of an uncompressed wire name (for logs; escapes odd bytes)."""
    labels = []
    pos = 0
    while pos < len(wire) and wire[pos]:
        length = wire[pos]
        label = wire[pos + 1 : pos + 1 + length]
        labels.append("".join(chr(b) if 33 <= b < 127 and b != 46 else f"\\{b:03d}"
                              for b in label))  # fmt: skip
        pos += length + 1
    return ".".join(labels) + "."


def label_offsets(wire: bytes) -> list[int]:
    """Start offset of every suffix of an uncompressed wire name, the name itself first."""
    out = []
    pos = 0
    while pos < len(wire) and wire[pos]:
        out.append(pos)
        pos += wire[pos] + 1
    out.append(pos)  # the root label
    return out


def is_subdomain(wire: bytes, apex: bytes) -> bool:
    """Is ``wire`` at or below ``apex``? Compares on label boundaries, not raw bytes."""
    if not wire.endswith(apex):
        return False
    return (len(wire) - len(apex)) in label_offsets(wire)
