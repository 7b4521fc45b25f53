"""Prepared answers: what follows the question in a reply, ready to be joined to it.

An answer is a few packed chunks (see idstore.dns.records) and a record count per
section; ``Prepared`` holds its bodies from largest to smallest (with the additional
section, without it, or a TC=1 cut) so the hot path picks the first that fits the room a
query leaves, in one loop over at most two tuples.

``live`` is the whole-reply cache's way to learn that an answer is out of date: a reply
remembers the Prepared it was built from and is only replayed while that stays live
(see idstore.dns.replies). Invalidating an answer is therefore one attribute store, and
a change of one name leaves the replies of every other name in place.
"""

from __future__ import annotations

from collections.abc import Sequence

from idstore.dns.wire import FORMERR, NOERROR, REFUSED, SERVFAIL, TC

TCP_MAX = 65535
# Room kept free in a TCP answer for header, the longest question and an OPT with NSID
# and an Extended DNS Error.
BODY_CAP = TCP_MAX - 12 - 259 - 11 - 4 - 255 - 6

Variant = tuple[int, int, int, int, int, bytes]  # body length, TC, an, ns, ar, body
Chunk = tuple[bytes, int]  # packed records, how many


class Dep:
    """Something a cached reply depends on; ``live`` turns False once when it changes."""

    __slots__ = ("live",)

    def __init__(self) -> None:
        self.live = True


class Prepared(Dep):
    """An answer minus header and question: flags/rcode plus bodies of decreasing size.

    The first variant whose body fits the room left by the query wins; when none fits the
    reply is TC=1 with just the question.
    """

    __slots__ = ("flags", "variants")

    def __init__(self, flags: int, variants: tuple[Variant, ...] = ()) -> None:
        super().__init__()
        self.flags = flags  # AA and the rcode
        self.variants = variants


EMPTY: tuple[Variant, ...] = ((0, 0, 0, 0, 0, b""),)
TRUNCATED: Variant = (0, TC, 0, 0, 0, b"")  # nothing fits: TC=1 with just the question
REFUSED_ANSWER = Prepared(REFUSED, EMPTY)
SERVFAIL_ANSWER = Prepared(SERVFAIL, EMPTY)
FORMERR_ANSWER = Prepared(FORMERR, EMPTY)


def negative(flags: int, soa_chunk: bytes) -> Prepared:
    """NXDOMAIN or NODATA: the zone's SOA in the authority section."""
    return Prepared(flags, ((len(soa_chunk), 0, 0, 1, 0, soa_chunk),))


def positive(flags: int, answers: Sequence[Chunk], additional: Sequence[Chunk] = ()
             ) -> Prepared:  # fmt: skip
    """Answer chunks in order, then as many additional chunks as fit ``BODY_CAP``.

    More answers than TCP can carry (a pool of thousands in one SRV answer): as many as
    fit, flagged TC so the client knows the set is partial, and no additional records."""
    parts: list[bytes] = []
    size = count = 0
    for chunk, n in answers:
        if size + len(chunk) > BODY_CAP:
            body = b"".join(parts)
            return Prepared(flags | NOERROR, ((size, TC, count, 0, 0, body),))
        parts.append(chunk)
        size += len(chunk)
        count += n
    answer_len = size
    added = 0
    for chunk, n in additional:
        if size + len(chunk) > BODY_CAP:
            break
        parts.append(chunk)
        size += len(chunk)
        added += n
    body = b"".join(parts)
    variants: list[Variant] = [(size, 0, count, 0, added, body)]
    if added:
        variants.append((answer_len, 0, count, 0, 0, body[:answer_len]))
    return Prepared(flags | NOERROR, tuple(variants))
