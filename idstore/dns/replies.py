"""The whole-reply cache: a repeated UDP query is answered with one dict lookup and a join.

Keyed by the query after its ID with ASCII letters lower-cased, so a resolver that
randomises the case of every query (0x20) still hits: the reply is the query's own
header ID and question (its case, which every compression pointer of the answer refers
to) around the cached flags, counts and body. Lower-casing also folds the non-name
octets, so an entry remembers them verbatim and a hit must match them exactly: two
queries differing anywhere but in the case of the name never share a reply.

Each entry holds the ``Dep`` its answer came from and is replayed only while that is
live: a change of the view kills the answers it touches (and, through the SOA serial,
every negative answer), leaving every other reply in place.
"""

from __future__ import annotations

from idstore.dns.answers import Dep

# key: query after the ID, lower-cased ->
#   (header octets 2..12 verbatim, end of the name, query from the end of the name on
#    verbatim, reply header after the ID, reply after the question, stats code, Dep)
Entry = tuple[bytes, int, bytes, bytes, bytes, int, Dep]
Replies = dict[bytes, Entry]

MAX_REPLIES = 20_000  # a flood of distinct queries (random names, cookies) clears it


def replay(replies: Replies, data: bytes) -> tuple[bytes, int] | None:
    """The cached reply to ``data`` (with its ID and question) and its stats code."""
    e = replies.get(data[2:].lower())
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
    if len(replies) >= MAX_REPLIES:
        replies.clear()
    replies[data[2:].lower()] = (data[2:12], qend, data[qend:], reply[2:12], reply[qend + 4 :],
                                 code, dep)  # fmt: skip
