"""DnsServer over real sockets on loopback, queried with dnspython and dig."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from idstore.config import DnsSettings
from idstore.dns import DnsServer, Zone
from tests.harness import nsd
from tests.harness.nodes import free_dns_port, wait_for
from tests.harness.nsd import NSD
from tests.unit.test_dns_zone import member, ps_pool, worker_pool

DIG = shutil.which("dig")


class LoopThread:
    """An event loop running in a background thread, for servers under test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


ServerFactory = Callable[..., tuple[DnsServer, Zone, tuple[str, int]]]


@pytest.fixture
def start_server(loop_thread: LoopThread) -> Iterator[ServerFactory]:
    started: list[DnsServer] = []

    def factory(n: int = 4, **dns_kw: Any) -> tuple[DnsServer, Zone, tuple[str, int]]:
        settings = DnsSettings(
            listen=(("127.0.0.1", 0),),
            zone="tf.local.",
            reverse_zones=("2.0.192.in-addr.arpa.",),
            **dns_kw,
        )
        zone = Zone(settings, [worker_pool(), ps_pool()])
        zone.update([("worker", i, member(i)) for i in range(n)])
        zone.set_identity("worker1.tf.local.")
        server = DnsServer(zone, settings)
        loop_thread.run(server.start())
        started.append(server)
        return server, zone, server.bound[0]

    yield factory
    for server in started:
        loop_thread.run(server.stop())


def udp(addr: tuple[str, int], name: str, rdtype: str = "A", **kw: Any) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, **kw)
    return dns.query.udp(q, addr[0], port=addr[1], timeout=3, ignore_trailing=False)


def tcp(addr: tuple[str, int], name: str, rdtype: str = "A", **kw: Any) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, **kw)
    return dns.query.tcp(q, addr[0], port=addr[1], timeout=3)


def answers(reply: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in reply.answer for rd in rrset)


def test_binds_udp_and_tcp_on_the_same_port(start_server: ServerFactory) -> None:
    _, _, addr = start_server()
    assert addr[1] != 0
    assert answers(udp(addr, "worker2.tf.local.")) == ["192.0.2.12"]
    assert answers(tcp(addr, "worker2.tf.local.")) == ["192.0.2.12"]


def test_every_record_type(start_server: ServerFactory) -> None:
    _, _, addr = start_server()
    assert answers(udp(addr, "worker3.tf.local.", "AAAA")) == ["2001:db8::4"]
    assert answers(udp(addr, "_grpc._tcp.worker.tf.local.", "SRV")) == [
        f"0 1 2222 worker{i}.tf.local." for i in range(4)
    ]
    assert answers(udp(addr, "worker0.tf.local.", "TXT")) == [
        '"pool=worker" "slot=0" "node=node-worker-0"'
    ]
    assert answers(udp(addr, "13.2.0.192.in-addr.arpa.", "PTR")) == ["worker3.tf.local."]
    assert answers(udp(addr, "tf.local.", "NS")) == ["ns.tf.local."]
    r = udp(addr, "nope.tf.local.")
    assert r.rcode() == dns.rcode.NXDOMAIN and r.authority
    assert udp(addr, "example.org.").rcode() == dns.rcode.REFUSED
    r = udp(addr, "worker1.tf.local.", use_edns=0,
            options=[dns.edns.GenericOption(dns.edns.NSID, b"")])  # fmt: skip
    assert [o.to_wire() for o in r.options] == [b"worker1.tf.local."]


def test_truncated_udp_then_tcp_retry(start_server: ServerFactory) -> None:
    _, _, addr = start_server(n=100)
    q = dns.message.make_query("_grpc._tcp.worker.tf.local.", "SRV")
    reply, used_tcp = dns.query.udp_with_fallback(q, addr[0], port=addr[1], timeout=3)
    assert used_tcp and len(answers(reply)) == 100


def _read_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError
        out += chunk
    return out


def _read_tcp_message(sock: socket.socket) -> dns.message.Message:
    (size,) = struct.unpack(">H", _read_exact(sock, 2))
    return dns.message.from_wire(_read_exact(sock, size))


def test_pipelined_tcp_queries_all_answered(start_server: ServerFactory) -> None:
    _, _, addr = start_server(n=10)
    queries = [dns.message.make_query(f"worker{i}.tf.local.", "A") for i in range(10)]
    payload = b"".join(struct.pack(">H", len(w)) + w for w in (q.to_wire() for q in queries))
    with socket.create_connection(addr, timeout=3) as sock:
        sock.sendall(payload)
        replies = [_read_tcp_message(sock) for _ in range(10)]
    assert {r.id: answers(r) for r in replies} == {
        q.id: [f"192.0.2.{10 + i}"] for i, q in enumerate(queries)
    }


def test_split_length_prefix(start_server: ServerFactory) -> None:
    _, _, addr = start_server()
    wire = dns.message.make_query("worker1.tf.local.", "A").to_wire()
    framed = struct.pack(">H", len(wire)) + wire
    with socket.create_connection(addr, timeout=3) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for part in (framed[:1], framed[1:2], framed[2:9], framed[9:]):
            sock.sendall(part)
            time.sleep(0.05)
        assert answers(_read_tcp_message(sock)) == ["192.0.2.11"]


def test_idle_tcp_connection_is_closed(start_server: ServerFactory) -> None:
    _, _, addr = start_server(tcp_idle_timeout=0.3)
    with socket.create_connection(addr, timeout=5) as sock:
        assert sock.recv(1) == b""  # closed by the server, long before our 5 s timeout


def test_connection_cap_and_slow_tcp_never_stalls_udp(start_server: ServerFactory) -> None:
    _, _, addr = start_server(tcp_max_connections=2)
    held = [socket.create_connection(addr, timeout=3) for _ in range(2)]
    try:
        held[0].sendall(b"\x00\x40partial")  # a query that never completes
        time.sleep(0.1)
        third = socket.create_connection(addr, timeout=3)
        with third:
            try:
                closed = third.recv(1) == b""
            except ConnectionResetError:
                closed = True
        assert closed
        assert answers(udp(addr, "worker1.tf.local.")) == ["192.0.2.11"]
    finally:
        for s in held:
            s.close()


def test_malformed_udp_then_normal_answers(start_server: ServerFactory) -> None:
    _, zone, addr = start_server()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        loop = (
            b"\xbe\xef\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\xc0\x0e\xc0\x0c\x00\x01\x00\x01"
        )
        sock.sendto(loop, addr)
        reply, _ = sock.recvfrom(512)
        assert reply[:2] == b"\xbe\xef" and reply[3] & 0x0F == dns.rcode.FORMERR
        sock.sendto(b"\x00\x01\x85\x00" + b"\x00" * 8, addr)  # a response: never answered
    assert answers(udp(addr, "worker1.tf.local.")) == ["192.0.2.11"]
    assert zone.stats.dropped >= 1


def test_view_changes_reach_answers(start_server: ServerFactory) -> None:
    _, zone, addr = start_server()
    assert udp(addr, "worker7.tf.local.").rcode() == dns.rcode.NXDOMAIN
    zone.update([("worker", 7, member(7))])
    assert answers(udp(addr, "worker7.tf.local.")) == ["192.0.2.17"]


# --------------------------------------------------------------------------- forwarding


class _Upstream(asyncio.DatagramProtocol):
    """A tiny upstream resolver: answers every A query with 203.0.113.9."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.queries = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queries += 1
        q = dns.message.from_wire(data)
        r = dns.message.make_response(q)
        r.flags |= dns.flags.RA
        r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", "203.0.113.9"))
        assert self.transport is not None
        self.transport.sendto(r.to_wire(), addr)


def test_forwarding_relays_out_of_zone_queries(
    start_server: ServerFactory, loop_thread: LoopThread
) -> None:
    upstream = _Upstream()

    async def start_upstream() -> tuple[asyncio.DatagramTransport, int]:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: upstream, local_addr=("127.0.0.1", 0)
        )
        return transport, transport.get_extra_info("sockname")[1]

    transport, port = loop_thread.run(start_upstream())
    try:
        _, zone, addr = start_server(forward=(f"127.0.0.1:{port}",), forward_timeout=2.0)
        r = udp(addr, "www.example.com.")
        assert r.rcode() == dns.rcode.NOERROR and answers(r) == ["203.0.113.9"]
        assert answers(tcp(addr, "www.example.com.")) == ["203.0.113.9"]
        assert answers(udp(addr, "worker1.tf.local.")) == ["192.0.2.11"]  # in-zone: ours
        assert upstream.queries == 2 and zone.stats.forwarded == 2
    finally:
        loop_thread.loop.call_soon_threadsafe(transport.close)


def test_forwarding_to_a_dead_upstream_servfails(start_server: ServerFactory) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dead:
        dead.bind(("127.0.0.1", 0))  # bound, never answers
        port = dead.getsockname()[1]
        _, _, addr = start_server(forward=(f"127.0.0.1:{port}",), forward_timeout=0.2)
        assert udp(addr, "www.example.com.").rcode() == dns.rcode.SERVFAIL


# --------------------------------------------------------------------------- dig


def dig(addr: tuple[str, int], *args: str) -> str:
    assert DIG is not None
    out = subprocess.run(
        [DIG, "@" + addr[0], "-p", str(addr[1]), "+time=3", "+tries=1", *args],
        capture_output=True, text=True, timeout=20, check=True,
    )  # fmt: skip
    return out.stdout


@pytest.mark.skipif(DIG is None, reason="dig is not installed")
def test_dig(start_server: ServerFactory) -> None:
    _, _, addr = start_server(n=60)
    assert dig(addr, "+short", "worker5.tf.local.").split() == ["192.0.2.15"]
    out = dig(addr, "+nsid", "worker5.tf.local.")
    assert "flags: qr aa rd;" in out and "NSID: 77 6f 72 6b 65 72 31" in out
    srv = dig(addr, "+short", "SRV", "_grpc._tcp.worker.tf.local.")  # TC -> dig retries on TCP
    assert len(srv.splitlines()) == 60
    assert "status: NXDOMAIN" in dig(addr, "nope.tf.local.")
    assert "status: REFUSED" in dig(addr, "example.com.")
    assert dig(addr, "+short", "-x", "192.0.2.12").split() == ["worker2.tf.local."]


@pytest.mark.skipif(DIG is None, reason="dig is not installed")
def test_dig_standards(start_server: ServerFactory) -> None:
    """What dig 9.18 shows of EDE (RFC 8914), NOTIMP (RFC 8906), BADKEY (RFC 8945) and
    DNS-SD (RFC 6763)."""
    _, zone, addr = start_server(n=3, max_stale=100.0)
    now = time.monotonic()
    zone.set_stale(now)
    out = dig(addr, "worker1.tf.local.")
    assert "status: NOERROR" in out and "; EDE: 3 (Stale Answer)" in out
    zone.set_stale(now - 101)
    out = dig(addr, "worker1.tf.local.")
    assert "status: SERVFAIL" in out and "; EDE: 22 (No Reachable Authority)" in out
    zone.set_stale(None)
    assert "EDE" not in dig(addr, "worker1.tf.local.")
    out = dig(addr, "+opcode=status", "+cd", "worker1.tf.local.")
    assert "opcode: STATUS, status: NOTIMP" in out and ";; flags: qr;" in out
    key = "hmac-sha256:bogus.key:c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"
    out = dig(addr, "-y", key, "worker1.tf.local.")
    assert "status: NOTAUTH" in out and "BADKEY" in out
    types = dig(addr, "+short", "PTR", "_services._dns-sd._udp.tf.local.")
    assert "_grpc._tcp.tf.local." in types.split()
    instances = dig(addr, "+short", "PTR", "_grpc._tcp.tf.local.").split()
    assert instances == [f"worker-{i}._grpc._tcp.tf.local." for i in range(3)]
    srv = dig(addr, "+short", "SRV", "worker-1._grpc._tcp.tf.local.")
    assert srv.split() == ["0", "1", "2222", "worker1.tf.local."]


# --------------------------------------------------------------------------- AXFR


def axfr_records(out: str) -> list[tuple[str, str, str]]:
    """(owner, type, rdata) of every record in dig's AXFR output, in order."""
    rows = []
    for line in out.splitlines():
        if line.startswith(";") or not line.strip():
            continue
        owner, _ttl, _cls, rtype, rdata = line.split(None, 4)
        rows.append((owner, rtype, rdata))
    return rows


@pytest.mark.skipif(DIG is None, reason="dig is not installed")
def test_dig_axfr_from_an_allowed_client(start_server: ServerFactory) -> None:
    _, zone, addr = start_server(n=300, transfer_allow=("127.0.0.0/8",))
    rows = axfr_records(dig(addr, "AXFR", "tf.local."))
    assert rows[0][1] == "SOA" and rows[-1][1] == "SOA" and rows[0] == rows[-1]
    assert int(rows[0][2].split()[2]) == zone.serial
    kinds = {(owner, rtype) for owner, rtype, _ in rows}
    assert ("worker245.tf.local.", "A") in kinds and ("worker0.tf.local.", "TXT") in kinds
    assert ("tf.local.", "NS") in kinds and ("ns.tf.local.", "A") in kinds
    srv = [r for r in rows if r[1] == "SRV" and r[0] == "_grpc._tcp.worker.tf.local."]
    assert len(srv) == 300  # the whole pool, over several messages
    assert ("_grpc._tcp.tf.local.", "PTR", "worker-7._grpc._tcp.tf.local.") in rows
    reverse = axfr_records(dig(addr, "AXFR", "2.0.192.in-addr.arpa."))
    assert ("12.2.0.192.in-addr.arpa.", "PTR", "worker2.tf.local.") in reverse
    # The serial grows with every change of the view.
    before = zone.serial
    zone.update([("worker", 400, member(400))])
    assert axfr_records(dig(addr, "AXFR", "tf.local."))[0][2].split()[2] == str(before + 1)


@pytest.mark.skipif(DIG is None, reason="dig is not installed")
def test_axfr_refused_outside_the_allow_list_and_over_udp(
    start_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    _, _, addr = start_server(n=3, transfer_allow=("10.0.0.0/8",))
    caplog.set_level(logging.WARNING, logger="idstore.dns.transfer")
    for _ in range(3):
        assert "Transfer failed" in dig(addr, "AXFR", "tf.local.")
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1, "logged at most once a minute per client"
    q = dns.message.make_query("tf.local.", "AXFR")
    r = dns.query.udp(q, addr[0], port=addr[1], timeout=3)
    assert r.rcode() == dns.rcode.REFUSED
    _, _, default = start_server(n=3)  # no dns.transfer_allow: nobody may transfer
    assert tcp(default, "tf.local.", "AXFR").rcode() == dns.rcode.REFUSED


def nsd_secondary_config(workdir: Path, port: int, primary: tuple[str, int]) -> Path:
    return nsd.write_conf(
        workdir, "127.0.0.1", port, "tf.local.",
        f'  zonefile: "{workdir}/tf.local.zone"\n'
        f"  request-xfr: AXFR {primary[0]}@{primary[1]} NOKEY\n"
        f"  allow-notify: {primary[0]} NOKEY\n",
        "  verbosity: 1\n",
    )  # fmt: skip


def test_nsd_secondary_transfers_the_zone_and_answers(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    """A real secondary (NSD, installed by scripts/test.sh) transfers the zone from
    idstore over loopback, then answers the cluster's names itself."""
    assert NSD is not None, "nsd is not installed (scripts/test.sh installs it)"
    _, zone, addr = start_server(n=50, transfer_allow=("127.0.0.1/32",))
    port = free_dns_port()
    conf = nsd_secondary_config(tmp_path, port, addr)
    proc = subprocess.Popen([NSD, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)  # fmt: skip
    secondary = ("127.0.0.1", port)

    def transferred() -> bool:
        try:
            return answers(udp(secondary, "worker7.tf.local.")) == ["192.0.2.17"]
        except (dns.exception.Timeout, OSError):
            return False

    try:
        wait_for(transferred, 30, "NSD to transfer the zone from idstore")
        assert answers(udp(secondary, "worker42.tf.local.", "TXT")) == [
            '"pool=worker" "slot=42" "node=node-worker-42"']  # fmt: skip
        srv = tcp(secondary, "_grpc._tcp.worker.tf.local.", "SRV")
        assert len(answers(srv)) == 50
        soa = udp(secondary, "tf.local.", "SOA").answer[0][0]
        assert soa.serial == zone.serial
        nx = udp(secondary, "nope.tf.local.")
        assert nx.rcode() == dns.rcode.NXDOMAIN
    finally:
        proc.terminate()
        proc.wait(10)
