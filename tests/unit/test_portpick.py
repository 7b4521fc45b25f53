"""Per-node ports: the bind check, the search of a range, stickiness, a full range."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from idstore import config
from idstore.config import PoolSettings
from idstore.portpick import NoFreePort, PortPicker
from tests.harness.ports import free_port


def pool(port: object, **more: object) -> PoolSettings:
    body = {"pattern": "w{{.ID}}.x.internal.", "port": port, **more}
    return config.load(raw={"pools": {"w": body}}, environ={}).pool_settings()


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    """A TCP listener on 127.0.0.1, as an application holding its port."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s


def test_a_port_with_a_listener_is_not_free(listening: socket.socket) -> None:
    port = listening.getsockname()[1]
    picker = PortPicker(pool("auto"), ("127.0.0.1",), "n1")
    assert not picker.free(port)
    assert picker.free(free_port())


def test_a_range_skips_ports_in_use(listening: socket.socket) -> None:
    port = listening.getsockname()[1]
    top = min(port + 40, 65535)
    for node in ("n1", "n2", "n3", "n4", "n5", "n6"):  # searches starting at different ports
        chosen = PortPicker(pool(f"{port}-{top}"), ("127.0.0.1",), node).choose()["grpc"]
        assert chosen != port and port < chosen <= top


def test_a_full_range_is_a_runtime_error_naming_the_range(listening: socket.socket) -> None:
    port = listening.getsockname()[1]
    with pytest.raises(NoFreePort, match=f"range {port}-{port} is in use"):
        PortPicker(pool(f"{port}-{port}"), ("127.0.0.1",), "n1").choose()


def test_same_identity_same_port_and_the_earlier_claims_port_first() -> None:
    p = pool("30000-30999")
    a1 = PortPicker(p, ("127.0.0.1",), "node-a").choose()
    a2 = PortPicker(p, ("127.0.0.1",), "node-a").choose()
    assert a1 == a2  # the search starts where this identity always starts
    earlier = {"grpc": a1["grpc"] + 1 if a1["grpc"] < 30999 else 30000}
    assert PortPicker(p, ("127.0.0.1",), "node-a").choose(earlier) == earlier
    # a port outside the range (the configuration changed) is not taken back
    assert PortPicker(p, ("127.0.0.1",), "node-a").choose({"grpc": 80}) == a1


def test_the_earlier_port_in_use_is_replaced(listening: socket.socket) -> None:
    port = listening.getsockname()[1]
    chosen = PortPicker(pool("auto"), ("127.0.0.1",), "n").choose({"grpc": port})["grpc"]
    assert chosen != port and 0 < chosen < 65536


def test_fixed_ports_are_published_unchecked_and_named_ports_differ() -> None:
    ports_table = {"grpc": "31000-31001", "x": "31000-31001", "master": 29500}
    body = {"pattern": "w{{.ID}}.x.internal.", "ports": ports_table}
    p = config.load(raw={"pools": {"w": body}}, environ={}).pool_settings()
    ports = PortPicker(p, ("127.0.0.1",), "n").choose()
    assert ports["master"] == 29500
    assert {ports["grpc"], ports["x"]} == {31000, 31001}


def test_an_address_this_host_does_not_own_is_checked_as_the_wildcard() -> None:
    picker = PortPicker(pool("auto"), ("192.0.2.77",), "n")
    assert picker.choose()["grpc"] > 0
