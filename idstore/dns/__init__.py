"""Authoritative DNS for every claimed name: ``Zone`` holds the answers, ``DnsServer``
serves them over UDP and TCP."""

from idstore.dns.server import DnsServer
from idstore.dns.zone import Zone

__all__ = ["DnsServer", "Zone"]
