"""Standards beyond the basics, straight through Zone.answer: RFC 8906 NOTIMP flags,
RFC 8914 Extended DNS Errors, RFC 6763 DNS-SD browsing, and the reply cache's handling
of letter case (0x20) and of changes that touch one name."""

from __future__ import annotations

import time
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import pytest

from idstore import config
from idstore.dns import Zone
from idstore.errors import ConfigError
from idstore.view import Member
from tests.unit.test_dns_zone import CLIENT, ask, make_zone, member, texts, zone

__all__ = ["zone"]  # the fixture


def test_notimp_sets_only_qr_and_echoes_the_opcode(zone: Zone) -> None:
    q = dns.message.make_query("worker1.tf.local.", "A")
    q.set_opcode(dns.opcode.STATUS)
    q.flags |= dns.flags.CD | dns.flags.RD | dns.flags.AD
    reply = zone.answer(q.to_wire(), "udp", CLIENT) or b""
    r = dns.message.from_wire(reply)
    assert r.rcode() == dns.rcode.NOTIMP and r.opcode() == dns.opcode.STATUS
    assert r.flags & ~0x7800 == dns.flags.QR | dns.rcode.NOTIMP  # no RD, CD, AD echoed


def ede(reply: dns.message.Message) -> list[int]:
    return [o.code for o in reply.options if isinstance(o, dns.edns.EDEOption)]


def test_serve_stale_answers_carry_ede_3_then_servfail_carries_22() -> None:
    zone = make_zone(max_stale=100.0)
    assert ede(ask(zone, "worker1.tf.local.", use_edns=0)) == []
    now = time.monotonic()
    zone.set_stale(now)
    r = ask(zone, "worker1.tf.local.", use_edns=0)
    assert r.rcode() == dns.rcode.NOERROR and ede(r) == [dns.edns.EDECode.STALE_ANSWER]
    assert ede(ask(zone, "nope.tf.local.", use_edns=0)) == [dns.edns.EDECode.STALE_ANSWER]
    assert not ask(zone, "worker1.tf.local.").options  # no EDNS in the query: no EDE
    assert ede(ask(zone, "example.com.", use_edns=0)) == []  # REFUSED is not stale data
    zone.set_stale(now - 101)
    r = ask(zone, "worker1.tf.local.", use_edns=0)
    assert r.rcode() == dns.rcode.SERVFAIL
    assert ede(r) == [dns.edns.EDECode.NO_REACHABLE_AUTHORITY]
    zone.set_stale(None)
    assert ede(ask(zone, "worker1.tf.local.", use_edns=0)) == []


def test_ede_and_nsid_together() -> None:
    zone = make_zone()
    zone.set_identity("worker3.tf.local.")
    zone.set_stale(time.monotonic())
    nsid = [dns.edns.GenericOption(dns.edns.NSID, b"")]
    r = ask(zone, "worker1.tf.local.", use_edns=0, options=nsid)
    assert ede(r) == [dns.edns.EDECode.STALE_ANSWER]
    assert [o.to_wire() for o in r.options if o.otype == dns.edns.NSID] == [b"worker3.tf.local."]


# --------------------------------------------------------------------------- DNS-SD


def test_dns_sd_lists_service_types() -> None:
    zone = make_zone(3)
    r = ask(zone, "_services._dns-sd._udp.tf.local.", "PTR")
    assert r.rcode() == dns.rcode.NOERROR
    # The worker pool serves grpc/tcp; the ps pool (no port) has the default service too.
    assert "_grpc._tcp.tf.local." in texts(r)


def test_dns_sd_lists_instances_with_srv_and_txt() -> None:
    zone = make_zone(3)
    r = ask(zone, "_grpc._tcp.tf.local.", "PTR")
    assert texts(r) == [f"worker-{i}._grpc._tcp.tf.local." for i in range(3)]
    srv = ask(zone, "worker-1._grpc._tcp.tf.local.", "SRV")
    assert texts(srv) == ["0 1 2222 worker1.tf.local."]
    txt = ask(zone, "worker-1._grpc._tcp.tf.local.", "TXT")
    assert texts(txt) == ['"pool=worker" "slot=1" "node=node-worker-1"']


def test_dns_sd_follows_claims_and_releases() -> None:
    zone = make_zone(3)
    assert len(texts(ask(zone, "_grpc._tcp.tf.local.", "PTR"))) == 3
    zone.update([("worker", 1, None)])
    assert texts(ask(zone, "_grpc._tcp.tf.local.", "PTR")) == [
        "worker-0._grpc._tcp.tf.local.", "worker-2._grpc._tcp.tf.local."]  # fmt: skip
    gone = ask(zone, "worker-1._grpc._tcp.tf.local.", "SRV")
    assert gone.rcode() == dns.rcode.NXDOMAIN
    zone.update([("worker", 7, member(7, ports={"grpc": 9000}))])
    assert texts(ask(zone, "worker-7._grpc._tcp.tf.local.", "SRV")) == [
        "0 1 9000 worker7.tf.local."]  # fmt: skip


def test_dns_sd_leaves_out_members_without_a_port() -> None:
    zone = make_zone(0)
    zone.update([("ps", 0, member(0, pool="ps"))])
    r = ask(zone, "_grpc._tcp.tf.local.", "PTR")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer


# --------------------------------------------------------------------------- reply cache


def replayed(zone: Zone) -> int:
    return sum(zone.stats.cached.values())


def test_random_case_hits_the_reply_cache_and_echoes_the_case(zone: Zone) -> None:
    ask(zone, "worker1.tf.local.")
    ask(zone, "Worker1.tf.local.")  # the first upper-case query seeds the folded level
    before = replayed(zone)
    for name in ("WORKER1.tf.local.", "wOrKeR1.Tf.LoCaL.", "worker1.TF.LOCAL."):
        r = ask(zone, name)
        assert r.question[0].name.to_text() == name
        assert r.answer[0].name.to_text() == name  # the owner points into the question
        assert texts(r) == ["192.0.2.11"]
    assert replayed(zone) == before + 3


def test_case_folding_never_mixes_other_octets(zone: Zone) -> None:
    # qtype 0x0041 (65) and 0x0061 (97) differ only in an ASCII-letter bit.
    a = dns.message.make_query("worker1.tf.local.", 65).to_wire()
    b = a[:-3] + b"\x61" + a[-2:]
    ask(zone, "worker1.tf.local.", 65)
    r = dns.message.from_wire(zone.answer(b, "udp", CLIENT) or b"")
    assert r.question[0].rdtype == 97


def test_a_claim_leaves_other_names_replies_cached(zone: Zone) -> None:
    for i in range(4):
        ask(zone, f"worker{i}.tf.local.")
    before = replayed(zone)
    zone.update([("worker", 9, member(9))])
    for i in range(4):
        assert texts(ask(zone, f"worker{i}.tf.local.")) == [f"192.0.2.{10 + i}"]
    assert replayed(zone) == before + 4
    zone.update([("worker", 2, Member("worker", 2, "worker2.tf.local.", ("192.0.2.99",), "n"))])
    assert texts(ask(zone, "worker2.tf.local.")) == ["192.0.2.99"]
    assert replayed(zone) == before + 4  # that one was rebuilt, not replayed


def test_serial_grows_with_every_change_and_negatives_follow(zone: Zone) -> None:
    first = ask(zone, "nope.tf.local.").authority[0][0].serial
    zone.update([("worker", 9, member(9))])
    second = ask(zone, "nope.tf.local.").authority[0][0].serial
    assert second == first + 1


# --------------------------------------------------------------------------- AXFR


def test_transfer_allow_is_validated_and_normalised(tmp_path: Path) -> None:
    path = tmp_path / "idstore.toml"
    base = "[pools.worker]\npattern = 'worker{{.ID}}.tf.local.'\nlimit = 4\n[dns]\n"
    path.write_text(base)
    assert config.load(cli={"config": str(path)}, environ={}).dns.transfer_allow == ()
    path.write_text(base + 'transfer_allow = ["10.1.2.3/8", "fd00::1", "192.0.2.7"]\n')
    allowed = config.load(cli={"config": str(path)}, environ={}).dns.transfer_allow
    assert allowed == ("10.0.0.0/8", "fd00::1/128", "192.0.2.7/32")
    path.write_text(base + 'transfer_allow = ["not-a-network"]\n')
    with pytest.raises(ConfigError, match=r"dns\.transfer_allow"):
        config.load(cli={"config": str(path)}, environ={})


def axfr(zone: Zone, client: str) -> list[dns.message.Message]:
    """The messages of an allowed transfer (Zone.answer gives its TCP stream)."""
    q = dns.message.make_query("tf.local.", "AXFR").to_wire()
    stream = zone.answer(q, "tcp", (client, 53000)) or b""
    out = []
    while stream:
        size = int.from_bytes(stream[:2], "big")
        out.append(dns.message.from_wire(stream[2 : 2 + size], one_rr_per_rrset=True))
        stream = stream[2 + size :]
    return out


def test_axfr_only_for_allowed_clients() -> None:
    zone = make_zone(4, transfer_allow=("10.0.0.0/8",))
    messages = axfr(zone, "10.9.8.7")
    records = [rrset for m in messages for rrset in m.answer]
    assert records[0].rdtype == records[-1].rdtype == dns.rdatatype.SOA
    assert records[0][0].serial == zone.serial
    q = dns.message.make_query("tf.local.", "AXFR")
    refused = dns.message.from_wire(zone.answer(q.to_wire(), "tcp", ("192.0.2.1", 1)) or b"")
    assert refused.rcode() == dns.rcode.REFUSED
