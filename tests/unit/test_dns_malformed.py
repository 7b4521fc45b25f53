"""Hostile and broken packets: never an exception, bounded CPU, FORMERR/NOTIMP or silence."""

from __future__ import annotations

import random
import time

import dns.message
import dns.rcode
import pytest

from idstore.dns import Zone
from idstore.dns import wire as w
from tests.harness.dnsfuzz import CORPUS, DROPPED, QNAME
from tests.unit.test_dns_zone import make_zone

CLIENT = ("192.0.2.1", 5353)


@pytest.fixture(scope="module")
def zone() -> Zone:
    return make_zone()


@pytest.mark.parametrize("name", sorted(CORPUS))
@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_malformed_never_raises(zone: Zone, name: str, proto: str) -> None:
    packet = CORPUS[name]
    reply = zone.answer(packet, proto, CLIENT)
    if name in DROPPED:
        assert reply is None
        return
    if reply is None:
        return  # a silent drop is allowed for garbage
    assert reply[:2] == packet[:2]  # same ID
    assert reply[2] & 0x80  # a response
    rcode = reply[3] & 0x0F
    assert rcode in (dns.rcode.FORMERR, dns.rcode.NOTIMP, dns.rcode.REFUSED), (name, rcode)


def test_notimp_for_other_opcodes(zone: Zone) -> None:
    reply = zone.answer(CORPUS["opcode NOTIFY"], "udp", CLIENT) or b""
    assert reply[3] & 0x0F == dns.rcode.NOTIMP
    assert (reply[2] >> 3) & 0x0F == 4  # the opcode is echoed


def test_two_opt_is_formerr(zone: Zone) -> None:
    reply = zone.answer(CORPUS["two OPT"], "udp", CLIENT) or b""
    assert reply[3] & 0x0F == dns.rcode.FORMERR


def test_corpus_is_cheap(zone: Zone) -> None:
    # Count CPU over many rounds; a pathological path (dnslib's ~1 s per chain) would
    # dominate. The bound is loose (1 ms per packet on average) to stay robust on CI.
    rounds = 20
    start = time.process_time()
    for _ in range(rounds):
        for packet in CORPUS.values():
            zone.answer(packet, "udp", CLIENT)
    per_packet = (time.process_time() - start) / (rounds * len(CORPUS))
    assert per_packet < 0.001


def test_random_mutations_never_raise(zone: Zone) -> None:
    rng = random.Random(7)
    seeds = [
        dns.message.make_query("worker1.tf.local.", t, use_edns=e).to_wire()
        for t in ("A", "SRV", "TXT") for e in (None, 0)
    ]  # fmt: skip
    for _ in range(20000):
        packet = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            if op < 0.5 and packet:
                packet[rng.randrange(len(packet))] = rng.getrandbits(8)
            elif op < 0.75:
                del packet[rng.randrange(len(packet) + 1) :]
            else:
                packet += bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 8)))
        reply = zone.answer(bytes(packet), rng.choice(["udp", "tcp"]), CLIENT)
        if reply is not None:
            assert reply[:2] == bytes(packet[:2])
    # Still answering normally afterwards.
    good = dns.message.make_query("worker1.tf.local.", "A")
    r = dns.message.from_wire(zone.answer(good.to_wire(), "udp", CLIENT) or b"")
    assert r.rcode() == dns.rcode.NOERROR and r.answer


def test_parser_reports_edns_fields() -> None:
    q = dns.message.make_query(
        "Worker1.tf.local.", "AAAA", use_edns=0, payload=4000, want_dnssec=True,
        options=[dns.edns.GenericOption(dns.edns.NSID, b"")],
    )  # fmt: skip
    parsed = w.parse_query(q.to_wire())
    assert parsed.qname == QNAME and parsed.qtype == 28 and parsed.qclass == 1
    assert parsed.edns and parsed.udp_size == 4000 and parsed.do and parsed.nsid


def test_name_helpers() -> None:
    assert w.name_to_wire("Worker1.TF.local") == QNAME
    assert w.wire_to_text(QNAME) == "worker1.tf.local."
    assert w.is_subdomain(QNAME, b"\x05local\x00")
    assert not w.is_subdomain(b"\x04a\x02tf\x05local\x00", b"\x02tf\x05local\x00")
    assert w.is_subdomain(QNAME, b"\x00")
