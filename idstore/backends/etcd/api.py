"""etcd's gRPC API, built on first use from the descriptors the package etcd3 ships.

What this uses, and why. The package etcd3 (pinned to its one release, 0.12.0) carries
etcd's API as protoc-generated modules (``etcd3/etcdrpc/{kv,auth,rpc}_pb2.py``); idstore
uses nothing else of etcd3: its lease refresh has no timeout and its watches stall on
reconnects, so the keepalive loop, watch stream and failover are idstore's own, on
plain gRPC (grpcio).

Those generated modules only import with protobuf's pure-Python implementation, which a
process chooses once, before protobuf is first imported, and which is slow: building a
claim-sized transaction 139 us against 8.6 us with upb; parsing a 1,000-key range
15.7 ms against 0.59 ms. So they are never imported. Each embeds its .proto file's
serialized FileDescriptorProto as the ``serialized_pb`` literal: read with ``ast``
(without running the module), those descriptors go into a private descriptor pool, and
protobuf's public message_factory builds the message classes with whatever
implementation the process has (upb, or pure Python). The gRPC callables are made from
the service descriptors with grpc's public ``Channel.unary_unary`` & co.

Loaded on first use (``load()``), not when the backend is imported: importing idstore
(say, for ``idstore --help`` or another backend) never reads etcd3's files, and a
missing or unreadable etcd3 is a BackendNotFound that says so when the etcd backend
first needs it.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import grpc
from google.protobuf import descriptor_pool, message_factory

from idstore.backends.etcd import messages as m
from idstore.errors import BackendNotFound

# etcd3's generated modules, dependencies first; each embeds its .proto file's descriptor.
PROTO_MODULES = ("kv_pb2.py", "auth_pb2.py", "rpc_pb2.py")


def embedded_descriptor(path: Path) -> bytes:
    """The serialized FileDescriptorProto a generated ``*_pb2.py`` module passes as
    ``serialized_pb`` (etcd3 0.12 wraps the literal in ``_b(...)``), read without running
    the module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "serialized_pb":
            literal = node.value.args[0] if isinstance(node.value, ast.Call) else node.value
            data = ast.literal_eval(literal)
            return data.encode("latin-1") if isinstance(data, str) else bytes(data)
    raise ValueError(f"{path} embeds no serialized_pb")


class _Stub:
    """The gRPC callables of one service's methods, each made on first use (as etcd3's
    generated stubs, without their protobuf classes)."""

    def __init__(self, service: Any, channel: grpc.Channel) -> None:
        self._methods = {method.name: method for method in service.methods}
        self._service = service.full_name
        self._channel = channel

    def __getattr__(self, name: str) -> Any:
        method = self.__dict__.get("_methods", {}).get(name)
        if method is None:
            raise AttributeError(name)
        make = {
            (False, False): self._channel.unary_unary,
            (False, True): self._channel.unary_stream,
            (True, False): self._channel.stream_unary,
            (True, True): self._channel.stream_stream,
        }[(method.client_streaming, method.server_streaming)]
        call = make(
            f"/{self._service}/{name}",
            request_serializer=message_factory.GetMessageClass(method.input_type).SerializeToString,
            response_deserializer=message_factory.GetMessageClass(method.output_type).FromString,
        )
        setattr(self, name, call)
        return call


class Api:
    """etcd's messages and services from one descriptor pool."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._rpc = pool.FindFileByName("rpc.proto")
        event = pool.FindMessageTypeByName("mvccpb.Event")
        #: mvccpb.Event.EventType DELETE, as watch events carry it.
        self.event_delete = int(event.enum_values_by_name["DELETE"].number)

    def message(self, name: str) -> Callable[..., m.Message]:
        """The message class ``name`` (``etcdserverpb.RangeRequest``, ``mvccpb.Event``)."""
        cls: Callable[..., m.Message] = message_factory.GetMessageClass(
            self._pool.FindMessageTypeByName(name)
        )
        return cls

    def descriptor(self, name: str) -> Any:
        """The message descriptor ``name`` (for the tests that check messages.py)."""
        return self._pool.FindMessageTypeByName(name)

    def _stub(self, service: str, channel: grpc.Channel) -> Any:
        return _Stub(self._rpc.services_by_name[service], channel)

    def kv(self, channel: grpc.Channel) -> m.KV:
        return cast(m.KV, self._stub("KV", channel))

    def lease(self, channel: grpc.Channel) -> m.Lease:
        return cast(m.Lease, self._stub("Lease", channel))

    def watch(self, channel: grpc.Channel) -> m.Watch:
        return cast(m.Watch, self._stub("Watch", channel))

    def auth(self, channel: grpc.Channel) -> m.Auth:
        return cast(m.Auth, self._stub("Auth", channel))


def _etcdrpc_folder() -> Path:
    spec = importlib.util.find_spec("etcd3")  # finds the package without importing it
    if spec is None or spec.origin is None:
        raise ImportError("the package etcd3 is not installed")
    return Path(spec.origin).parent / "etcdrpc"


@functools.cache
def load() -> Api:
    """etcd's API, read from etcd3's files once per process, on first call."""
    try:
        folder = _etcdrpc_folder()
        pool = descriptor_pool.DescriptorPool()
        for module in PROTO_MODULES:
            pool.AddSerializedFile(embedded_descriptor(folder / module))
        return Api(pool)
    except Exception as e:  # ImportError, OSError, SyntaxError, ValueError, TypeError
        raise BackendNotFound(
            f"the etcd backend reads etcd's API from the package etcd3 (0.12.0): {e!r}"
        ) from e
