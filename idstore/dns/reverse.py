"""Reverse zones derived from the claims (the default when ``dns.reverse_zones`` is not
set): every published address gets its PTR record with no configuration.

The derived zone of an address is its /24 (IPv4: ``c.b.a.in-addr.arpa.``) or its /64
(IPv6: 16 nibble labels under ``ip6.arpa.``), the usual unit of reverse delegation. A
zone exists while a claim has an address in it, so idstore answers for the cluster's
own subnets only; other reverse names stay out of zone (forwarded or REFUSED, as any
name outside the zone). Frameworks look their peers up in reverse (torch does, and
warns when the answer is REFUSED), hence the default.
"""

from __future__ import annotations

import functools
import ipaddress

from idstore.dns.wire import label_offsets, name_to_wire

_V4 = b"\x07in-addr\x04arpa\x00"
_V6 = b"\x03ip6\x04arpa\x00"
# Labels of a derived zone, the root excluded: c.b.a + in-addr.arpa; 16 nibbles + ip6.arpa
_V4_LABELS = 5
_V6_LABELS = 18


def reverse_name(address: str) -> bytes | None:
    """The PTR owner of ``address`` in wire form; None for what is not an address."""
    try:
        return pointer(address.split("%", 1)[0])
    except ValueError:
        return None


# Cached: parsing the address is most of what indexing a member costs, and a churning
# pool claims the same addresses again and again (a node that restarts keeps its own).
@functools.lru_cache(maxsize=4096)
def pointer(address: str) -> bytes:
    """The PTR owner of the literal ``address`` in wire form; ValueError otherwise."""
    return name_to_wire(ipaddress.ip_address(address).reverse_pointer)


def zone_of(qname: bytes) -> bytes | None:
    """The derived zone ``qname`` (lower-case wire form) would lie in, if any: the suffix
    with the zone's number of labels."""
    if qname.endswith(_V4):
        want = _V4_LABELS
    elif qname.endswith(_V6):
        want = _V6_LABELS
    else:
        return None
    offsets = label_offsets(qname)  # every suffix, the root last
    labels = len(offsets) - 1
    if labels < want:
        return None
    return qname[offsets[labels - want] :]
