"""The DNS transport: UDP and TCP listeners on asyncio (uvloop when the runtime installs
its policy), answering through ``Zone.resolve``.

On Linux, UDP is read and answered in batches: ``recvmmsg``/``sendmmsg`` through ctypes on
the bound socket, driven by ``loop.add_reader`` (see ``_BatchUdp``). Per packet that
leaves a dict lookup and a copy; the two system calls per query of a datagram transport
cost most of the time of the fast path (about 1.5x the QPS on this kind of machine).
Elsewhere, or with ``IDSTORE_DNS_BATCH=0``, the loop's datagram transport is used.

UDP never waits on TCP: every socket is non-blocking and a TCP client that stops reading
only pauses reading from that one connection (RFC 7766 pipelining keeps working: every
complete message in the buffer is answered, in order). TCP connections are capped and
closed after ``dns.tcp_idle_timeout`` without a complete query, so slow-drip clients
cannot hold them either.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import functools
import logging
import mmap
import os
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import Any, cast

from idstore.config import DnsSettings
from idstore.dns.forward import Forwarder
from idstore.dns.zone import ForwardRequest, Zone

log = logging.getLogger(__name__)

_UDP_RCVBUF = 4 << 20  # bursts of queries queue in the kernel rather than being lost
_PORT_TRIES = 20  # port 0: UDP picks a port, TCP must get the same one


class DnsServer:
    def __init__(self, zone: Zone, dns: DnsSettings, batch_udp: bool | None = None) -> None:
        """``batch_udp``: answer UDP in recvmmsg/sendmmsg batches; None = when available
        (Linux) and not switched off with ``IDSTORE_DNS_BATCH=0``."""
        self.zone = zone
        self.dns = dns
        self.bound: list[tuple[str, int]] = []
        self.forwarder = Forwarder.from_settings(dns.forward, dns.forward_timeout, dns.listen)
        if batch_udp is None:
            batch_udp = os.environ.get("IDSTORE_DNS_BATCH", "1") != "0"
        self.batch_udp = batch_udp and _mmsg is not None
        self._udp: list[asyncio.DatagramTransport | _BatchUdp] = []
        self._tcp: list[asyncio.Server] = []
        self._connections: set[_TcpConnection] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Bind UDP and TCP on every ``dns.listen`` address (same port for both)."""
        loop = asyncio.get_running_loop()
        try:
            for host, port in self.dns.listen:
                udp_sock, tcp_sock = _bind_pair(host, port)
                bound = udp_sock.getsockname()
                if self.batch_udp:
                    self._udp.append(_BatchUdp(self, udp_sock, loop))
                else:
                    transport, _ = await loop.create_datagram_endpoint(
                        lambda: _UdpProtocol(self), sock=udp_sock
                    )
                    self._udp.append(transport)
                server = await loop.create_server(
                    lambda: _TcpConnection(self), sock=tcp_sock, backlog=1024
                )
                self._tcp.append(server)
                self.bound.append((bound[0], bound[1]))
                log.info("DNS listening on %s port %d (udp, tcp) for %s", bound[0], bound[1],
                         self.dns.zone)  # fmt: skip
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for transport in self._udp:
            transport.close()
        for server in self._tcp:
            server.close()
        for conn in list(self._connections):
            conn.abort()
        for task in list(self._tasks):
            task.cancel()
        for server in self._tcp:
            with contextlib.suppress(TimeoutError, OSError):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        self._udp.clear()
        self._tcp.clear()
        self.bound.clear()

    def relay(self, request: ForwardRequest, send: Callable[[bytes], None]) -> None:
        """Forward an out-of-zone query in the background; ``send`` gets the reply."""
        if self.forwarder is None:
            if request.fallback is not None:
                send(request.fallback)
            return
        task = asyncio.get_running_loop().create_task(self._relay(request, send))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _relay(self, request: ForwardRequest, send: Callable[[bytes], None]) -> None:
        assert self.forwarder is not None
        stats = self.zone.stats
        try:
            reply = await self.forwarder.forward(request.query)
        except Exception as e:  # a relay failure costs one SERVFAIL, never the server
            log.warning("forwarding failed: %r", e)
            reply = None
        if reply is None:
            stats.forward_failures += 1
            reply = request.fallback
        else:
            stats.forwarded += 1
        if reply is not None:
            send(reply)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.resolve = server.zone.resolve
        self.transport: asyncio.DatagramTransport | None = None
        self.sendto: Callable[[bytes, tuple[str | object, ...]], None] = _not_connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not every loop's UDP transport subclasses DatagramTransport (asyncio's own doesn't).
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.sendto = self.transport.sendto

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        result = self.resolve(data, "udp", addr)
        if type(result) is bytes:
            self.sendto(result, addr)
        elif isinstance(result, ForwardRequest):
            sendto = self.sendto
            self.server.relay(result, lambda reply: sendto(reply, addr))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a client that went away: nothing to do.
        log.debug("udp error: %r", exc)


def _not_connected(data: bytes, addr: tuple[str | object, ...]) -> None:
    raise RuntimeError("UDP transport not connected")


class _TcpConnection(asyncio.Protocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.resolve = server.zone.resolve
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[object, ...] = ()
        self.last = 0.0  # loop time of the last complete query (or the connection start)
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        if len(self.server._connections) >= self.server.dns.tcp_max_connections:
            log.debug("TCP connection cap reached; refusing a connection")
            transport.abort()
            return
        self.server._connections.add(self)
        self.peer = tuple(transport.get_extra_info("peername") or ())
        loop = asyncio.get_running_loop()
        self.last = loop.time()
        self.timer = loop.call_later(self.server.dns.tcp_idle_timeout, self._check_idle)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while len(buf) >= 2:
            size = (buf[0] << 8) | buf[1]
            if len(buf) < 2 + size:
                break  # the rest (even of the length prefix) comes in a later read
            msg = bytes(buf[2 : 2 + size])
            del buf[: 2 + size]
            self.last = asyncio.get_running_loop().time()
            result = self.resolve(msg, "tcp", self.peer)
            if result is None:
                continue
            if type(result) is bytes:
                self.send(result)
            elif isinstance(result, ForwardRequest):
                self.server.relay(result, self.send)

    def send(self, reply: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(struct.pack(">H", len(reply)) + reply)

    def pause_writing(self) -> None:
        # The client is not reading its answers: stop reading its queries too, rather
        # than buffer without bound.
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def _check_idle(self) -> None:
        loop = asyncio.get_running_loop()
        idle = loop.time() - self.last
        timeout = self.server.dns.tcp_idle_timeout
        if idle >= timeout:
            self.abort()
        else:
            self.timer = loop.call_later(timeout - idle, self._check_idle)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
        self.transport = None


def _bind_pair(host: str, port: int) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket bound to the same address and port."""
    if host == "localhost":
        host = "127.0.0.1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    last_error: OSError | None = None
    for _ in range(_PORT_TRIES if port == 0 else 1):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            for sock in (udp, tcp):
                sock.setblocking(False)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            with contextlib.suppress(OSError):  # a smaller buffer still works
                udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _UDP_RCVBUF)
            udp.bind((host, port))
            tcp.bind((host, udp.getsockname()[1]))
            return udp, tcp
        except OSError as e:
            udp.close()
            tcp.close()
            last_error = e
    raise OSError(f"cannot bind DNS on {host} port {port}: {last_error}") from last_error


# --------------------------------------------------------------------------- UDP batches


class _Mmsg:
    """recvmmsg/sendmmsg from libc, and the layout of ``struct mmsghdr`` (LP64 Linux)."""

    BATCH = 32  # datagrams per system call
    RSLOT = 65536  # receive room per datagram: no UDP payload is ever cut
    SSLOT = 4096  # send room per reply; a larger one goes out through sendto
    NAME = 128  # sockaddr_storage
    ROUNDS = 8  # batches per wake-up at most, so TCP and timers get their turn

    def __init__(self) -> None:
        # PyDLL keeps the GIL across the call: both calls never block (MSG_DONTWAIT), and
        # releasing the GIL there hands it to the store's threads, after which the loop
        # waits a whole switch interval to get it back (measured: half the QPS).
        libc = ctypes.PyDLL(None, use_errno=True)
        self.recvmmsg = libc.recvmmsg
        self.recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int,
                                  ctypes.c_void_p]  # fmt: skip
        self.recvmmsg.restype = ctypes.c_int
        self.sendmmsg = libc.sendmmsg
        self.sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
        self.sendmmsg.restype = ctypes.c_int

        class Iovec(ctypes.Structure):
            _fields_ = (("base", ctypes.c_void_p), ("len", ctypes.c_size_t))

        class Msghdr(ctypes.Structure):
            _fields_ = (("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                        ("iov", ctypes.c_void_p), ("iovlen", ctypes.c_size_t),
                        ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                        ("flags", ctypes.c_int))  # fmt: skip

        class Mmsghdr(ctypes.Structure):
            _fields_ = (("hdr", Msghdr), ("len", ctypes.c_uint))

        self.Iovec, self.Mmsghdr = Iovec, Mmsghdr
        size = ctypes.sizeof(Mmsghdr)
        if size % 8 or ctypes.sizeof(Iovec) != 16 or Msghdr.name.offset != 0:
            raise OSError("unexpected struct mmsghdr layout")
        # Indexes into 64-bit (q) and 32-bit (u) views of the header arrays.
        self.q_stride, self.u_stride = size // 8, size // 4
        self.q_name = Msghdr.name.offset // 8
        self.u_namelen = Msghdr.namelen.offset // 4
        self.u_len = Mmsghdr.len.offset // 4


def _load_mmsg() -> _Mmsg | None:
    if sys.platform != "linux" or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    try:
        return _Mmsg()
    except (OSError, AttributeError) as e:
        log.debug("recvmmsg/sendmmsg unavailable (%s): UDP through the loop's transport", e)
        return None


_mmsg = _load_mmsg()
_MAX_CLIENTS = 4096  # decoded client addresses remembered per socket


class _BatchUdp:
    """One UDP socket answered in batches: recvmmsg up to BATCH datagrams, answer each,
    sendmmsg every reply at once. Runs on the event loop (``add_reader``), never blocks.

    Replies from the zone's whole-reply cache are built inline (``Zone.resolve`` does the
    same lookup); everything else goes through ``Zone.resolve`` with the client address
    decoded, exactly like the datagram-transport path. A zone whose ``resolve`` is
    overridden gets every query through it.
    """

    def __init__(self, server: DnsServer, sock: socket.socket, loop: asyncio.AbstractEventLoop
                 ) -> None:  # fmt: skip
        m = _mmsg
        assert m is not None
        self.server = server
        self.zone = server.zone
        self.sock = sock
        self.fd = sock.fileno()
        self.loop = loop
        self.v6 = sock.family == socket.AF_INET6
        self.inline = type(server.zone).resolve is Zone.resolve
        n = m.BATCH
        # Anonymous mappings: pages are only backed once a datagram touches them.
        self.rbuf = mmap.mmap(-1, n * m.RSLOT)
        self.sbuf = mmap.mmap(-1, n * m.SSLOT)
        self.names = mmap.mmap(-1, n * m.NAME)
        self._keep: list[Any] = []  # ctypes views pinning the mappings' addresses
        rbase, sbase, nbase = (self._address(b) for b in (self.rbuf, self.sbuf, self.names))
        self.riov = (m.Iovec * n)()
        self.siov = (m.Iovec * n)()
        self.rhdr = (m.Mmsghdr * n)()
        self.shdr = (m.Mmsghdr * n)()
        for i in range(n):
            self.riov[i].base, self.riov[i].len = rbase + i * m.RSLOT, m.RSLOT
            self.siov[i].base = sbase + i * m.SSLOT
            h = self.rhdr[i].hdr
            h.name, h.namelen = nbase + i * m.NAME, m.NAME
            h.iov, h.iovlen = ctypes.addressof(self.riov[i]), 1
            h = self.shdr[i].hdr
            h.iov, h.iovlen = ctypes.addressof(self.siov[i]), 1
        self.rhdr_addr = ctypes.addressof(self.rhdr)
        self.shdr_addr = ctypes.addressof(self.shdr)
        self.nbase = nbase
        # The kernel sets each msg_namelen to the sender's address size, which is the
        # same for every datagram of this socket: it never needs resetting.
        self.ru = memoryview(self.rhdr).cast("B").cast("I")
        self.sq = memoryview(self.shdr).cast("B").cast("Q")
        self.su = memoryview(self.shdr).cast("B").cast("I")
        self.siq = memoryview(self.siov).cast("B").cast("Q")
        self.clients: dict[bytes, tuple[Any, ...]] = {}  # raw sockaddr -> decoded
        self.counter = 0  # datagrams seen, for sampling the duration histogram
        self.closed = False
        loop.add_reader(self.fd, self._readable)

    def _address(self, buf: mmap.mmap) -> int:
        view = ctypes.c_char.from_buffer(buf)
        self._keep.append(view)
        return ctypes.addressof(view)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.fd)
        self.sock.close()
        # The ctypes views pin the mappings (exported buffers): let them go with us.

    def is_closing(self) -> bool:
        return self.closed

    def client(self, i: int) -> tuple[Any, ...]:
        """The sender of datagram ``i`` as socket.recvfrom gives it (decoded once per
        distinct address: clients send many queries)."""
        m = _mmsg
        assert m is not None
        off = i * m.NAME
        raw = self.names[off : off + (28 if self.v6 else 8)]
        addr = self.clients.get(raw)
        if addr is not None:
            return addr
        port = (raw[2] << 8) | raw[3]
        if self.v6:
            (flow,) = struct.unpack_from("=I", raw, 4)
            (scope,) = struct.unpack_from("=I", raw, 24)
            addr = (socket.inet_ntop(socket.AF_INET6, raw[8:24]), port, flow, scope)
        else:
            addr = (socket.inet_ntop(socket.AF_INET, raw[4:8]), port)
        if len(self.clients) >= _MAX_CLIENTS:
            self.clients.clear()
        self.clients[raw] = addr
        return addr

    def sendto(self, reply: bytes, addr: tuple[Any, ...]) -> None:
        if self.closed:
            return
        try:
            self.sock.sendto(reply, addr)
        except OSError as e:  # a full buffer or a vanished client costs this one reply
            log.debug("udp send to %s failed: %r", addr, e)

    def _reply_to(self, addr: tuple[Any, ...], reply: bytes) -> None:
        self.sendto(reply, addr)

    def _readable(self) -> None:
        m = _mmsg
        assert m is not None
        for _ in range(m.ROUNDS):
            if self.closed:
                return
            n = m.recvmmsg(self.fd, self.rhdr_addr, m.BATCH, socket.MSG_DONTWAIT, None)
            if n <= 0:
                if n < 0:
                    err = ctypes.get_errno()
                    if err not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                        log.debug("recvmmsg: %s", os.strerror(err))
                return
            self._answer(n)
            if n < m.BATCH:
                return

    def _answer(self, n: int) -> None:
        m = _mmsg
        assert m is not None
        zone = self.zone
        stats = zone.stats
        cached = stats.cached
        durations = stats.durations
        every = durations.every
        replies = zone.replies if self.inline else None
        resolve = zone.resolve
        rbuf, sbuf, ru = self.rbuf, self.sbuf, self.ru
        rslot, sslot, ustride, ulen = m.RSLOT, m.SSLOT, m.u_stride, m.u_len
        clock = time.perf_counter_ns
        count = self.counter
        j = 0
        pending: list[int] = []  # datagram index of each queued reply
        for i in range(n):
            count += 1
            timed = count % every == 0
            if timed:
                start = clock()
            off = i * rslot
            data = rbuf[off : off + ru[i * ustride + ulen]]
            hit = replies.get(data[2:]) if replies is not None else None
            if hit is not None:
                cached[hit[1]] = cached.get(hit[1], 0) + 1
                reply = data[:2] + hit[0]
            else:
                result = resolve(data, "udp", self.client(i))
                if type(result) is bytes:
                    reply = result
                else:
                    if isinstance(result, ForwardRequest):
                        self.server.relay(result, functools.partial(self._reply_to, self.client(i)))
                    continue
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
        m = _mmsg
        assert m is not None
        sq, su, ru = self.sq, self.su, self.ru
        for j, i in enumerate(pending):
            sq[j * m.q_stride + m.q_name] = self.nbase + i * m.NAME
            su[j * m.u_stride + m.u_namelen] = ru[i * m.u_stride + m.u_namelen]
        total, done = len(pending), 0
        while done < total:
            hdr = self.shdr_addr + done * m.q_stride * 8
            sent = m.sendmmsg(self.fd, hdr, total - done, socket.MSG_DONTWAIT)
            if sent > 0:
                done += sent
                continue
            # The reply at ``done`` failed (full buffer, vanished route): drop just it.
            log.debug("sendmmsg: %s", os.strerror(ctypes.get_errno()))
            done += 1
