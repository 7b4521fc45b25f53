"""The DNS transport: UDP and TCP listeners on asyncio (uvloop when the runtime installs
its policy), answering through ``Zone.resolve``.

On Linux, UDP is read and answered in batches (idstore.dns.udp_batch). Elsewhere, or
with ``IDSTORE_DNS_BATCH=0``, the loop's datagram transport is used.

UDP never waits on TCP: every socket is non-blocking and a TCP client that stops reading
only pauses reading from that one connection (RFC 7766 pipelining keeps working: every
complete message in the buffer is answered, in order). TCP connections are capped and
closed after ``dns.tcp_idle_timeout`` without a complete query, so slow-drip clients
cannot hold them either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from collections.abc import Callable
from typing import cast

from idstore.config import DnsSettings
from idstore.dns.forward import Forwarder
from idstore.dns.transfer import TransferRequest
from idstore.dns.udp_batch import BatchUdp, mmsg
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
        self.batch_udp = batch_udp and mmsg is not None
        self._udp: list[asyncio.DatagramTransport | BatchUdp] = []
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
                    self._udp.append(BatchUdp(self, udp_sock, loop))
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
        self.resolve_transfer = server.zone.transfer
        self.transferring = False  # a zone transfer is being built: hold further queries
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
        while len(buf) >= 2 and not self.transferring:
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
            elif isinstance(result, TransferRequest):
                self._start_transfer(result)
                return  # the rest of the buffer waits until the transfer is written

    def _start_transfer(self, request: TransferRequest) -> None:
        """Stream a zone transfer; reading pauses meanwhile, so answers stay in order."""
        if self.transport is None:
            return
        self.transferring = True
        self.transport.pause_reading()
        task = asyncio.get_running_loop().create_task(self._transfer(request))
        self.server._tasks.add(task)
        task.add_done_callback(self.server._tasks.discard)

    async def _transfer(self, request: TransferRequest) -> None:
        try:
            for message in await asyncio.to_thread(self.resolve_transfer, request):
                self.send(message)
        except Exception as e:  # a failed transfer costs this connection, never the server
            log.warning("zone transfer failed: %r", e)
            self.abort()
            return
        self.transferring = False
        self.last = asyncio.get_running_loop().time()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
            self.data_received(b"")  # queries that arrived with the transfer request

    def send(self, reply: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(struct.pack(">H", len(reply)) + reply)

    def pause_writing(self) -> None:
        # The client is not reading its answers: stop reading its queries too, rather
        # than buffer without bound.
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing() and not self.transferring:
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
