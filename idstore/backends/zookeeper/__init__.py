"""ZooKeeper backend: a slot is an ephemeral znode, a session is a ZooKeeper session.

kazoo is used through its public API only. The modules, one concern each:

- ``connection``: endpoints, TLS, ACLs and credentials, the kazoo client and its handler;
- ``session``: states, supervision, presumed loss, and the session deadline derived from
  idstore's own acknowledged requests and the session timeout the server granted;
- ``wire``: request plumbing (counting, waiting, kazoo's errors turned into idstore's);
- ``paths``: the key schema (slots, queue entries, identity markers);
- ``claims``: claim, reclaim, release, list, and the pool-version fence;
- ``queue``: the waiting queue (enqueue, tree maker, position, dequeue);
- ``watch``: a pool's watch;
- ``store``: ``ZooKeeperStore``, composing them (entry points ``zookeeper``, ``zk``).
"""

from __future__ import annotations

from idstore.backends.zookeeper.connection import ConnectSpec, parse_endpoints
from idstore.backends.zookeeper.session import LOST_AFTER
from idstore.backends.zookeeper.store import ZooKeeperStore

__all__ = ["LOST_AFTER", "ConnectSpec", "ZooKeeperStore", "parse_endpoints"]
