"""Backends are found through the stevedore namespace ``idstore.backends``.

Each entry point maps a short user-visible name (``memory``, ``etcd``, ``zookeeper``,
``zk``) to a SlotStore subclass; third-party packages can add their own.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from stevedore import driver

from idstore.backends.base import SlotStore, StoreOptions
from idstore.errors import BackendNotFound, IdstoreError

NAMESPACE = "idstore.backends"


def installed() -> list[str]:
    """Names of every installed backend, sorted."""
    return sorted({ep.name for ep in entry_points(group=NAMESPACE)})


def backend_class(name: str) -> type[SlotStore]:
    """The SlotStore class registered as ``name``; BackendNotFound lists the installed ones."""
    if name not in installed():
        raise BackendNotFound(
            f"unknown backend {name!r}; installed backends: {', '.join(installed()) or 'none'}"
        )
    try:
        mgr: driver.DriverManager[type[SlotStore]] = driver.DriverManager(
            NAMESPACE, name, invoke_on_load=False
        )
    except IdstoreError:
        raise  # a backend's own clear message (IdstoreError) passes unchanged
    except Exception as e:  # stevedore wraps import failures in many shapes
        raise BackendNotFound(f"backend {name!r} is installed but cannot be loaded: {e}") from e
    cls = mgr.driver
    if not (isinstance(cls, type) and issubclass(cls, SlotStore)):
        raise BackendNotFound(f"backend {name!r} does not provide a SlotStore")
    return cls


def create(name: str, options: StoreOptions) -> SlotStore:
    """An unopened store of backend ``name``."""
    return backend_class(name)(options)
