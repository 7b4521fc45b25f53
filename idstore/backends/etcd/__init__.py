"""etcd v3 backend: one transaction per claim, the session is a lease.

Keys are ``options.slot_path(pool, slot)``, values ``SlotRecord.encode()``. Every write
is a single transaction whose compare decides ownership, so nothing here ever decides
by "read, then write". etcd's API comes from the descriptors the package etcd3 ships,
read on first use; the keepalive loop, watch stream and endpoint failover are this
package's own, on plain gRPC.

One concern per module:

- ``api``: etcd's messages and services, built on first use (what and why: its docstring);
- ``messages``, ``requests``: the fields idstore reads and the requests it sends, typed;
- ``connection``: endpoints, TLS, the gRPC channel, auth, failover, error translation;
- ``session``: the lease, its keepalive thread, its loss and a new one after;
- ``keys``: where claims, their indexes and the waiting queue live in etcd's key space;
- ``claims``: claim, reclaim, release, list;
- ``queue``: the boot storm's waiting queue (enqueue, position, dequeue);
- ``watch``: a pool's watch stream and its stall check;
- ``store``: EtcdStore, composing them (the entry point ``etcd``).

Importing this package does not load etcd's API: ``api.load()`` runs when an EtcdStore
is created.
"""

from __future__ import annotations

from idstore.backends.etcd.store import EtcdStore
from idstore.backends.etcd.watch import EtcdWatch

__all__ = ["EtcdStore", "EtcdWatch"]
