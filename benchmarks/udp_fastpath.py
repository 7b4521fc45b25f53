"""Python CPU per UDP query on the batched fast path (idstore.dns.udp_batch), in process.

A Zone with ``--names`` names (as benchmarks/dns_qps.py --in-process feeds it), a real
BatchUdp bound on 127.0.0.1 (never run by an event loop: ``_readable()`` is called by
hand), and a client socket on loopback that pre-sends ``burst`` queries before each call.
Only the ``_readable()`` call is timed: recvmmsg, the answers, sendmmsg (the kernel's
share is in it, the same for every side). The client's sends and reads are not.

Three sides in the same run, in a shuffled order call by call so a loaded machine
disturbs them alike: ``current`` (the code in idstore), ``baseline`` (the loop as it was
before the fast-path tuning, kept below as a subclass) and ``floor`` (the system calls
alone, the same prepared reply to every datagram: what is left is the kernel's). Current
and baseline answer the same queries; their replies are compared byte for byte.
Modes: ``plain`` (lower-case names: the ``exact`` level of the reply cache) and ``case``
(random letter case per query: the ``folded`` level), each with a burst of 250 queries
(a busy server: full batches) and of 8 (a few per wake-up).

Prints one JSON line per (mode, burst) with ns/query of each side by wall clock
(perf_counter_ns, median of the per-call figures) and by CPU (process_time over all
calls), the ratios current/baseline (< 1: the current code is cheaper), and that ratio
for the CPU above the floor (the Python's share). Bounded:
``--calls`` calls per side and line (default 400).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import errno
import functools
import json
import os
import random
import socket
import statistics
import struct
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from idstore.config import DnsSettings, PoolSettings
from idstore.dns import DnsServer, Zone
from idstore.dns import replies as reply_cache
from idstore.dns.udp_batch import BatchUdp, mmsg
from idstore.dns.zone import ForwardRequest
from idstore.pattern import Pattern
from idstore.view import Member

ZONE = "tf.local."
HOST = "127.0.0.1"


class BaselineUdp(BatchUdp):
    """The receive/answer/send loop of udp_batch.py as of commit a9e853b, verbatim but
    for the names it reaches through ``mmsg``: the reference the current code is
    measured against. Its send headers get the layout of then: one piece per reply."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        m = mmsg
        assert m is not None
        # The calls as they were: through ``argtypes``, pointers passed as Python ints.
        libc = ctypes.PyDLL(None, use_errno=True)
        self.recvmmsg = libc.recvmmsg
        self.recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int,
                                  ctypes.c_void_p]  # fmt: skip
        self.recvmmsg.restype = ctypes.c_int
        self.sendmmsg = libc.sendmmsg
        self.sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
        self.sendmmsg.restype = ctypes.c_int
        self.rhdr_addr = ctypes.addressof(self.rhdr)
        self.shdr_addr = ctypes.addressof(self.shdr)
        self.siov = (m.Iovec * m.BATCH)()
        for i in range(m.BATCH):
            self.siov[i].base = self.sbase + i * m.SSLOT
            self.shdr[i].hdr.iov, self.shdr[i].hdr.iovlen = ctypes.addressof(self.siov[i]), 1
        self.siq = memoryview(self.siov).cast("B").cast("Q")

    def _readable(self) -> None:
        m = mmsg
        assert m is not None
        for _ in range(8):  # ROUNDS then
            if self.closed:
                return
            n = self.recvmmsg(self.fd, self.rhdr_addr, 32, socket.MSG_DONTWAIT, None)
            if n <= 0:
                if n < 0:
                    err = ctypes.get_errno()
                    if err not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                        pass
                return
            self._answer(n)
            if n < 32:
                return

    def _answer(self, n: int) -> None:
        m = mmsg
        assert m is not None
        zone = self.zone
        stats = zone.stats
        cached = stats.cached
        durations = stats.durations
        every = durations.every
        replies = zone.replies if self.inline else reply_cache.Replies()
        exact, folded = replies.exact, replies.folded
        resolve = zone.resolve
        rbuf, sbuf, ru = self.rbuf, self.sbuf, self.ru
        rslot, sslot, ustride, ulen = m.RSLOT, m.SSLOT, m.u_stride, m.u_len
        clock = time.perf_counter_ns
        count = self.counter
        j = 0
        pending: list[int] = []
        for i in range(n):
            count += 1
            timed = count % every == 0
            if timed:
                start = clock()
            off = i * rslot
            data = rbuf[off : off + ru[i * ustride + ulen]]
            key = data[2:]
            hit = exact.get(key)
            if hit is not None and hit[2].live:
                code = hit[1]
                reply = data[:2] + hit[0]
            elif (
                (e := folded.get(key.lower())) is not None
                and e[6].live
                and (data[2:12] == e[0] and data[e[1] :] == e[2])
            ):
                code = e[5]
                reply = b"".join((data[:2], e[3], data[12 : e[1] + 4], e[4]))
            else:
                code = -1
                result = resolve(data, "udp", self.client(i))
                if type(result) is bytes:
                    reply = result
                else:
                    if isinstance(result, ForwardRequest):
                        self.server.relay(result, functools.partial(self._reply_to, self.client(i)))
                    continue
            if code >= 0:
                cached[code] = cached.get(code, 0) + 1
            size = len(reply)
            if size > sslot:
                self.sendto(reply, self.client(i))
            else:
                so = j * sslot
                sbuf[so : so + size] = reply
                self.siq[j * 2 + 1] = size
                pending.append(i)
                j += 1
            if timed:
                durations.observe_ns(clock() - start)
        self.counter = count
        if j:
            self._send(pending)

    def _send(self, pending: list[int]) -> None:
        m = mmsg
        assert m is not None
        sq, su, ru = self.sq, self.su, self.ru
        for j, i in enumerate(pending):
            sq[j * m.q_stride + m.q_name] = self.nbase + i * m.NAME
            su[j * m.u_stride + m.u_namelen] = ru[i * m.u_stride + m.u_namelen]
        total, done = len(pending), 0
        while done < total:
            hdr = self.shdr_addr + done * m.q_stride * 8
            sent = self.sendmmsg(self.fd, hdr, total - done, socket.MSG_DONTWAIT)
            if sent > 0:
                done += sent
                continue
            done += 1


class FloorUdp(BatchUdp):
    """The system calls alone: every datagram of a batch gets the same prepared 64-octet
    reply with no Python per datagram. What a side costs above this is its Python."""

    def _readable(self) -> None:
        m = mmsg
        assert m is not None
        if not hasattr(self, "ready"):
            self.ready = True
            for j in range(m.BATCH):
                self.sq[j * m.q_stride + m.q_name] = self.nbase + j * m.NAME
                self.su[j * m.u_stride + m.u_namelen] = 16
                self.siq[j * 2 + 1] = 64
        for _ in range(8):
            n = m.recvmmsg(self.fd, self.rhdr, m.BATCH, socket.MSG_DONTWAIT, None)
            if n <= 0:
                return
            m.sendmmsg(self.fd, self.shdr, n, socket.MSG_DONTWAIT)
            if n < m.BATCH:
                return


def make_zone(n: int) -> Zone:
    settings = DnsSettings(listen=((HOST, 0),), zone=ZONE, reverse_zones=("10.in-addr.arpa.",))
    pool = PoolSettings("worker", Pattern.parse("worker{{.ID}}." + ZONE), max(n, 1), port=2222)
    zone = Zone(settings, [pool])
    zone.update(
        [
            (
                "worker",
                i,
                Member("worker", i, f"worker{i}.{ZONE}", (f"10.0.{i >> 8}.{i & 255}",), f"node{i}"),
            )
            for i in range(n)
        ]
    )
    zone.set_identity(f"worker0.{ZONE}")
    return zone


def query(qid: int, name: str) -> bytes:
    """An A query as dnsperf sends it (RD, no EDNS)."""
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split("."))
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + b"\x00\x00\x01\x00\x01"


def random_case(name: str, rng: random.Random) -> str:
    return "".join(c.upper() if rng.random() < 0.5 else c for c in name)


def udp_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((HOST, 0))
    s.setblocking(False)
    return s


def drain(client: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(client.recv(4096))
        except BlockingIOError:
            return out


def run(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    zone = make_zone(args.names)
    settings = DnsSettings(listen=((HOST, 0),), zone=ZONE)
    server = DnsServer(zone, settings, batch_udp=True)
    loop = asyncio.new_event_loop()  # add_reader registers; the loop never runs
    sides: dict[str, BatchUdp] = {
        "baseline": BaselineUdp(server, udp_socket(), loop),
        "current": BatchUdp(server, udp_socket(), loop),
        "floor": FloorUdp(server, udp_socket(), loop),
    }
    client = udp_socket()
    names = [f"worker{i}.{ZONE}" for i in range(args.names)]
    try:
        for mode in ("plain", "case"):
            for burst in (250, 8):
                queries = [
                    query(rng.randrange(65536), random_case(nm, rng) if mode == "case" else nm)
                    for nm in (rng.choice(names) for _ in range(burst * 16))
                ]
                wall: dict[str, list[float]] = {k: [] for k in sides}
                cpu: dict[str, int] = dict.fromkeys(sides, 0)
                seen: dict[str, list[bytes]] = {k: [] for k in sides}
                for call in range(args.calls + 1):  # call 0 fills the reply cache
                    base = (call % 16) * burst
                    order = list(sides.items())
                    rng.shuffle(order)
                    for label, udp in order:
                        addr = udp.sock.getsockname()
                        for q in queries[base : base + burst]:
                            client.sendto(q, addr)
                        c0, t0 = time.process_time_ns(), time.perf_counter_ns()
                        udp._readable()
                        t1, c1 = time.perf_counter_ns(), time.process_time_ns()
                        got = drain(client)
                        if len(got) != burst:
                            raise SystemExit(f"{label}: {len(got)} replies to {burst} queries")
                        if call == 0:
                            continue
                        wall[label].append((t1 - t0) / burst)
                        cpu[label] += c1 - c0
                        if call <= 16:
                            seen[label].extend(got)
                if seen["baseline"] != seen["current"] or not seen["current"]:
                    raise SystemExit(f"{mode}/{burst}: the replies differ")
                w = {k: statistics.median(v) for k, v in wall.items()}
                c = {k: v / (args.calls * burst) for k, v in cpu.items()}
                print(json.dumps({
                    "mode": mode, "burst": burst, "calls": args.calls,
                    "wall_ns_per_query": {k: round(v) for k, v in w.items()},
                    "cpu_ns_per_query": {k: round(v) for k, v in c.items()},
                    "ratio_wall": round(w["current"] / w["baseline"], 3),
                    "ratio_cpu": round(c["current"] / c["baseline"], 3),
                    # the Python share: what each side costs above the system calls alone
                    "ratio_cpu_above_floor": round(
                        (c["current"] - c["floor"]) / (c["baseline"] - c["floor"]), 3),
                    "load": os.getloadavg()[0],
                }), flush=True)  # fmt: skip
    finally:
        for udp in sides.values():
            udp.close()
        client.close()
        loop.close()
    snap: dict[str, Any] = zone.stats.snapshot()
    print(json.dumps({"requests_udp": snap["requests"].get("udp", {}),
                      "responses": snap["responses"]}))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--names", type=int, default=1000)
    ap.add_argument("--calls", type=int, default=400, help="timed calls per side and line")
    ap.add_argument("--seed", type=int, default=14)
    args = ap.parse_args()
    if mmsg is None:
        raise SystemExit("recvmmsg/sendmmsg not available here")
    run(args)


if __name__ == "__main__":
    main()
