"""The whole-reply cache: a repeated UDP query is answered with one dict lookup and a join.

Two levels. ``exact`` is keyed by the query after its ID, as sent: a repeated query is
one lookup and one concatenation (~0.2 us). ``folded`` is keyed by the same octets with
ASCII letters lower-cased, so a resolver that randomises the case of every query (0x20)
still hits: the reply is the query's own ID and question (its case, which every
compression pointer of the answer refers to) around the cached flags, counts and body.
Lower-casing also folds the non-name octets, so a folded entry remembers them verbatim
and a hit must match them exactly: two queries differing anywhere but in the case of
the name never share a reply.

Folded entries are made only for queries with an upper-case letter (a lower-case
query's exact entry is its folded one), so traffic without 0x20 costs no memory there.

Each entry holds the ``Dep`` its answer came from and is replayed only while that is
live: a change of the view kills the answers it touches (and, through the SOA serial,
every negative answer), leaving every other reply in place.
"""

from __future__ import annotations

from idstore.dns.answers import Dep

# exact: query after the ID -> (reply after the ID, stats code, Dep)
Exact = tuple[bytes, int, Dep]
# folded: query after the ID, lower-cased ->
#   (header octets 2..12 verbatim, end of the name, query from the end of the name on
#    verbatim, reply header after the ID, reply after the question, stats code, Dep)
Folded = tuple[bytes, int, bytes, bytes, bytes, int, Dep]

MAX_REPLIES = 20_000  # per level; a flood of distinct queries (random names) clears it


class Replies:
    __slots__ = ("exact", "folded")

    def __init__(self) -> None:
        self.exact: dict[bytes, Exact] = {}
        self.folded: dict[bytes, Folded] = {}

    def __len__(self) -> int:
        return max(len(self.exact), len(self.folded))


def replay(replies: Replies, data: bytes) -> tuple[bytes, int] | None:
    """The cached reply to ``data`` (with its ID and question) and its stats code."""
    hit = replies.exact.get(data[2:])
    if hit is not None and hit[2].live:
        return data[:2] + hit[0], hit[1]
    e = replies.folded.get(data[2:].lower())
    if e is None:
        return None
    head, qend, tail, hdr, body, code, dep = e
    if not dep.live or data[2:12] != head or data[qend:] != tail:
        return None
    return b"".join((data[:2], hdr, data[12 : qend + 4], body)), code


def remember(replies: Replies, data: bytes, qend: int, reply: bytes, code: int, dep: Dep
             ) -> None:  # fmt: skip
    """Remember ``reply`` to ``data``; ``qend`` is where the question's name ends (the
    reply's question is the query's, so its body starts 4 octets later)."""
    exact, folded = replies.exact, replies.folded
    if len(exact) >= MAX_REPLIES:
        exact.clear()
    exact[data[2:]] = (reply[2:], code, dep)
    key = data[2:].lower()
    if key == data[2:] and key not in folded:
        return  # an all-lower-case query: ``exact`` serves it until another case shows up
    if len(folded) >= MAX_REPLIES:
        folded.clear()
    folded[key] = (data[2:12], qend, data[qend:], reply[2:12], reply[qend + 4 :], code, dep)
