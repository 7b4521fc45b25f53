"""The etcd requests idstore sends, built by typed functions.

Every field is a keyword with its etcd type, so mypy checks what idstore writes as
messages.py does for what it reads; a default equals protobuf's own default, which
etcd reads as "not set". tests/unit/test_etcd_api.py builds each one.
"""

from __future__ import annotations

from collections.abc import Sequence

from idstore.backends.etcd.api import load
from idstore.backends.etcd.messages import Message


def _new(message: str, /, **fields: object) -> Message:
    return load().message(f"etcdserverpb.{message}")(**fields)


def range_request(
    key: bytes,
    range_end: bytes = b"",
    *,
    limit: int = 0,
    keys_only: bool = False,
    count_only: bool = False,
    min_mod_revision: int = 0,
    max_create_revision: int = 0,
) -> Message:
    return _new(
        "RangeRequest",
        key=key,
        range_end=range_end,
        limit=limit,
        keys_only=keys_only,
        count_only=count_only,
        min_mod_revision=min_mod_revision,
        max_create_revision=max_create_revision,
    )


def range_op(request: Message) -> Message:
    """A range_request as one operation of a transaction."""
    return _new("RequestOp", request_range=request)


def put_op(key: bytes, value: bytes, lease: int, *, prev_kv: bool = False) -> Message:
    put = _new("PutRequest", key=key, value=value, lease=lease, prev_kv=prev_kv)
    return _new("RequestOp", request_put=put)


def delete_op(key: bytes) -> Message:
    return _new("RequestOp", request_delete_range=_new("DeleteRangeRequest", key=key))


def created_at(key: bytes, revision: int, range_end: bytes = b"") -> Message:
    """Compare: ``key`` (every key of the range) was created at ``revision``; 0 = absent."""
    return _new(
        "Compare",
        key=key,
        range_end=range_end,
        target="CREATE",
        result="EQUAL",
        create_revision=revision,
    )


def modified_at(key: bytes, revision: int) -> Message:
    """Compare: ``key`` was last written at ``revision`` (a claim's version)."""
    return _new("Compare", key=key, target="MOD", result="EQUAL", mod_revision=revision)


def txn(
    compare: Sequence[Message] = (),
    success: Sequence[Message] = (),
    failure: Sequence[Message] = (),
) -> Message:
    return _new("TxnRequest", compare=list(compare), success=list(success), failure=list(failure))


def lease_grant(ttl: int) -> Message:
    return _new("LeaseGrantRequest", TTL=ttl)


def lease_revoke(lease: int) -> Message:
    return _new("LeaseRevokeRequest", ID=lease)


def lease_keepalive(lease: int) -> Message:
    return _new("LeaseKeepAliveRequest", ID=lease)


def authenticate(name: str, password: str) -> Message:
    return _new("AuthenticateRequest", name=name, password=password)


def watch_create(key: bytes, range_end: bytes, start_revision: int) -> Message:
    """Watch every key in [key, range_end) from ``start_revision``, with progress
    notifications (so a quiet stream still tells how far it has delivered)."""
    create = _new(
        "WatchCreateRequest",
        key=key,
        range_end=range_end,
        start_revision=start_revision,
        progress_notify=True,
    )
    return _new("WatchRequest", create_request=create)
