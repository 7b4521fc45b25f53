"""etcd's API as idstore builds it: loaded on first use, and typed to match etcd3's
descriptors (no etcd server needed)."""

from __future__ import annotations

import subprocess
import sys
from typing import get_type_hints

import pytest

from idstore.backends.etcd import messages, requests
from idstore.backends.etcd.api import load

# Protobuf field types (FieldDescriptor.TYPE_*) and the Python types idstore reads them as.
_INTS = {3, 4, 5, 13, 14}  # int64, uint64, int32, uint32, enum
_PY = {8: bool, 9: str, 12: bytes}


def test_importing_the_backend_does_not_load_etcds_api() -> None:
    """Importing idstore.backends.etcd (and finding the backend) reads no descriptor;
    creating a store does. A fresh interpreter, so nothing else loaded it before."""
    code = (
        "from idstore.backends import backend_class\n"
        "from idstore.backends.base import StoreOptions\n"
        "import idstore.backends.etcd as etcd\n"
        "from idstore.backends.etcd import api\n"
        "cls = backend_class('etcd')\n"
        "print(api.load.cache_info().currsize)\n"
        "cls(StoreOptions(endpoints=('http://127.0.0.1:1',)))\n"
        "print(api.load.cache_info().currsize)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["0", "1"]


@pytest.mark.parametrize("protocol", list(messages.MESSAGES), ids=lambda p: p.__name__)
def test_every_field_idstore_reads_is_in_etcds_message(protocol: type) -> None:
    descriptor = load().descriptor(messages.MESSAGES[protocol])
    hints = {
        name: get_type_hints(member.fget).get("return")
        for name, member in vars(protocol).items()
        if isinstance(member, property)
    }
    assert hints, f"{protocol.__name__} names no field"
    for name, hint in hints.items():
        field = descriptor.fields_by_name.get(name)
        assert field is not None, f"{descriptor.full_name} has no field {name!r}"
        # protobuf >= 6 has is_repeated; 7 dropped label, which 5 alone has
        repeated = getattr(field, "is_repeated", None)
        if repeated is None:
            repeated = field.label == field.LABEL_REPEATED
        if field.type == field.TYPE_MESSAGE:
            inner = hint.__args__[0] if repeated else hint
            assert messages.MESSAGES[inner] == field.message_type.full_name, name
        elif field.type in _INTS:
            assert hint is int, name
        else:
            assert hint is _PY[field.type], name
        assert repeated == (getattr(hint, "__origin__", None) is not None), name


def test_every_request_builds_and_round_trips() -> None:
    built = [
        requests.range_request(
            b"/a/", b"/a0", limit=1, keys_only=True, min_mod_revision=3, max_create_revision=4
        ),
        requests.range_op(requests.range_request(b"/a/", b"/a0", count_only=True)),
        requests.put_op(b"/a/1", b"v", 7, prev_kv=True),
        requests.delete_op(b"/a/1"),
        requests.txn(
            compare=[requests.created_at(b"/a/1", 0), requests.modified_at(b"/a/1", 9)],
            success=[requests.delete_op(b"/a/1")],
            failure=[requests.range_op(requests.range_request(b"/a/1"))],
        ),
        requests.lease_grant(10),
        requests.lease_revoke(7),
        requests.lease_keepalive(7),
        requests.authenticate("root", "pw"),
        requests.watch_create(b"/a/", b"/a0", 5),
    ]
    for message in built:
        cls = type(message)
        assert cls.FromString(message.SerializeToString()) == message  # type: ignore[attr-defined]
    compare = requests.created_at(b"k", 0)
    assert str(compare).split() == ["target:", "CREATE", "key:", '"k"', "create_revision:", "0"]
