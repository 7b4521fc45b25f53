"""SRV with each member's own port, one SRV service per named port, and PTR with no
configuration (reverse zones derived from the claims)."""

from __future__ import annotations

import dns.rcode
import dns.rdatatype

from idstore import config
from idstore.config import DnsSettings, PoolSettings
from idstore.dns import Zone
from tests.unit.test_dns_zone import ask, member, texts

V6_PTR = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."  # 2001:db8::1


def pools(ports: object) -> list[PoolSettings]:
    body = {"pattern": "worker{{.ID}}.tf.local.", "limit": 100, "ports": ports}
    return list(config.load(raw={"pools": {"worker": body}}, environ={}).pools)


def srv(zone: Zone, owner: str) -> list[tuple[int, str]]:
    r = ask(zone, owner, "SRV")
    return sorted(
        (rd.port, rd.target.to_text())
        for rr in r.answer
        if rr.rdtype == dns.rdatatype.SRV
        for rd in rr
    )


def test_srv_gives_each_member_its_own_port_and_each_named_port_its_service() -> None:
    zone = Zone(DnsSettings(zone="tf.local."), pools({"grpc": "20000-20999", "master": 29500}))
    zone.update(
        [
            ("worker", 0, member(0, ports={"grpc": 20417, "master": 29500})),
            ("worker", 1, member(1, ports={"grpc": 20002, "master": 29500})),
        ]
    )
    assert srv(zone, "_grpc._tcp.worker.tf.local.") == [
        (20002, "worker1.tf.local."),
        (20417, "worker0.tf.local."),
    ]
    assert srv(zone, "_master._tcp.worker.tf.local.") == [
        (29500, "worker0.tf.local."),
        (29500, "worker1.tf.local."),
    ]
    # a member of the previous release publishes its one port as "app"
    zone.update([("worker", 2, member(2, ports={"app": 20999}))])
    assert (20999, "worker2.tf.local.") in srv(zone, "_grpc._tcp.worker.tf.local.")


def test_ptr_for_every_published_address_with_no_configuration() -> None:
    settings = config.load(
        raw={"pools": {"worker": {"pattern": "worker{{.ID}}.tf.local."}}}, environ={}
    ).dns
    assert settings.reverse_auto and settings.reverse_zones == ()
    zone = Zone(settings, [PoolSettings("worker", pools({"a": 1})[0].pattern, 100)])
    assert ask(zone, "10.2.0.192.in-addr.arpa.", "PTR").rcode() == dns.rcode.REFUSED
    zone.update([("worker", 0, member(0)), ("worker", 1, member(1))])
    r = ask(zone, "10.2.0.192.in-addr.arpa.", "PTR")  # the REFUSED above is not replayed
    assert r.rcode() == dns.rcode.NOERROR and texts(r) == ["worker0.tf.local."]
    r = ask(zone, V6_PTR, "PTR")
    assert texts(r) == ["worker0.tf.local."]
    assert ask(zone, "2.0.192.in-addr.arpa.", "SOA").rcode() == dns.rcode.NOERROR
    assert ask(zone, "99.2.0.192.in-addr.arpa.", "PTR").rcode() == dns.rcode.NXDOMAIN
    # another subnet holds no claim: not ours (forwarded, or REFUSED)
    assert ask(zone, "1.1.168.192.in-addr.arpa.", "PTR").rcode() == dns.rcode.REFUSED
    # the zone goes with its last address
    zone.update([("worker", 0, None), ("worker", 1, None)])
    assert ask(zone, "10.2.0.192.in-addr.arpa.", "PTR").rcode() == dns.rcode.REFUSED
    assert ask(zone, "2.0.192.in-addr.arpa.", "SOA").rcode() == dns.rcode.REFUSED


def test_reverse_zones_set_override_and_an_empty_list_turns_ptr_off() -> None:
    def load(reverse: list[str]) -> DnsSettings:
        raw = {"pools": {"worker": {"pattern": "worker{{.ID}}.tf.local."}},
               "dns": {"reverse_zones": reverse}}  # fmt: skip
        return config.load(raw=raw, environ={}).dns

    off = load([])
    assert not off.reverse_auto
    zone = Zone(off, pools({"grpc": 1}))
    zone.update([("worker", 0, member(0))])
    assert ask(zone, "10.2.0.192.in-addr.arpa.", "PTR").rcode() == dns.rcode.REFUSED
    only = Zone(load(["0.192.in-addr.arpa."]), pools({"grpc": 1}))
    only.update([("worker", 0, member(0))])
    assert texts(ask(only, "10.2.0.192.in-addr.arpa.", "PTR")) == ["worker0.tf.local."]
    assert ask(only, "0.192.in-addr.arpa.", "SOA").rcode() == dns.rcode.NOERROR
    assert ask(only, V6_PTR, "PTR").rcode() == dns.rcode.REFUSED


def test_given_reverse_zones_win_over_the_derived_ones() -> None:
    zone = Zone(DnsSettings(zone="tf.local.", reverse_zones=("8.b.d.0.1.0.0.2.ip6.arpa.",)),
                pools({"grpc": 1}))  # fmt: skip
    zone.update([("worker", 0, member(0))])
    assert texts(ask(zone, V6_PTR, "PTR")) == ["worker0.tf.local."]
    assert ask(zone, "10.2.0.192.in-addr.arpa.", "PTR").rcode() == dns.rcode.REFUSED
