"""The zone's answers, straight through Zone.answer (no sockets, no store)."""

from __future__ import annotations

import time
from dataclasses import replace

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from idstore.config import DnsSettings, PoolSettings
from idstore.dns import Zone
from idstore.pattern import Pattern
from idstore.view import Member

CLIENT = ("192.0.2.200", 40000)


def worker_pool(port: int | None = 2222, limit: int = 10000) -> PoolSettings:
    return PoolSettings("worker", Pattern.parse("worker{{.ID}}.tf.local."), limit, port=port)


def ps_pool() -> PoolSettings:
    return PoolSettings("ps", Pattern.parse("ps{{.ID}}.tf.local."), 8)


def member(slot: int, pool: str = "worker", v6: bool = True, **kw: object) -> Member:
    addrs = (f"192.0.2.{10 + slot}", f"2001:db8::{slot + 1:x}") if v6 else (f"192.0.2.{10 + slot}",)
    return Member(pool, slot, f"{pool}{slot}.tf.local.", addrs, f"node-{pool}-{slot}", **kw)  # type: ignore[arg-type]


def make_zone(n: int = 4, **dns_kw: object) -> Zone:
    settings = DnsSettings(zone="tf.local.", reverse_zones=("2.0.192.in-addr.arpa.",), **dns_kw)  # type: ignore[arg-type]
    zone = Zone(settings, [worker_pool(), ps_pool()])
    zone.update([("worker", i, member(i)) for i in range(n)])
    return zone


def ask(
    zone: Zone, name: str, rdtype: str = "A", proto: str = "udp", **kw: object
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]
    wire = zone.answer(query.to_wire(), proto, CLIENT)
    assert wire is not None
    reply = dns.message.from_wire(wire, ignore_trailing=False)
    assert reply.id == query.id
    return reply


def texts(reply: dns.message.Message, section: str = "answer") -> list[str]:
    return sorted(rd.to_text() for rrset in getattr(reply, section) for rd in rrset)


@pytest.fixture
def zone() -> Zone:
    return make_zone()


def test_a_and_aaaa_of_a_claimed_name(zone: Zone) -> None:
    r = ask(zone, "worker2.tf.local.", "A")
    assert r.rcode() == dns.rcode.NOERROR
    assert r.flags & dns.flags.AA and not r.flags & dns.flags.RA
    assert texts(r) == ["192.0.2.12"]
    assert r.answer[0].ttl == 5
    assert texts(ask(zone, "worker2.tf.local.", "AAAA")) == ["2001:db8::3"]


def test_question_case_is_echoed_and_matching_ignores_case(zone: Zone) -> None:
    r = ask(zone, "WoRkEr1.Tf.LoCaL.", "A")
    assert r.question[0].name.to_text() == "WoRkEr1.Tf.LoCaL."
    assert texts(r) == ["192.0.2.11"]


def test_rd_is_copied_and_ra_never_set(zone: Zone) -> None:
    q = dns.message.make_query("worker1.tf.local.", "A")
    q.flags &= ~dns.flags.RD
    r = dns.message.from_wire(zone.answer(q.to_wire(), "udp", CLIENT) or b"")
    assert not r.flags & dns.flags.RD and not r.flags & dns.flags.RA
    assert ask(zone, "worker1.tf.local.").flags & dns.flags.RD


def test_nxdomain_carries_the_soa_with_the_negative_ttl() -> None:
    zone = make_zone(negative_ttl=7)
    r = ask(zone, "worker99.tf.local.", "A")
    assert r.rcode() == dns.rcode.NXDOMAIN and r.flags & dns.flags.AA
    assert not r.answer
    (soa,) = r.authority
    assert soa.rdtype == dns.rdatatype.SOA and soa.name.to_text() == "tf.local."
    assert soa.ttl == 7 and soa[0].minimum == 7
    assert soa[0].mname.to_text() == "ns.tf.local."


def test_nodata_for_other_types_and_empty_non_terminals(zone: Zone) -> None:
    for name, rdtype in [
        ("worker1.tf.local.", "MX"),
        ("worker1.tf.local.", "SRV"),
        ("_tcp.worker.tf.local.", "A"),
        ("worker.tf.local.", "SRV"),
        ("tf.local.", "A"),
    ]:
        r = ask(zone, name, rdtype)
        assert r.rcode() == dns.rcode.NOERROR, (name, rdtype)
        assert not r.answer and r.authority[0].rdtype == dns.rdatatype.SOA


def test_nodata_for_aaaa_of_an_ipv4_only_member() -> None:
    zone = make_zone(0)
    zone.update([("worker", 1, member(1, v6=False))])
    r = ask(zone, "worker1.tf.local.", "AAAA")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer


def test_apex_soa_and_ns(zone: Zone) -> None:
    soa = ask(zone, "tf.local.", "SOA")
    assert soa.answer[0][0].rname.to_text() == "hostmaster.tf.local."
    ns = ask(zone, "tf.local.", "NS")
    assert texts(ns) == ["ns.tf.local."]
    assert not ns.additional  # no identity yet: no glue
    zone.set_identity("worker3.tf.local.")
    ns = ask(zone, "tf.local.", "NS")
    assert texts(ns, "additional") == ["192.0.2.13", "2001:db8::4"]
    assert texts(ask(zone, "ns.tf.local.", "A")) == ["192.0.2.13"]


def test_serial_changes_with_the_view(zone: Zone) -> None:
    before = ask(zone, "tf.local.", "SOA").answer[0][0].serial
    zone.update([("worker", 9, member(9))])
    after = ask(zone, "tf.local.", "SOA").answer[0][0].serial
    assert after != before
    neg = ask(zone, "nope.tf.local.").authority[0][0].serial
    assert neg == after


def test_out_of_zone_is_refused(zone: Zone) -> None:
    for name in ("example.com.", "local.", "xtf.local.", "."):
        r = ask(zone, name)
        assert r.rcode() == dns.rcode.REFUSED and not r.flags & dns.flags.AA


def test_a_label_boundary_is_respected() -> None:
    # "a\002tf.local." ends with the bytes of "tf.local." but is not inside the zone.
    zone = make_zone()
    q = dns.message.make_query(dns.name.Name([b"a\x02tf", b"local", b""]), "A")
    r = dns.message.from_wire(zone.answer(q.to_wire(), "udp", CLIENT) or b"")
    assert r.rcode() == dns.rcode.REFUSED


def test_update_frees_and_changes_names(zone: Zone) -> None:
    assert texts(ask(zone, "worker1.tf.local.")) == ["192.0.2.11"]
    zone.update([("worker", 1, None)])
    assert ask(zone, "worker1.tf.local.").rcode() == dns.rcode.NXDOMAIN
    moved = Member("worker", 1, "worker1.tf.local.", ("198.51.100.1",), "other")
    zone.update([("worker", 1, moved)])
    assert texts(ask(zone, "worker1.tf.local.")) == ["198.51.100.1"]
    assert "node=other" in texts(ask(zone, "worker1.tf.local.", "TXT"))[0]


def test_srv_lists_every_member_with_glue(zone: Zone) -> None:
    r = ask(zone, "_grpc._tcp.worker.tf.local.", "SRV", use_edns=0, payload=1232)
    assert texts(r) == [f"0 1 2222 worker{i}.tf.local." for i in range(4)]
    assert len(texts(r, "additional")) == 8
    assert r.answer[0].ttl == 5


def test_srv_uses_the_members_published_port() -> None:
    zone = make_zone(0)
    zone.update([("worker", 0, member(0, ports={"grpc": 7000}))])
    assert texts(ask(zone, "_grpc._tcp.worker.tf.local.", "SRV")) == ["0 1 7000 worker0.tf.local."]


def test_srv_of_a_pool_without_port_is_nodata() -> None:
    zone = make_zone(0)
    zone.update([("ps", 0, member(0, pool="ps"))])
    r = ask(zone, "_grpc._tcp.ps.tf.local.", "SRV")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer


def test_large_srv_truncates_over_udp_and_fits_over_tcp() -> None:
    zone = make_zone(200)
    udp = ask(zone, "_grpc._tcp.worker.tf.local.", "SRV")
    assert udp.flags & dns.flags.TC and not udp.answer
    assert udp.question[0].name.to_text() == "_grpc._tcp.worker.tf.local."
    tcp = ask(zone, "_grpc._tcp.worker.tf.local.", "SRV", proto="tcp")
    assert not tcp.flags & dns.flags.TC and len(texts(tcp)) == 200


def test_srv_without_room_for_glue_keeps_the_answers() -> None:
    zone = make_zone(25)
    r = ask(zone, "_grpc._tcp.worker.tf.local.", "SRV", use_edns=0, payload=1232)
    assert not r.flags & dns.flags.TC and len(texts(r)) == 25 and not r.additional


def test_srv_of_ten_thousand_members_over_tcp_is_partial_with_tc() -> None:
    zone = make_zone(10000)
    q = dns.message.make_query("_grpc._tcp.worker.tf.local.", "SRV")
    wire = zone.answer(q.to_wire(), "tcp", CLIENT) or b""
    assert len(wire) <= 65535
    r = dns.message.from_wire(wire)
    assert r.flags & dns.flags.TC and 1000 < len(texts(r)) < 10000


def test_txt_of_a_claimed_name(zone: Zone) -> None:
    assert texts(ask(zone, "worker2.tf.local.", "TXT")) == [
        '"pool=worker" "slot=2" "node=node-worker-2"'
    ]


def test_ptr_of_claimed_addresses(zone: Zone) -> None:
    assert texts(ask(zone, "12.2.0.192.in-addr.arpa.", "PTR")) == ["worker2.tf.local."]
    r = ask(zone, "99.2.0.192.in-addr.arpa.", "PTR")
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert r.authority[0].name.to_text() == "2.0.192.in-addr.arpa."
    assert ask(zone, "2.0.192.in-addr.arpa.", "SOA").answer
    assert ask(zone, "3.2.0.10.in-addr.arpa.", "PTR").rcode() == dns.rcode.REFUSED
    zone.update([("worker", 2, None)])
    assert ask(zone, "12.2.0.192.in-addr.arpa.", "PTR").rcode() == dns.rcode.NXDOMAIN


def test_any_returns_the_names_records(zone: Zone) -> None:
    r = ask(zone, "worker1.tf.local.", "ANY")
    types = {rrset.rdtype for rrset in r.answer}
    assert types == {dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.TXT}


def test_nsid_carries_the_identity(zone: Zone) -> None:
    nsid = [dns.edns.GenericOption(dns.edns.NSID, b"")]
    r = ask(zone, "worker1.tf.local.", use_edns=0, options=nsid)
    assert not r.options  # no slot yet: no NSID
    zone.set_identity("worker3.tf.local.")
    r = ask(zone, "worker1.tf.local.", use_edns=0, options=nsid)
    assert [o.to_wire() for o in r.options if o.otype == dns.edns.NSID] == [b"worker3.tf.local."]
    r = ask(zone, "worker1.tf.local.", use_edns=0)
    assert not r.options  # only when asked
    zone.set_identity(None)
    assert not ask(zone, "worker1.tf.local.", use_edns=0, options=nsid).options


def test_edns_is_echoed_and_do_copied(zone: Zone) -> None:
    r = ask(zone, "worker1.tf.local.", use_edns=0, payload=4096, want_dnssec=True)
    assert r.edns == 0 and r.payload == 1232
    assert r.ednsflags & dns.flags.DO
    assert ask(zone, "worker1.tf.local.").edns == -1


def test_badvers(zone: Zone) -> None:
    r = ask(zone, "worker1.tf.local.", use_edns=1)
    assert r.rcode() == dns.rcode.BADVERS and r.edns == 0 and not r.answer


def test_udp_sizes_without_edns_small_edns_and_tcp() -> None:
    zone = make_zone(30)
    name = "_grpc._tcp.worker.tf.local."
    # 30 SRV records (~1.2 KB): TC without EDNS, and with a 600-byte EDNS buffer.
    assert ask(zone, name, "SRV").flags & dns.flags.TC
    assert ask(zone, name, "SRV", use_edns=0, payload=600).flags & dns.flags.TC
    # The EDNS size is capped at 1232 even when the client offers more.
    q = dns.message.make_query(name, "SRV", use_edns=0, payload=65000)
    wire = zone.answer(q.to_wire(), "udp", CLIENT) or b""
    assert len(wire) <= 1232
    r = dns.message.from_wire(wire)
    assert r.flags & dns.flags.TC or len(texts(r)) == 30


def test_serve_stale_caps_ttl_then_servfails() -> None:
    zone = make_zone(ttl=60, negative_ttl=60, stale_ttl=30, max_stale=100.0)
    assert ask(zone, "worker1.tf.local.").answer[0].ttl == 60
    now = time.monotonic()
    zone.set_stale(now)
    r = ask(zone, "worker1.tf.local.")
    assert r.rcode() == dns.rcode.NOERROR and r.answer[0].ttl == 30
    assert ask(zone, "nope.tf.local.").authority[0].ttl == 30
    zone.set_stale(now - 101)
    assert ask(zone, "worker1.tf.local.").rcode() == dns.rcode.SERVFAIL
    assert ask(zone, "example.com.").rcode() == dns.rcode.REFUSED
    zone.set_stale(None)
    assert ask(zone, "worker1.tf.local.").answer[0].ttl == 60


def test_reconfigure_applies_new_ttls_and_stale_limits_at_once() -> None:
    zone = make_zone(ttl=60, negative_ttl=60, stale_ttl=30, max_stale=100.0)
    assert ask(zone, "worker1.tf.local.").answer[0].ttl == 60  # now cached
    assert ask(zone, "nope.tf.local.").authority[0].ttl == 60
    zone.reconfigure(replace(zone.dns, ttl=5, negative_ttl=7))
    assert ask(zone, "worker1.tf.local.").answer[0].ttl == 5
    soa = ask(zone, "nope.tf.local.").authority[0]
    assert soa.ttl == 7 and soa[0].minimum == 7
    zone.set_stale(time.monotonic() - 50)  # stale for 50 s: still inside max_stale
    assert ask(zone, "worker1.tf.local.").rcode() == dns.rcode.NOERROR
    zone.reconfigure(replace(zone.dns, max_stale=40.0, stale_ttl=3))
    assert ask(zone, "worker1.tf.local.").rcode() == dns.rcode.SERVFAIL, "past the new limit"
    zone.reconfigure(replace(zone.dns, max_stale=400.0))
    assert ask(zone, "worker1.tf.local.").answer[0].ttl == 3, "the stale TTL caps the TTL"
    assert ask(zone, "example.com.").rcode() == dns.rcode.REFUSED
    zone.reconfigure(replace(zone.dns, forward=("127.0.0.1:53",)))
    assert zone.forwarding


def test_other_classes_and_transfers_are_refused(zone: Zone) -> None:
    r = ask(zone, "worker1.tf.local.", "A", rdclass="CH")
    assert r.rcode() == dns.rcode.REFUSED
    assert ask(zone, "tf.local.", "AXFR", proto="tcp").rcode() == dns.rcode.REFUSED


def test_members_outside_the_zone_are_ignored(zone: Zone) -> None:
    zone.update([("worker", 50, Member("worker", 50, "evil.example.", ("1.2.3.4",), "x"))])
    assert ask(zone, "evil.example.").rcode() == dns.rcode.REFUSED


def test_stats_count_requests_and_responses(zone: Zone) -> None:
    ask(zone, "worker1.tf.local.")
    ask(zone, "nope.tf.local.", proto="tcp")
    snap = zone.stats.snapshot()
    assert snap["requests"]["udp"]["A"] == 1 and snap["requests"]["tcp"]["A"] == 1
    assert snap["responses"]["NOERROR"] == 1 and snap["responses"]["NXDOMAIN"] == 1


def test_ten_thousand_updates_are_cheap_and_served() -> None:
    zone = make_zone(0)
    changes = [("worker", i, member(i % 200)) for i in range(10000)]
    changes = [("worker", i, Member("worker", i, f"worker{i}.tf.local.", ("10.0.0.1",), "n"))
               for i in range(10000)]  # fmt: skip
    start = time.process_time()
    zone.update(changes)
    elapsed = time.process_time() - start
    assert texts(ask(zone, "worker9999.tf.local.")) == ["10.0.0.1"]
    # Generous bound (the target is well under 1 s); CPU time, not wall time.
    assert elapsed < 5.0


def test_rate_limiting_drops_or_slips_beyond_the_limit() -> None:
    zone = make_zone(rrl_per_second=5)
    q = dns.message.make_query("worker1.tf.local.", "A").to_wire()
    replies = [zone.answer(q, "udp", ("198.51.100.7", 1)) for _ in range(20)]
    full = [
        r for r in replies if r is not None and not dns.message.from_wire(r).flags & dns.flags.TC
    ]
    slipped = [
        r for r in replies if r is not None and dns.message.from_wire(r).flags & dns.flags.TC
    ]
    assert len(full) <= 6 and slipped and None in replies
    # Another /24 is not affected, nor is TCP.
    assert zone.answer(q, "udp", ("198.51.99.7", 1)) is not None
    assert all(zone.answer(q, "tcp", ("198.51.100.7", 1)) for _ in range(10))


def test_updates_from_another_thread_while_answering() -> None:
    import threading

    zone = make_zone(0)
    queries = [dns.message.make_query(f"worker{i}.tf.local.", "A").to_wire() for i in range(50)]
    stop = threading.Event()

    def churn() -> None:
        k = 0
        while not stop.is_set():
            k += 1
            zone.update([("worker", i, member(i) if (i + k) % 2 else None) for i in range(50)])

    t = threading.Thread(target=churn)
    t.start()
    try:
        rcodes = set()
        for _ in range(200):
            for q in queries:
                r = dns.message.from_wire(zone.answer(q, "udp", CLIENT) or b"")
                rcodes.add(r.rcode())
    finally:
        stop.set()
        t.join()
    assert rcodes <= {dns.rcode.NOERROR, dns.rcode.NXDOMAIN}
    # Once quiet, answers match the final view exactly (no stale cached reply survives).
    zone.update([("worker", i, member(i) if i % 3 else None) for i in range(50)])
    for i, q in enumerate(queries):
        r = dns.message.from_wire(zone.answer(q, "udp", CLIENT) or b"")
        assert (r.rcode() == dns.rcode.NOERROR) == bool(i % 3), i


def test_repeated_queries_follow_view_changes(zone: Zone) -> None:
    q = dns.message.make_query("worker1.tf.local.", "A").to_wire()
    first = zone.answer(q, "udp", CLIENT)
    assert zone.answer(q, "udp", CLIENT) == first  # the remembered reply
    zone.update([("worker", 1, None)])
    r = dns.message.from_wire(zone.answer(q, "udp", CLIENT) or b"")
    assert r.rcode() == dns.rcode.NXDOMAIN
    zone.set_identity("worker2.tf.local.")
    nsid = dns.message.make_query(
        "worker2.tf.local.", "A", use_edns=0, options=[dns.edns.GenericOption(dns.edns.NSID, b"")]
    ).to_wire()
    assert zone.answer(nsid, "udp", CLIENT)
    zone.set_identity("worker3.tf.local.")
    r = dns.message.from_wire(zone.answer(nsid, "udp", CLIENT) or b"")
    assert [o.to_wire() for o in r.options] == [b"worker3.tf.local."]


def test_random_case_flood_stays_bounded(zone: Zone) -> None:
    import random

    rng = random.Random(3)
    for _ in range(21000):
        name = "".join(c.upper() if rng.random() < 0.5 else c for c in "worker1.tf.local.")
        zone.answer(dns.message.make_query(name, "A").to_wire(), "udp", CLIENT)
    assert len(zone._replies) <= 20000
