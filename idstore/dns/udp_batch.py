"""Batched UDP on Linux: ``recvmmsg``/``sendmmsg`` through ctypes on the bound socket,
driven by ``loop.add_reader``. Per packet that leaves a dict lookup and a copy; the two
system calls per query of a datagram transport cost most of the time of the fast path
(about 1.5x the QPS on this kind of machine).
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
from typing import TYPE_CHECKING, Any

from idstore.dns import replies as reply_cache
from idstore.dns.zone import ForwardRequest, Zone

if TYPE_CHECKING:
    from idstore.dns.server import DnsServer

log = logging.getLogger(__name__)


class Mmsg:
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
        # No ``argtypes``: converting the arguments through them costs about 0.35 us a
        # call (measured, a third of a call that finds nothing). Every call passes C ints
        # as small Python ints and pointers as ctypes arrays or ``byref`` (never as
        # Python ints, which would be cut to a C int), which ctypes passes as they are:
        #   recvmmsg(int fd, struct mmsghdr *, unsigned vlen, int flags, NULL)
        #   sendmmsg(int fd, struct mmsghdr *, unsigned vlen, int flags)
        libc = ctypes.PyDLL(None, use_errno=True)
        self.recvmmsg = libc.recvmmsg
        self.recvmmsg.restype = ctypes.c_int
        self.sendmmsg = libc.sendmmsg
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


def _loadmmsg() -> Mmsg | None:
    if sys.platform != "linux" or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    try:
        return Mmsg()
    except (OSError, AttributeError) as e:
        log.debug("recvmmsg/sendmmsg unavailable (%s): UDP through the loop's transport", e)
        return None


mmsg = _loadmmsg()
_MAX_CLIENTS = 4096  # decoded client addresses remembered per socket


class BatchUdp:
    """One UDP socket answered in batches: recvmmsg up to BATCH datagrams, answer each,
    sendmmsg every reply at once. Runs on the event loop (``add_reader``), never blocks.

    Replies from the zone's whole-reply cache are built inline (``Zone.resolve`` does the
    same lookup); everything else goes through ``Zone.resolve`` with the client address
    decoded, exactly like the datagram-transport path. A zone whose ``resolve`` is
    overridden gets every query through it.
    """

    def __init__(self, server: DnsServer, sock: socket.socket,
                 loop: asyncio.AbstractEventLoop) -> None:  # fmt: skip
        m = mmsg
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
        # A reply goes out as two pieces: its ID, read in place from the query's slot of
        # ``rbuf``, and the rest from the same slot of ``sbuf`` (the reply cache holds
        # replies after the ID: no ID is sliced or joined per query). Datagram i's reply
        # uses send header i, so in a batch where every datagram gets its reply from
        # ``sbuf`` the send headers need no change (see _send).
        self.riov = (m.Iovec * n)()
        self.siov = (m.Iovec * (2 * n))()
        self.rhdr = (m.Mmsghdr * n)()
        self.shdr = (m.Mmsghdr * n)()
        for i in range(n):
            self.riov[i].base, self.riov[i].len = rbase + i * m.RSLOT, m.RSLOT
            self.siov[2 * i].base, self.siov[2 * i].len = rbase + i * m.RSLOT, 2
            self.siov[2 * i + 1].base = sbase + i * m.SSLOT
            h = self.rhdr[i].hdr
            h.name, h.namelen = nbase + i * m.NAME, m.NAME
            h.iov, h.iovlen = ctypes.addressof(self.riov[i]), 1
            h = self.shdr[i].hdr
            h.name, h.namelen = nbase + i * m.NAME, 0
            h.iov, h.iovlen = ctypes.addressof(self.siov[2 * i]), 2
        self.rbase, self.sbase, self.nbase = rbase, sbase, nbase
        # The kernel sets each msg_namelen to the sender's address size, which is the
        # same for every datagram of this socket: it never needs resetting, and the send
        # headers take it over once (``namelen``).
        self.namelen = 0
        self.ru = memoryview(self.rhdr).cast("B").cast("I")
        self.sq = memoryview(self.shdr).cast("B").cast("Q")
        self.su = memoryview(self.shdr).cast("B").cast("I")
        self.siq = memoryview(self.siov).cast("B").cast("Q")
        # Per datagram index: (index, offset in rbuf, offset in sbuf, index in ``siq``
        # of the length of its reply's second piece): no arithmetic per query.
        self.slots = [(i, i * m.RSLOT, i * m.SSLOT, 4 * i + 3) for i in range(n)]
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
        m = mmsg
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
        m = mmsg
        assert m is not None
        recvmmsg, fd, hdr, batch = m.recvmmsg, self.fd, self.rhdr, m.BATCH
        for _ in range(m.ROUNDS):
            if self.closed:
                return
            n = recvmmsg(fd, hdr, batch, socket.MSG_DONTWAIT, None)
            if n <= 0:
                if n < 0:
                    err = ctypes.get_errno()
                    if err not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                        log.debug("recvmmsg: %s", os.strerror(err))
                return
            self._answer(n)
            if n < batch:
                return

    def _answer(self, n: int) -> None:
        m = mmsg
        assert m is not None
        zone = self.zone
        stats = zone.stats
        durations = stats.durations
        every = durations.every
        # The reply cache's replay (idstore.dns.replies.replay), inlined: it is most of
        # the work per query. An empty cache stands in when the zone's resolve is
        # overridden, so every query goes through it.
        replies = zone.replies if self.inline else reply_cache.Replies()
        exact, folded = replies.exact.get, replies.folded.get
        resolve = zone.resolve
        rbuf, sbuf, siq = self.rbuf, self.sbuf, self.siq
        room = m.SSLOT - 2  # a reply longer than SSLOT goes out through sendto
        ulen = m.u_len
        lengths = self.ru[ulen : ulen + n * m.u_stride : m.u_stride]
        clock = time.perf_counter_ns
        # The histogram times the answers whose number (counting every datagram this
        # socket has seen, from 1) is a multiple of ``every``, as a check per query
        # would; ``due`` is the index in this batch of the next one.
        count = self.counter
        self.counter = count + n
        due = every - 1 - count % every
        start = 0
        codes: list[int] = []  # stats codes of the cached replies, counted per batch
        hit_code = codes.append
        skipped: list[int] = []  # datagrams whose reply is not in ``sbuf`` (or none)
        body: bytes | None
        for (i, off, so, li), size in zip(self.slots, lengths, strict=False):
            if i == due:
                start = clock()
                due += every
            end = off + size
            key = rbuf[off + 2 : end]
            hit = exact(key)
            if hit is not None and hit[2].live:
                hit_code(hit[1])
                body = hit[0]
            elif (
                (e := folded(key.lower())) is not None
                and e[6].live
                and key.startswith(e[0])
                and key.endswith(e[2])
                and len(key) == e[1] - 2 + len(e[2])
            ):
                # key[10 : qend - 2 + 4] is the query's question, in its own case.
                hit_code(e[5])
                body = b"".join((e[3], key[10 : e[1] + 2], e[4]))
            else:
                body = self._resolve(resolve, i, rbuf[off:end])
                if body is None:
                    skipped.append(i)
                    start = 0
                    continue
            size = len(body)
            if size > room:
                self.sendto(rbuf[off : off + 2] + body, self.client(i))
                skipped.append(i)
            else:
                sbuf[so : so + size] = body
                siq[li] = size
            if start:
                durations.observe_ns(clock() - start)
                start = 0
        if codes:
            cached = stats.cached
            for code in set(codes):
                cached[code] = cached.get(code, 0) + codes.count(code)
        if len(skipped) < n:
            self._send(n, skipped)

    def _resolve(self, resolve: Any, i: int, data: bytes) -> bytes | None:
        """The reply to datagram ``i`` (``data``) after its ID, from ``Zone.resolve``, or
        None (dropped or forwarded). Its ID goes into the query's slot of ``rbuf``, where
        the reply's first piece is sent from."""
        result = resolve(data, "udp", self.client(i))
        if type(result) is bytes:
            if len(result) < 2:  # not a DNS message, but what resolve said to send
                self.sendto(result, self.client(i))
                return None
            m = mmsg
            assert m is not None
            off = i * m.RSLOT
            self.rbuf[off : off + 2] = result[:2]
            return result[2:]
        if isinstance(result, ForwardRequest):
            self.server.relay(result, functools.partial(self._reply_to, self.client(i)))
        return None

    def _send(self, n: int, skipped: list[int]) -> None:
        """Send the replies of datagrams 0..n-1 but ``skipped``: in place when there are
        none to skip (the common case), else through send headers packed for the batch
        and put back afterwards."""
        m = mmsg
        assert m is not None
        sq, su = self.sq, self.su
        qs, us = m.q_stride, m.u_stride
        namelen = self.ru[m.u_namelen]
        if namelen != self.namelen:
            self.namelen = namelen
            for j in range(m.BATCH):
                su[j * us + m.u_namelen] = namelen
        if not skipped:
            self._sendmmsg(n)
            return
        kept = [i for i in range(n) if i not in skipped]
        siq = self.siq
        moved = [(j, i) for j, i in enumerate(kept) if i != j]
        for j, i in moved:
            sq[j * qs + m.q_name] = self.nbase + i * m.NAME
            siq[4 * j] = self.rbase + i * m.RSLOT
            siq[4 * j + 2] = self.sbase + i * m.SSLOT
            siq[4 * j + 3] = siq[4 * i + 3]
        try:
            self._sendmmsg(len(kept))
        finally:
            for j, _ in moved:
                sq[j * qs + m.q_name] = self.nbase + j * m.NAME
                siq[4 * j] = self.rbase + j * m.RSLOT
                siq[4 * j + 2] = self.sbase + j * m.SSLOT

    def _sendmmsg(self, total: int) -> None:
        m = mmsg
        assert m is not None
        done = 0
        while done < total:
            hdr = ctypes.byref(self.shdr, done * m.q_stride * 8) if done else self.shdr
            sent = m.sendmmsg(self.fd, hdr, total - done, socket.MSG_DONTWAIT)
            if sent > 0:
                done += sent
                continue
            # The reply at ``done`` failed (full buffer, vanished route): drop just it.
            log.debug("sendmmsg: %s", os.strerror(ctypes.get_errno()))
            done += 1
