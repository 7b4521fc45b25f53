"""The batched UDP path (idstore.dns.udp_batch) on bursts that fill several recvmmsg
batches and mix, inside one batch, replies from both levels of the reply cache, replies
from ``Zone.resolve``, packets that get no reply and replies too large for a send slot:
every datagram gets exactly the reply ``Zone.answer`` gives it (or none where that gives
none), and the counters and the sampled duration histogram count what they did before
the fast path was tuned. The event loop is held while a burst is sent, so the batches
are full and their make-up does not depend on timing."""

from __future__ import annotations

import random
import socket
import threading
from collections.abc import Iterator

import pytest

from idstore.config import DnsSettings
from idstore.dns import DnsServer, Zone
from idstore.dns.stats import DurationHistogram
from idstore.dns.udp_batch import mmsg
from idstore.dns.zone import ForwardRequest, TransferRequest
from tests.harness.dnsfuzz import CORPUS, DROPPED, header, question
from tests.unit.test_dns_zone import make_zone, member, ps_pool, worker_pool
from tests.unit.test_scale import LoopThread

HOST = "127.0.0.1"
BIG = 5000  # larger than a send slot (Mmsg.SSLOT): goes out through sendto

pytestmark = pytest.mark.skipif(mmsg is None, reason="recvmmsg/sendmmsg are Linux-only")


class OddZone(Zone):
    """A zone with its own ``resolve`` (the server then sends every query through it):
    no reply to IDs divisible by 5, an oversized one to IDs divisible by 7."""

    def resolve(self, query: bytes, proto: str, client: tuple[object, ...]
                ) -> bytes | ForwardRequest | TransferRequest | None:  # fmt: skip
        qid = int.from_bytes(query[:2], "big")
        if len(query) >= 12 and qid % 5 == 0:
            return None
        if len(query) >= 12 and qid % 7 == 0:
            return query[:2] + b"\x84" + b"\x00" * (BIG - 3)
        return super().resolve(query, proto, client)


def odd_zone() -> Zone:
    zone = OddZone(DnsSettings(zone="tf.local."), [worker_pool(), ps_pool()])
    zone.update([("worker", i, member(i)) for i in range(4)])
    return zone


def a_query(qid: int, name: str) -> bytes:
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split("."))
    return qid.to_bytes(2, "big") + header()[2:] + question(qname + b"\x00")


def burst(rng: random.Random, n: int) -> list[bytes]:
    """``n`` packets: A queries (lower case, random case, names that do not exist)
    with the malformed corpus mixed in, each with its own ID where it has one."""
    bad = [p for p in CORPUS.values() if len(p) < 60_000]  # the rest is TCP-sized
    dropped = [CORPUS[name] for name in sorted(DROPPED)]
    out = []
    for k in range(n):
        qid = 1000 + k
        if k % 11 == 7:  # holes in the batches, spaced unlike the batches
            out.append(dropped[k % len(dropped)])
            continue
        if k % 9 == 4:
            packet = bad[k % len(bad)]
            out.append(packet if len(packet) < 12 else qid.to_bytes(2, "big") + packet[2:])
            continue
        name = f"worker{rng.randrange(6)}.tf.local."  # 4 and 5 do not exist
        if rng.random() < 0.5:
            name = "".join(c.upper() if rng.random() < 0.5 else c for c in name)
        out.append(a_query(qid, name))
    return out


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    lt = LoopThread()
    try:
        yield lt
    finally:
        lt.close()


def serve_burst(lt: LoopThread, zone: Zone, packets: list[bytes]) -> list[tuple[int, bytes]]:
    """Send ``packets`` (alternately from two clients) while the server's loop is held,
    then let it answer; the replies as (client, reply), each client's up to the reply to
    a last good query of its own (loopback keeps the order)."""
    settings = DnsSettings(listen=((HOST, 0),), zone="tf.local.")
    srv = DnsServer(zone, settings, batch_udp=True)
    lt.run(srv.start())
    clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    gate, held = threading.Event(), threading.Event()
    try:
        for c in clients:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            c.settimeout(5)
            c.bind((HOST, 0))
        lt.loop.call_soon_threadsafe(lambda: (held.set(), gate.wait(10)))
        assert held.wait(10)
        addr = (HOST, srv.bound[0][1])
        for k, packet in enumerate(packets):
            clients[k % 2].sendto(packet, addr)
        # Sent through sendmmsg after the rest of their batch (an oversized reply would
        # go out first, through sendto), so they come last.
        last = [a_query(1 + c, "worker1.tf.local.") for c in range(2)]
        for c, q in enumerate(last):
            clients[c].sendto(q, addr)
        gate.set()
        replies = []
        for c, client in enumerate(clients):
            while (reply := client.recv(65535))[:2] != last[c][:2]:
                replies.append((c, reply))
        return replies
    finally:
        gate.set()
        for c in clients:
            c.close()
        lt.run(srv.stop())


@pytest.mark.parametrize("make", [make_zone, odd_zone], ids=["inline", "own-resolve"])
def test_udp_batch_answers_each_datagram_as_zone_answer_does(
    loop: LoopThread, make: object
) -> None:
    rng = random.Random(5)
    packets = burst(rng, 300)  # about 10 full batches
    zone = make()  # type: ignore[operator]
    replies = serve_burst(loop, zone, packets)
    for _ in range(2):  # the second time from the reply cache (of the inline zone)
        got = serve_burst(loop, zone, packets)
        assert sorted(got) == sorted(replies)
    wanted = [(k % 2, r) for k, p in enumerate(packets) if (r := zone.answer(p, "udp", (HOST, 1)))]
    assert sorted(replies) == sorted(wanted)
    assert any(len(r) == BIG for _, r in replies) == isinstance(zone, OddZone)
    assert len(replies) < len(packets)  # some are dropped, by the corpus or OddZone


def test_udp_batch_counts_and_samples_as_one_query_at_a_time(loop: LoopThread) -> None:
    rng = random.Random(6)
    dropped = [CORPUS[name] for name in sorted(DROPPED)]
    packets, answered = [], []
    for k in range(400):
        answered.append(k % 13 != 6)
        if k % 13 == 6:
            packets.append(dropped[k % len(dropped)])
        else:
            name = f"worker{rng.randrange(4)}.tf.local."
            if k % 2:
                name = name.upper()
            packets.append(a_query(k, name))
    zone = make_zone()
    zone.stats.durations = DurationHistogram(every=3)
    serve_burst(loop, zone, packets)
    serve_burst(loop, zone, packets)  # now from the reply cache, both levels
    snap = zone.stats.snapshot()
    good = sum(answered)
    assert snap["requests"]["udp"]["A"] == 2 * good + 4  # + two closing queries a time
    assert snap["responses"]["NOERROR"] == 2 * good + 4
    assert zone.stats.dropped == 2 * (len(packets) - good)
    # Datagram k (from 1, over the socket's life) is timed when k % 3 == 0 and answered.
    seq = [*answered, True, True]
    timed = sum(ok for k, ok in enumerate(seq, 1) if k % 3 == 0)
    _, count, _ = zone.stats.durations.samples()
    assert count == 3 * 2 * timed  # two servers, each from datagram 1


def test_udp_batch_sends_the_rest_after_a_partial_sendmmsg(
    loop: LoopThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sendmmsg may send fewer messages than asked (a full buffer): the rest follow,
    from the header where it stopped. Here every call sends at most one."""
    assert mmsg is not None
    real = mmsg.sendmmsg
    calls: list[int] = []

    def one_at_a_time(fd: int, hdr: object, vlen: int, flags: int) -> int:
        calls.append(vlen)
        return int(real(fd, hdr, 1, flags))

    monkeypatch.setattr(mmsg, "sendmmsg", one_at_a_time)
    zone = make_zone()
    packets = [a_query(100 + k, f"worker{k % 4}.tf.local.") for k in range(40)]
    replies = serve_burst(loop, zone, packets)
    wanted = [(k % 2, zone.answer(p, "udp", (HOST, 1))) for k, p in enumerate(packets)]
    assert sorted(replies) == sorted(wanted)
    assert max(calls) > 1  # it did ask for several at once
