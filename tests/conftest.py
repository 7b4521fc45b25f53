"""Shared fixtures: real stores started on free loopback ports, once per test session.

A store that cannot be started fails the tests that need it (never a skip): the
harness raises with the server's own log.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest

from idstore import backends
from idstore.backends.base import SlotStore
from tests.harness.env import BackendEnv, MemoryEnv

BACKENDS = ["memory", "etcd", "zookeeper"]
REAL_BACKENDS = ["etcd", "zookeeper"]


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[object]:
    from tests.harness.etcd_server import EtcdServer

    with EtcdServer() as server:
        yield server


@pytest.fixture(scope="session")
def zk_server() -> Iterator[object]:
    from tests.harness.zk_server import ZooKeeperServer

    with ZooKeeperServer() as server:
        yield server


def make_env(request: pytest.FixtureRequest, backend: str) -> BackendEnv:
    if backend == "memory":
        return MemoryEnv()
    server = request.getfixturevalue("etcd_server" if backend == "etcd" else "zk_server")
    return server.env()  # type: ignore[attr-defined,no-any-return]


@pytest.fixture(params=BACKENDS)
def backend_env(request: pytest.FixtureRequest) -> BackendEnv:
    return make_env(request, request.param)


@pytest.fixture
def open_store(backend_env: BackendEnv) -> Iterator[Callable[..., SlotStore]]:
    """Factory of opened stores on backend_env; every one is closed at teardown."""
    made: list[SlotStore] = []

    def factory(**overrides: object) -> SlotStore:
        store = backends.create(backend_env.backend, backend_env.options(**overrides))
        store.open()
        made.append(store)
        return store

    yield factory
    for store in made:
        with contextlib.suppress(Exception):  # teardown of a store a test already broke
            store.close()
