"""Known-bad DNS packets and builders, shared by the unit corpus test and the fault suite.

``CORPUS`` maps a description to a packet; ``DROPPED`` names the packets a server must
not answer at all (too short for a header, or a response: answering one could start a
reflection loop).
"""

from __future__ import annotations

import random
import struct

QNAME = b"\x07worker1\x02tf\x05local\x00"
ID = 0xBEEF  # the ID of every corpus packet that has a header


def header(qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0, flags: int = 0x0100) -> bytes:
    return struct.pack(">HHHHHH", ID, flags, qd, an, ns, ar)


def question(name: bytes = QNAME, qtype: int = 1) -> bytes:
    return name + struct.pack(">HH", qtype, 1)


OPT = b"\x00" + struct.pack(">HHIH", 41, 1232, 0, 0)

CORPUS: dict[str, bytes] = {
    "empty": b"",
    "short header": b"\xbe\xef\x01",
    "header only": header(),
    "qdcount 0": header(qd=0),
    "qdcount 2": header(qd=2) + question() + question(),
    "qdcount 65535": header(qd=65535) + question(),
    "pointer to itself": header() + b"\xc0\x0c" + b"\x00\x01\x00\x01",
    "two pointers in a loop": header() + b"\x01a\xc0\x0e\xc0\x0c\x00\x01\x00\x01",
    "pointer chain 6KB": header() + b"".join(
        struct.pack(">H", 0xC000 | (12 + 2 * max(i - 1, 0))) for i in range(3000)
    ) + b"\x00\x01\x00\x01",
    "forward pointer": header() + b"\xc0\x20" + b"\x00\x01\x00\x01" + b"\x00" * 20,
    "label of 64": header() + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01",
    "reserved label type": header() + b"\x80abc\x00\x00\x01\x00\x01",
    "name of 300 octets": header() + b"\x3f" + b"a" * 63 + (b"\x3f" + b"b" * 63) * 4
    + b"\x00\x00\x01\x00\x01",
    "truncated name": header() + b"\x07work",
    "truncated qtype": header() + QNAME + b"\x00",
    "two OPT": header(ar=2) + question() + OPT + OPT,
    "OPT with a non-root owner": header(ar=1) + question() + b"\x01a\x00" + OPT[1:],
    "OPT rdata past the end": header(ar=1) + question() + b"\x00"
    + struct.pack(">HHIH", 41, 1232, 0, 50),
    "OPT option past its rdata": header(ar=1) + question() + b"\x00"
    + struct.pack(">HHIH", 41, 1232, 0, 4) + struct.pack(">HH", 3, 40),
    "arcount without records": header(ar=1) + question(),
    "arcount 65535": header(ar=65535) + question() + OPT,
    "trailing garbage": header() + question() + b"garbage",
    "answer section in a query": header(an=1) + question() + QNAME + b"\x00\x01\x00\x01"
    + b"\x00" * 6,
    "response (QR=1)": header(flags=0x8400) + question(),
    "opcode NOTIFY": header(flags=0x2000) + question(),
    "opcode UPDATE": header(flags=0x2800) + question(),
    "qtype OPT": header() + question(qtype=41),
    "additional with pointer loop owner": header(ar=1) + question() + b"\xc0\x30"
    + struct.pack(">HHIH", 1, 1, 0, 0),
    "huge TCP-sized junk": b"\xbe\xef" + random.Random(1).randbytes(65533),
}  # fmt: skip

DROPPED = {"empty", "short header", "response (QR=1)"}
