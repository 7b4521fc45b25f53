"""The etcd messages idstore reads, and the gRPC services it calls, as types mypy checks.

etcd's message classes are built at run time from descriptors (see api.py), so to mypy
they would be ``Any``: a misspelled field would only fail in production. These
Protocols name exactly the fields idstore reads, with their types; the services'
Protocols give each call its response type. tests/unit/test_etcd_api.py checks every
field named here against the descriptors etcd3 ships, so they cannot drift apart.
Requests are built by the typed functions of requests.py.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, TypeVar

Metadata = tuple[tuple[str, str], ...] | None

R = TypeVar("R", covariant=True)


class Message(Protocol):
    """Any request message (opaque: built by requests.py)."""

    def SerializeToString(self) -> bytes: ...


class ResponseHeader(Protocol):
    @property
    def revision(self) -> int: ...


class KeyValue(Protocol):
    @property
    def key(self) -> bytes: ...
    @property
    def value(self) -> bytes: ...
    @property
    def create_revision(self) -> int: ...
    @property
    def mod_revision(self) -> int: ...
    @property
    def lease(self) -> int: ...


class RangeResponse(Protocol):
    @property
    def header(self) -> ResponseHeader: ...
    @property
    def kvs(self) -> Sequence[KeyValue]: ...
    @property
    def count(self) -> int: ...


class PutResponse(Protocol):
    @property
    def prev_kv(self) -> KeyValue: ...
    def HasField(self, name: str) -> bool: ...


class ResponseOp(Protocol):
    @property
    def response_range(self) -> RangeResponse: ...
    @property
    def response_put(self) -> PutResponse: ...


class TxnResponse(Protocol):
    @property
    def header(self) -> ResponseHeader: ...
    @property
    def succeeded(self) -> bool: ...
    @property
    def responses(self) -> Sequence[ResponseOp]: ...


class LeaseGrantResponse(Protocol):
    @property
    def ID(self) -> int: ...
    @property
    def TTL(self) -> int: ...
    @property
    def error(self) -> str: ...


class LeaseKeepAliveResponse(Protocol):
    @property
    def TTL(self) -> int: ...


class AuthenticateResponse(Protocol):
    @property
    def token(self) -> str: ...


class Event(Protocol):
    @property
    def type(self) -> int: ...
    @property
    def kv(self) -> KeyValue: ...


class WatchResponse(Protocol):
    @property
    def header(self) -> ResponseHeader: ...
    @property
    def created(self) -> bool: ...
    @property
    def canceled(self) -> bool: ...
    @property
    def cancel_reason(self) -> str: ...
    @property
    def compact_revision(self) -> int: ...
    @property
    def events(self) -> Sequence[Event]: ...


#: Each Protocol above and the etcd message it stands for (checked by the unit tests).
MESSAGES: dict[type, str] = {
    ResponseHeader: "etcdserverpb.ResponseHeader",
    KeyValue: "mvccpb.KeyValue",
    RangeResponse: "etcdserverpb.RangeResponse",
    PutResponse: "etcdserverpb.PutResponse",
    ResponseOp: "etcdserverpb.ResponseOp",
    TxnResponse: "etcdserverpb.TxnResponse",
    LeaseGrantResponse: "etcdserverpb.LeaseGrantResponse",
    LeaseKeepAliveResponse: "etcdserverpb.LeaseKeepAliveResponse",
    AuthenticateResponse: "etcdserverpb.AuthenticateResponse",
    Event: "mvccpb.Event",
    WatchResponse: "etcdserverpb.WatchResponse",
}


# -- services ----------------------------------------------------------------------------


class Stream(Protocol[R]):
    """A server-streaming call: its responses, and a way to end it."""

    def __iter__(self) -> Iterator[R]: ...
    def cancel(self) -> bool: ...


class KV(Protocol):
    def Range(self, request: Message, *, timeout: float, metadata: Metadata) -> RangeResponse: ...
    def Txn(self, request: Message, *, timeout: float, metadata: Metadata) -> TxnResponse: ...


class Lease(Protocol):
    def LeaseGrant(
        self, request: Message, *, timeout: float, metadata: Metadata
    ) -> LeaseGrantResponse: ...
    def LeaseRevoke(self, request: Message, *, timeout: float, metadata: Metadata) -> object: ...
    def LeaseKeepAlive(
        self, requests: Iterator[Message], *, timeout: float, metadata: Metadata
    ) -> Stream[LeaseKeepAliveResponse]: ...


class Watch(Protocol):
    def Watch(
        self, requests: Iterator[Message], *, metadata: Metadata
    ) -> Stream[WatchResponse]: ...


class Auth(Protocol):
    def Authenticate(self, request: Message, *, timeout: float) -> AuthenticateResponse: ...
