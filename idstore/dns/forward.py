"""Relaying out-of-zone queries to upstream resolvers (``dns.forward``), so idstore can be
a node's only resolver. Off unless configured: without it idstore never recurses (an
open resolver is an amplification tool).

Each relayed query goes out with a fresh random ID from a fresh socket (a random source
port), so an off-path attacker cannot easily spoof the upstream's reply; the reply is
sent back with the client's own ID. UDP first; on TC=1 the query is retried over TCP.
Replies are not cached.

An upstream reply is checked before it is relayed: only a response whose question is
the client's (name ignoring case, type, class) counts, so a confused or spoofed reply is
dropped instead of handed on. The question must first equal the client's question octet
for octet but for case (no compression: a question has nothing earlier to point at);
only then does dnslib parse the header and question, so a hostile reply cannot make
dnslib's recursive name decoder spin (see idstore.dns.wire). The records are relayed
verbatim: the client parses them, idstore has no use for them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import struct
from collections.abc import Iterable

from dnslib import DNSBuffer, DNSHeader, DNSQuestion

from idstore.config import parse_hostport
from idstore.dns import records, wire

log = logging.getLogger(__name__)

RESOLV_CONF = "/etc/resolv.conf"


class _OneReply(asyncio.DatagramProtocol):
    def __init__(self, want_id: bytes) -> None:
        self.want_id = want_id
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[object, ...]) -> None:
        # Only a response (QR=1) carrying our ID counts; anything else is noise or spoofing.
        ours = len(data) >= 12 and data[:2] == self.want_id and data[2] & 0x80
        if ours and not self.reply.done():
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc)


class Forwarder:
    def __init__(self, upstreams: Iterable[tuple[str, int]], timeout: float) -> None:
        self.upstreams = list(upstreams)
        self.timeout = timeout

    @classmethod
    def from_settings(
        cls, forward: Iterable[str], timeout: float, listen: Iterable[tuple[str, int]] = ()
    ) -> Forwarder | None:
        """A forwarder for ``dns.forward`` entries (``host[:port]`` or ``resolv.conf``)."""
        upstreams: list[tuple[str, int]] = []
        for entry in forward:
            if entry == "resolv.conf":
                upstreams += system_nameservers(listen)
            else:
                upstreams.append(parse_hostport(entry, "dns.forward", 53))
        if not upstreams:
            if forward:
                log.warning("forwarding configured but no usable upstream found")
            return None
        return cls(upstreams, timeout)

    async def forward(self, query: bytes) -> bytes | None:
        """The upstream's reply carrying ``query``'s ID, or None if none answered."""
        for host, port in self.upstreams:
            try:
                reply = await self._ask(query, host, port)
            except (OSError, TimeoutError, EOFError) as e:
                log.debug("forwarder %s:%d failed: %r", host, port, e)
                continue
            if reply is not None and answers_query(reply, query):
                return query[:2] + reply[2:]
        return None

    async def _ask(self, query: bytes, host: str, port: int) -> bytes | None:
        qid = secrets.token_bytes(2)
        msg = qid + query[2:]
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(
            lambda: _OneReply(qid), remote_addr=(host, port)
        )
        try:
            transport.sendto(msg)
            reply = await asyncio.wait_for(proto.reply, self.timeout)
        finally:
            transport.close()
        if reply[2] & 0x02:  # TC: the full answer needs TCP
            reply = await asyncio.wait_for(self._ask_tcp(msg, host, port), self.timeout)
        return reply if reply[:2] == qid else None

    async def _ask_tcp(self, msg: bytes, host: str, port: int) -> bytes:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(struct.pack(">H", len(msg)) + msg)
            await writer.drain()
            (size,) = struct.unpack(">H", await reader.readexactly(2))
            return await reader.readexactly(size)
        except asyncio.IncompleteReadError as e:
            raise EOFError("upstream closed the TCP connection") from e
        finally:
            writer.close()


def answers_query(reply: bytes, query: bytes) -> bool:
    """Is ``reply`` a response to ``query``'s question? (``query`` passed the guard.)"""
    try:
        q = wire.parse_query(query)
    except wire.BadQuery:
        return False
    if len(reply) < q.end or reply[4:6] != b"\x00\x01":
        return False
    if reply[12 : q.end].lower() != query[12 : q.end].lower():
        return False
    try:
        buf = DNSBuffer(reply)
        header = DNSHeader.parse(buf)
        question = DNSQuestion.parse(buf)
    except Exception as e:  # dnslib raises more than DNSError
        log.debug("unusable upstream reply: %r", e)
        return False
    name = tuple(label.lower() for label in question.qname.label)
    return (bool(header.qr) and header.opcode == 0 and question.qtype == q.qtype
            and question.qclass == q.qclass and name == records.labels(q.qname).label)  # fmt: skip


def system_nameservers(
    listen: Iterable[tuple[str, int]] = (), path: str = RESOLV_CONF
) -> list[tuple[str, int]]:
    """The nameservers of resolv.conf, minus ourselves (forwarding to self would loop)."""
    ours = {(_canonical(h), p) for h, p in listen}
    wildcard53 = any(p == 53 and h in ("0.0.0.0", "::") for h, p in listen)
    out = []
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as e:
        log.warning("cannot read %s: %s", path, e)
        return []
    for line in lines:
        fields = line.split()
        if len(fields) < 2 or fields[0] != "nameserver":
            continue
        host = fields[1].split("%", 1)[0]
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            continue
        if (str(ip), 53) in ours or (wildcard53 and ip.is_loopback):
            log.info("not forwarding to %s: that is this server", host)
            continue
        out.append((str(ip), 53))
    return out


def _canonical(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host
