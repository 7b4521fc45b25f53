"""Authoritative DNS for every claimed name: ``Zone`` holds the answers, ``DnsServer``
serves them over UDP and TCP.

Modules, one concern each: ``wire`` (the strict bounded query guard every client packet
passes first), ``records`` (every record built with dnslib's RR classes and packed by
dnslib), ``index`` (names of the view), ``content`` (which records each name has, and
what a change invalidates), ``dnssd`` (RFC 6763 browsing), ``answers`` (prepared
answer bodies), ``replies`` (the whole-reply cache), ``zone`` (the request path),
``server`` / ``udp_batch`` (transports), ``forward``, ``ratelimit``, ``stats``."""

from idstore.dns.server import DnsServer
from idstore.dns.zone import Zone

__all__ = ["DnsServer", "Zone"]
