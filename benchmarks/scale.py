"""Scale figures of issue 9: one node holding a 10,000-name view, and what a cluster boot
costs the store. Prints one JSON object per line:

- ``view_apply``: 10,000 claim events pushed through the mirror -> ClusterView -> Zone
  chain a node runs (``PoolMirror._on_events``, as a watch delivers them), one event per
  callback (the worst case) and 100 per callback. Goal: at most 1 s.
- ``serve``: two real ``idstore serve`` processes on one real etcd, one in a cluster with
  10 claims and one with 10,000 (N-1 fake claims made first, the process claims the
  last); after every name answers, dnsperf alternates between them (``--rounds``).
  Reports resident memory (VmRSS after the load, and the peak VmHWM) of the big one
  (goal <= 100 MB) and its QPS relative to the small one (goal >= 0.9), with the server
  CPU per query, which a busy machine disturbs less than the QPS.
- ``boot``: N simulated nodes boot at once (``--concurrency`` at a time), each with its
  own store session running idstore's Allocator (list, then claim the lowest free slot,
  the next on a lost race), while ``--watchers`` PoolMirrors (as every node runs) count
  the watch events they receive. Reports the store requests (sessions, lists, places in
  line, claim transactions: whatever the Allocator does), claim transactions and events
  per watcher. On etcd for ``--boot`` nodes (1,000 real
  sessions by default), on the memory backend for ``--boot-model`` (10,000), where the
  same Allocator code gives exact counts without a server. The model beyond is in the
  README's performance section.

Usage::

    python benchmarks/scale.py [--names 10000] [--boot 1000] [--boot-model 10000]
                               [--seconds 5] [--rounds 2] [--skip-serve] [--skip-boot]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.dns_qps import (
    PATTERN,
    POOL,
    SRV_PORT,
    ZONE,
    Serve,
    address,
    dnsperf,
    etcd,
    fake_record,
    loadavg,
    names,
    open_store,
    query_file,
    wait_all_names,
    wait_answering,
    write_config,
)


def emit(obj: Mapping[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


# --------------------------------------------------------------------------- view apply


def view_apply(n: int, batch: int) -> float:
    """Seconds to push ``n`` claim events through mirror -> view -> zone."""
    from idstore.backends.base import Claim, EventType, SlotEvent, SlotRecord, StoreOptions
    from idstore.backends.memory import MemoryStore, new_endpoint
    from idstore.config import DnsSettings, PoolSettings
    from idstore.dns import Zone
    from idstore.mirror import PoolMirror
    from idstore.pattern import Pattern
    from idstore.view import ClusterView

    pool = PoolSettings(POOL, Pattern.parse(PATTERN), n, port=SRV_PORT)
    dns = DnsSettings(zone=ZONE, reverse_zones=("10.in-addr.arpa.",))
    events = [
        SlotEvent(EventType.PUT, POOL, i,
                  Claim(POOL, i, SlotRecord(f"node{i}", uuid.uuid4().hex, (address(i),),
                                            {"app": SRV_PORT}), i + 1, "1"), i + 1)
        for i in range(n)
    ]  # fmt: skip
    # The mirror's store is never opened: events go in where a watch delivers them.
    mirror = PoolMirror(MemoryStore(StoreOptions(endpoints=(new_endpoint(),))), [POOL])
    view = ClusterView([pool])
    zone = Zone(dns, [pool])
    mirror.add_listener(lambda p, changed, replace, _rev: view.apply(p, changed, replace=replace))
    view.subscribe(zone.update)
    gen = object()
    mirror._generation[POOL] = gen
    start = time.perf_counter()
    for s in range(0, n, batch):
        mirror._on_events(POOL, gen, events[s : s + batch])
    took = time.perf_counter() - start
    if len(view.members(POOL)) != n:
        raise RuntimeError("the view did not take every event")
    return took


# --------------------------------------------------------------------------- serve


def vm_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} for process {pid}")


def preclaim_parallel(store: Any, slots: Sequence[int], workers: int = 8) -> None:
    """Claim ``slots`` under ``store``'s one session, a few requests in flight."""
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda s: store.claim(POOL, s, fake_record(s)), slots))


def serve_figures(big: int, small: int, seconds: int, rounds: int, workdir: Path) -> None:
    with etcd() as endpoints:
        stores, nodes = [], []
        try:
            servers: dict[int, Serve] = {}
            for n in (small, big):
                cluster = f"bench{n}"
                store = open_store("etcd", endpoints, cluster=cluster)
                stores.append(store)
                t = time.monotonic()
                preclaim_parallel(store, range(1, n))  # the node takes slot 0
                claimed = time.monotonic() - t
                config = write_config(workdir / f"{cluster}.toml", "etcd", endpoints, n,
                                      cluster=cluster)  # fmt: skip
                node = Serve(config, address(0), f"node-{cluster}", workdir)
                nodes.append(node)
                wait_answering(node.port, 60)
                synced = wait_all_names(node.port, [name for name, _ in names(n)], 120)
                node.check()
                servers[n] = node
                emit({"figure": "serve_setup", "names": n, "preclaim_s": round(claimed, 2),
                      "all_names_answering_s": round(synced, 2),
                      "rss_mb_idle": round(vm_kb(node.pid, "VmRSS") / 1024, 1)})  # fmt: skip
            files = {n: query_file(workdir / f"q{n}.txt", n, False) for n in servers}
            runs: dict[int, list[dict[str, Any]]] = {n: [] for n in servers}
            for r in range(rounds):
                for n, node in servers.items():
                    res = dnsperf(node.port, files[n], seconds, 10, node.pid)
                    node.check()
                    runs[n].append(res)
                    emit({"figure": "serve_qps", "names": n, "round": r + 1, **res,
                          "loadavg": loadavg()})  # fmt: skip
            node = servers[big]
            qps = {n: statistics.median(x["qps"] for x in v) for n, v in runs.items()}
            cpu = {n: statistics.median(x["cpu_us_per_query"] for x in v) for n, v in runs.items()}
            emit({
                "figure": "serve", "names": big,
                "rss_mb": round(vm_kb(node.pid, "VmRSS") / 1024, 1),
                "rss_peak_mb": round(vm_kb(node.pid, "VmHWM") / 1024, 1),
                "rss_goal_mb": 100,
                f"qps_{small}": qps[small], f"qps_{big}": qps[big],
                "qps_ratio": round(qps[big] / qps[small], 3), "qps_ratio_goal": 0.9,
                f"cpu_us_per_query_{small}": cpu[small], f"cpu_us_per_query_{big}": cpu[big],
                "lost": sum(x["lost"] for v in runs.values() for x in v),
            })  # fmt: skip
        finally:
            for node in nodes:
                node.stop()
            for store in stores:
                store.close(release=True)


# --------------------------------------------------------------------------- boot


def boot(backend: str, endpoints: Sequence[str], n: int, concurrency: int, watchers: int
         ) -> dict[str, Any]:  # fmt: skip
    """Boot ``n`` nodes on one pool of ``n`` slots; count what it costs the store."""
    from idstore import backends
    from idstore.allocator import Allocator
    from idstore.backends.base import Claim, SlotRecord, StoreOptions
    from idstore.config import PoolSettings
    from idstore.mirror import PoolMirror
    from idstore.pattern import Pattern

    cluster = f"boot{uuid.uuid4().hex[:6]}"
    options = StoreOptions(endpoints=tuple(endpoints), ttl=60.0, cluster=cluster,
                           request_timeout=30.0)  # fmt: skip
    pool = PoolSettings(POOL, Pattern.parse(PATTERN), n, port=SRV_PORT)
    counted = threading.Lock()
    events = [0] * watchers
    held: list[set[int]] = [set() for _ in range(watchers)]  # slots each watcher sees claimed

    def counter(w: int) -> Any:
        def on_claims(_p: str, changed: Mapping[int, Claim | None], replace: bool, _r: int
                      ) -> None:  # fmt: skip
            with counted:
                if replace:
                    held[w].clear()
                else:
                    events[w] += len(changed)
                for slot, c in changed.items():
                    if c is None:
                        held[w].discard(slot)
                    else:
                        held[w].add(slot)

        return on_claims

    def seen_by_each() -> list[int]:
        with counted:
            return [len(h) for h in held]

    mirrors = []
    for w in range(watchers):
        store = backends.create(backend, options)
        store.open()
        mirror = PoolMirror(store, [POOL])
        mirror.add_listener(counter(w))
        mirror.start()
        if not mirror.wait_synced(30):
            raise RuntimeError("a watcher did not sync")
        mirrors.append(mirror)
    watcher_ops = sum(m.store.wire_requests for m in mirrors)

    def node(i: int) -> tuple[Any, int, int]:
        store = backends.create(backend, options)
        store.open()
        alloc = Allocator(store, pool, SlotRecord(f"node{i}", uuid.uuid4().hex, (address(i),)),
                          max_attempts_per_round=n)  # fmt: skip
        claim = None
        for _ in range(10):  # a round gives up after max_attempts lost races
            claim = alloc.acquire()
            if claim is not None:
                break
        if claim is None:
            raise RuntimeError(f"node {i} got no slot")
        return store, store.wire_requests, alloc.claim_attempts

    stores: list[Any] = []
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as ex:
        results = list(ex.map(node, range(n)))
    took = time.monotonic() - start
    stores = [r[0] for r in results]
    deadline = time.monotonic() + 120
    while min(seen_by_each()) < n and time.monotonic() < deadline:
        time.sleep(0.1)
    seen = seen_by_each()
    with counted:
        delivered = list(events)  # before the releases below add their DELETEs
    ops = sum(r[1] for r in results)
    attempts = sum(r[2] for r in results)
    with concurrent.futures.ThreadPoolExecutor(concurrency) as ex:
        list(ex.map(lambda s: s.close(release=True), stores))
    for m in mirrors:
        m.stop()
        m.store.close(release=True)
    return {
        "figure": "boot", "backend": backend, "nodes": n, "concurrency": concurrency,
        "boot_s": round(took, 2),
        "store_requests": ops,  # every request of the booting nodes (keepalives excluded)
        "sessions": n,
        "claim_attempts": attempts, "claim_attempts_per_node": round(attempts / n, 2),
        "watchers": watchers, "events_per_watcher": delivered,
        "watchers_saw_all": all(s == n for s in seen), "watcher_setup_requests": watcher_ops,
        "model_cluster_watch_events": n * (n - 1) // 2,
        "model_cluster_records_read": n * (n - 1) // 2,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--names", type=int, default=10_000)
    ap.add_argument("--small", type=int, default=10)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--boot", type=int, default=1000, help="nodes booted on a real etcd")
    ap.add_argument("--boot-model", type=int, default=10_000, help="nodes on the memory store")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--watchers", type=int, default=3)
    ap.add_argument("--skip-serve", action="store_true")
    ap.add_argument("--skip-boot", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)

    for batch in (1, 100):
        took = min(view_apply(args.names, batch) for _ in range(3))
        emit({"figure": "view_apply", "events": args.names, "events_per_callback": batch,
              "seconds": round(took, 3), "goal_s": 1.0, "loadavg": loadavg()})  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="scale.") as tmp:
        if not args.skip_serve:
            serve_figures(args.names, args.small, args.seconds, args.rounds, Path(tmp))
    if args.skip_boot:
        return
    if args.boot:
        with etcd() as endpoints:
            emit(boot("etcd", endpoints, args.boot, args.concurrency, args.watchers))
    if args.boot_model:
        from idstore.backends.memory import new_endpoint

        emit(boot("memory", (new_endpoint(),), args.boot_model, args.concurrency,
                  args.watchers))  # fmt: skip


if __name__ == "__main__":
    main()
