"""Property tests over the whole request path (parse, answer, encode) with hypothesis."""

from __future__ import annotations

import struct

import dns.message
import dns.rcode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idstore.dns import Zone
from tests.unit.test_dns_zone import make_zone

ZONE = make_zone(8)
CLIENT = ("192.0.2.1", 1)

labels = st.sampled_from([b"worker1", b"WORKER2", b"tf", b"local", b"_grpc", b"_tcp", b"x" * 63,
                          b"\xc0", b"\x00", b"ns"])  # fmt: skip


@st.composite
def queries(draw: st.DrawFn) -> bytes:
    """Mostly well-formed queries with fuzzed fields, counts and trailing records."""
    flags = draw(st.integers(0, 0xFFFF))
    counts = draw(st.tuples(*[st.integers(0, 3)] * 4))
    name = b"".join(bytes([len(x)]) + x for x in draw(st.lists(labels, max_size=6))) + b"\x00"
    tail = draw(st.binary(max_size=40))
    qtype = draw(st.sampled_from([1, 2, 6, 12, 16, 28, 33, 41, 251, 252, 255, 65535]))
    return (
        struct.pack(">HHHHHH", 0x1234, flags, *counts) + name + struct.pack(">HH", qtype, 1) + tail
    )


def check(zone: Zone, packet: bytes, proto: str) -> None:
    reply = zone.answer(packet, proto, CLIENT)
    if reply is None:
        return
    assert reply[:2] == packet[:2] and reply[2] & 0x80
    assert len(reply) <= (65535 if proto == "tcp" else 1232)


@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=600), st.sampled_from(["udp", "tcp"]))
def test_random_bytes(packet: bytes, proto: str) -> None:
    check(ZONE, packet, proto)


@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
@given(queries(), st.sampled_from(["udp", "tcp"]))
def test_structured_queries(packet: bytes, proto: str) -> None:
    check(ZONE, packet, proto)


def test_still_answers_after_fuzzing() -> None:
    q = dns.message.make_query("worker1.tf.local.", "A")
    r = dns.message.from_wire(ZONE.answer(q.to_wire(), "udp", CLIENT) or b"")
    assert r.rcode() == dns.rcode.NOERROR and r.answer
