"""Pools of 10,000 slots end to end: config and pattern widths, ``idstore list`` output,
a 10,000-member SRV answer over TCP (TC as designed), and the UDP server answering a
burst of queries on both of its receive paths. No timing assertions."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from idstore import cli, config
from idstore.backends.base import Claim, SlotRecord
from idstore.config import DnsSettings, PoolSettings, Settings
from idstore.dns import DnsServer, Zone, records
from idstore.dns.udp_batch import mmsg as _mmsg
from idstore.pattern import Pattern
from idstore.view import Member

N = 10_000
CLIENT = ("192.0.2.200", 40000)


def address(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def big_pool(limit: int = N, pattern: str = "worker{{.ID}}.tf.local.") -> PoolSettings:
    return PoolSettings("worker", Pattern.parse(pattern), limit, port=2222)


def big_zone(n: int = N, **dns_kw: object) -> Zone:
    settings = DnsSettings(zone="tf.local.", reverse_zones=("10.in-addr.arpa.",), **dns_kw)  # type: ignore[arg-type]
    zone = Zone(settings, [big_pool(max(n, 1))])
    zone.update(
        [
            ("worker", i, Member("worker", i, f"worker{i}.tf.local.", (address(i),), f"n{i}"))
            for i in range(n)
        ]
    )
    return zone


# --------------------------------------------------------------------------- config


def test_config_with_a_10000_slot_pool_validates_and_renders_widths(tmp_path: Path) -> None:
    path = tmp_path / "idstore.toml"
    path.write_text(
        "[pools.worker]\n"
        "pattern = 'worker{{printf \"%05d\" .ID}}.tf.local.'\n"
        f"limit = {N}\n"
        "port = 2222\n"
        "[pools.ps]\n"
        "pattern = 'ps{{.ID}}.tf.local.'\n"
        f"limit = {N}\n"
    )
    settings = config.load(cli={"config": str(path)}, environ={})
    worker, ps = settings.pools
    assert worker.limit == N and len(worker.slots()) == N
    assert worker.name_of(0) == "worker00000.tf.local."
    assert worker.name_of(N - 1) == "worker09999.tf.local."
    assert ps.name_of(N - 1) == "ps9999.tf.local."
    names = {worker.name_of(s) for s in worker.slots()}
    assert len(names) == N  # every slot its own name
    assert len({len(n) for n in names}) == 1  # padded: all the same width, they sort
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli.main(["config", "check", str(path)]) == 0
    shown = json.loads(out.getvalue())
    assert shown["pools"]["worker"]["names"] == "worker00000.tf.local. .. worker09999.tf.local."


def test_a_pattern_too_narrow_for_10000_slots_still_renders_every_slot() -> None:
    pool = big_pool(pattern='w{{printf "%03d" .ID}}.tf.local.')
    assert pool.name_of(7) == "w007.tf.local."
    assert pool.name_of(N - 1) == "w9999.tf.local."  # printf widths are minimums
    assert len({pool.name_of(s) for s in pool.slots()}) == N


# --------------------------------------------------------------------------- list output


def claims(n: int) -> list[Claim]:
    return [
        Claim("worker", i, SlotRecord(f"node{i}", uuid.uuid4().hex, (address(i),)), i + 1, "1")
        for i in range(n)
    ]


def test_list_output_of_10000_claims_is_aligned_and_complete() -> None:
    settings = Settings(pools=(big_pool(),), pool="worker")
    out = io.StringIO()
    with redirect_stdout(out):
        cli.print_claims(settings, claims(N), as_json=False)
    lines = out.getvalue().splitlines()
    assert len(lines) == N + 1
    header = lines[0]
    assert header.split() == ["POOL", "SLOT", "NAME", "NODE", "ADDRESSES"]
    name_col = header.index("NAME")
    assert lines[1][name_col:].startswith("worker0.tf.local.")
    assert lines[-1][name_col:].startswith("worker9999.tf.local.")
    assert lines[-1].split()[:2] == ["worker", "9999"]
    out = io.StringIO()
    with redirect_stdout(out):
        cli.print_claims(settings, claims(N), as_json=True)
    items = json.loads(out.getvalue())
    assert len(items) == N and items[-1]["name"] == "worker9999.tf.local."


# --------------------------------------------------------------------------- SRV


def srv_query(edns: int = -1) -> bytes:
    q = dns.message.make_query("_grpc._tcp.worker.tf.local.", "SRV", use_edns=edns)
    return q.to_wire()


def test_10000_member_srv_over_tcp_is_as_many_as_fit_with_tc() -> None:
    zone = big_zone()
    wire = zone.answer(srv_query(), "tcp", CLIENT)
    assert wire is not None and len(wire) <= 65535
    reply = dns.message.from_wire(wire)
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.flags & dns.flags.TC  # the set is partial, and says so
    assert reply.flags & dns.flags.AA
    records = [rd for rrset in reply.answer for rd in rrset]
    assert 1000 < len(records) < N
    assert all(rd.rdtype == dns.rdatatype.SRV and rd.port == 2222 for rd in records)
    targets = [rd.target.to_text() for rd in records]
    assert targets[:2] == ["worker0.tf.local.", "worker1.tf.local."]  # lowest slots first
    assert len(set(targets)) == len(targets)


def test_one_claim_in_a_10000_member_pool_packs_a_handful_of_records(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After one claim, the pool's SRV answer and the name's A answer are rebuilt from the
    members' packed records: dnslib packs the new member's few records, not the pool."""
    zone = big_zone()
    zone.answer(srv_query(), "tcp", CLIENT)  # every member that fits is packed once
    packed: list[int] = []
    real = records.pack_after

    def counting(qname: bytes, rrs: object, offset: int = 12) -> bytes:
        rrs = list(rrs)  # type: ignore[call-overload]
        packed.append(len(rrs))
        return real(qname, rrs, offset)

    monkeypatch.setattr(records, "pack_after", counting)
    zone.update([("worker", 3, Member("worker", 3, "worker3.tf.local.", ("10.9.9.9",), "new"))])
    reply = dns.message.from_wire(zone.answer(srv_query(), "tcp", CLIENT) or b"")
    assert len([rd for rrset in reply.answer for rd in rrset]) > 1000
    a = dns.message.make_query("worker3.tf.local.", "A").to_wire()
    answer = dns.message.from_wire(zone.answer(a, "udp", CLIENT) or b"")
    assert [rd.to_text() for rrset in answer.answer for rd in rrset] == ["10.9.9.9"]
    assert len(packed) <= 4 and sum(packed) <= 4, packed  # SRV + its A, the SOA, the A


def test_10000_member_srv_over_udp_is_tc_with_just_the_question() -> None:
    zone = big_zone()
    for edns in (-1, 0):
        wire = zone.answer(srv_query(edns), "udp", CLIENT)
        assert wire is not None and len(wire) <= (512 if edns < 0 else 1232)
        reply = dns.message.from_wire(wire)
        assert reply.flags & dns.flags.TC
        assert not reply.answer and len(reply.question) == 1


def test_1000_member_srv_fits_tcp_whole() -> None:
    zone = big_zone(1000)
    reply = dns.message.from_wire(zone.answer(srv_query(), "tcp", CLIENT) or b"")
    assert not reply.flags & dns.flags.TC
    assert sum(len(rrset) for rrset in reply.answer) == 1000


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: object) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)  # type: ignore[arg-type]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(params=[True, False], ids=["batch", "transport"])
def server(request: pytest.FixtureRequest) -> Iterator[tuple[DnsServer, Zone, int]]:
    if request.param and _mmsg is None:
        pytest.skip("recvmmsg/sendmmsg not available here")
    zone = big_zone()
    settings = DnsSettings(listen=(("127.0.0.1", 0),), zone="tf.local.")
    srv = DnsServer(zone, settings, batch_udp=request.param)
    lt = LoopThread()
    lt.run(srv.start())
    try:
        yield srv, zone, srv.bound[0][1]
    finally:
        lt.run(srv.stop())
        lt.close()


def test_server_sends_the_10000_member_srv_over_tcp(
    server: tuple[DnsServer, Zone, int],
) -> None:
    _, _, port = server
    q = dns.message.make_query("_grpc._tcp.worker.tf.local.", "SRV")
    reply = dns.query.tcp(q, "127.0.0.1", port=port, timeout=5)
    assert reply.flags & dns.flags.TC
    assert 1000 < sum(len(rrset) for rrset in reply.answer) < N
    udp = dns.query.udp(q, "127.0.0.1", port=port, timeout=5)
    assert udp.flags & dns.flags.TC and not udp.answer


def test_server_answers_a_burst_over_10000_names(server: tuple[DnsServer, Zone, int]) -> None:
    srv, zone, port = server
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
    try:
        for s in socks:
            s.settimeout(5)
        for rnd in range(2):  # the second round is answered from the reply cache
            wanted, got = {}, {}
            for k, s in enumerate(socks):
                for j in range(250):  # 1000 distinct names in flight at once
                    i = (k * 2500 + j * 10) % N
                    qid = (rnd << 14) | (k << 12) | j
                    wire = dns.message.make_query(f"worker{i}.tf.local.", "A", id=qid).to_wire()
                    s.sendto(wire, ("127.0.0.1", port))
                    wanted[qid] = address(i)
            for s in socks:
                for _ in range(250):
                    reply = dns.message.from_wire(s.recv(2048))
                    got[reply.id] = reply.answer[0][0].to_text()
            assert got == wanted
        nx = dns.message.make_query(f"worker{N}.tf.local.", "A")
        socks[0].sendto(nx.to_wire(), ("127.0.0.1", port))
        assert dns.message.from_wire(socks[0].recv(2048)).rcode() == dns.rcode.NXDOMAIN
    finally:
        for s in socks:
            s.close()
    snap = zone.stats.snapshot()
    assert snap["requests"]["udp"]["A"] == 2001
    assert snap["responses"]["NOERROR"] == 2000 and snap["responses"]["NXDOMAIN"] == 1
    if srv.batch_udp:
        _, count, total = zone.stats.durations.samples()
        assert count > 0 and total > 0  # sampled: one answer in ``every`` is timed


def test_duration_histogram_scales_its_samples() -> None:
    from idstore.dns.stats import DurationHistogram

    h = DurationHistogram(every=4)
    for ns in (5_000, 20_000, 2_000_000_000):
        h.observe_ns(ns)
    buckets, count, total = h.samples()
    assert count == 12 and buckets[0] == (0.00001, 4) and buckets[1] == (0.000025, 8)
    assert buckets[-1][1] == 12 and buckets[-2][1] == 8  # 2 s lands in +Inf only
    assert total == pytest.approx(4 * 2.000025)
