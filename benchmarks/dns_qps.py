"""DNS queries per second: a real ``idstore serve`` vs NSD, same names, same run.

Default mode (what issue 6 asks for):
1. start a real etcd on loopback (tests/harness/etcd_server.py), claim N-1 slots of the
   pool ``worker`` with fake records through the real etcd backend (one session, one
   ``claim`` per slot, distinct addresses 10.x.y.z: data only, nothing is sent to them);
2. start a real ``idstore serve --backend etcd`` (its own process, config file with SRV
   port and a reverse zone, so the full feature set is on) which claims the N-th slot;
   wait until its DNS view answers every one of the N names;
3. dnsperf (10 clients, 10 s) over the N names against it;
4. NSD serving the same N names from a zone file (response-rate limiting off, see the
   field notes: Debian's default RRL throttles a benchmark to a few hundred QPS).

``--in-process`` replaces steps 1-2 by a child process that feeds DnsServer + Zone
directly (no store): the DNS frontend alone, for comparison.

Off the happy path (issue 14), each in the same run as the plain figures:

- ``--case-mix``: every query line in random letter case (as resolvers using 0x20
  randomisation send), 100 case variants of each name, so a reply cache keyed on raw
  bytes would miss; idstore and NSD get the same file. Ratio: idstore/NSD.
- ``--churn R``: while dnsperf runs, other store clients (own sessions, one per 100
  slots a second) claim R slots a second and release each a second later (R claims +
  R releases per second, spare slots past the N names), through the real store, watch
  and view; the changes per second reached are printed. Printed next to
  idstore's plain figure of the same round; ratio: churn/plain. Needs the real store
  (not ``--in-process``).

Every line has the server's CPU time per answered query and the load average.

Prints one JSON line per server (server, qps, avg_latency_ms, lost, queries) and then
``{"ratio": idstore_qps / nsd_qps}``. With ``--rounds R`` the pair is measured R times
(alternating, so both see the same background load) and the ratio line gives the median
and every round's figure. Usage::

    python benchmarks/dns_qps.py [--names 1000] [--seconds 10] [--clients 10] [--rounds 1]
                                 [--case-mix | --churn R]

Helpers here (config file, serve process, pre-claims, raw queries, dnsperf, NSD) are
shared with benchmarks/propagation.py and benchmarks/scale.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.harness.nsd import write_conf as nsd_conf  # noqa: E402  (needs ROOT on sys.path)
from tests.harness.ports import free_dns_port  # noqa: E402

ZONE = "tf.local."
POOL = "worker"
PATTERN = "worker{{.ID}}." + ZONE
SRV_PORT = 2222
HOST = "127.0.0.1"


def address(i: int) -> str:
    """The fake address of slot ``i`` (data only: never contacted)."""
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def names(n: int) -> list[tuple[str, str]]:
    return [(f"worker{i}.{ZONE}", address(i)) for i in range(n)]


# --------------------------------------------------------------------------- raw DNS


def wire_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode("ascii")
    return out + b"\x00"


QTYPES = {"A": 1, "NS": 2, "SOA": 6, "PTR": 12, "TXT": 16, "AAAA": 28, "SRV": 33}


def make_query(name: str, qtype: str = "A", qid: int = 0) -> bytes:
    """A minimal query (RD off, no EDNS): header + question."""
    return (
        struct.pack(">HHHHHH", qid, 0, 1, 0, 0, 0)
        + wire_name(name)
        + struct.pack(">HH", QTYPES[qtype], 1)
    )


def ask(sock: socket.socket, port: int, query: bytes, timeout: float = 0.5) -> bytes | None:
    """Send ``query`` once on UDP; the reply with the same ID, or None on timeout."""
    sock.settimeout(timeout)
    sock.sendto(query, (HOST, port))
    deadline = time.monotonic() + timeout
    while True:
        try:
            reply = sock.recv(4096)
        except OSError:
            return None
        if reply[:2] == query[:2]:
            return reply
        if time.monotonic() > deadline:
            return None


def answered(reply: bytes | None) -> bool:
    """NOERROR with at least one answer record."""
    return reply is not None and (reply[3] & 0xF) == 0 and reply[6:8] != b"\x00\x00"


def wait_answering(port: int, deadline: float = 15.0, name: str = "ns." + ZONE) -> None:
    query = make_query(name, "SOA", 0xABCD)
    end = time.monotonic() + deadline
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        while time.monotonic() < end:
            if ask(s, port, query, 0.2) is not None:
                return
            time.sleep(0.05)
    raise RuntimeError(f"no DNS server answering on port {port}")


def wait_all_names(port: int, wanted: Sequence[str], timeout: float = 60.0) -> float:
    """Wait until every name in ``wanted`` has an A answer; the seconds it took."""
    start = time.monotonic()
    pending = list(wanted)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        while pending:
            pending = [n for n in pending if not answered(ask(s, port, make_query(n, "A", 7)))]
            if not pending:
                break
            if time.monotonic() - start > timeout:
                raise RuntimeError(f"{len(pending)} names still unanswered, e.g. {pending[:3]}")
            time.sleep(0.1)
    return time.monotonic() - start


# --------------------------------------------------------------------------- processes


def write_config(
    path: Path,
    backend: str,
    endpoints: Sequence[str],
    limit: int,
    ttl: int = 10,
    cluster: str = "bench",
) -> Path:
    """The config every benchmark node shares: one pool with an SRV port, a reverse zone."""
    path.write_text(
        f'backend = "{backend}"\n'
        f"endpoints = {json.dumps(list(endpoints))}\n"
        f"ttl = {ttl}\n"
        f'cluster = "{cluster}"\n'
        f"[pools.{POOL}]\n"
        f"pattern = '{PATTERN}'\n"
        f"limit = {limit}\n"
        f"port = {SRV_PORT}\n"
        "[dns]\n"
        f'zone = "{ZONE}"\n'
        'reverse_zones = ["10.in-addr.arpa."]\n'
    )
    return path


class Target(NamedTuple):
    port: int
    pid: int  # the server process, for its CPU time


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of process ``pid`` and its children (NSD forks its
    server processes), every thread included."""
    total = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue  # exited meanwhile
    return total / os.sysconf("SC_CLK_TCK")


# ``idstore serve`` with the node's zone a plain Zone: what serving costs once idstore.node
# reads the request-duration histogram from ``zone.stats.durations`` instead of wrapping
# ``Zone.resolve`` (a wrapper keeps the server off its inline cached-reply path).
class Serve:
    """A real ``idstore serve`` process (``python -m idstore serve``) on a free port."""

    def __init__(self, config: Path, address: str, node_id: str, workdir: Path) -> None:
        self.port = free_dns_port(HOST)
        self.log_path = workdir / f"serve-{node_id}.log"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        python = [sys.executable, "-m", "idstore"]
        # Same session as the benchmark (no setsid), like NSD and dnsperf: with the
        # kernel's autogroup scheduling a new session is its own CPU group, which on a
        # busy machine cost the serve process a third of its QPS against its peers.
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*python, "serve", "--config", str(config),
                 "--node-id", node_id, "--address", address, "--listen", f"{HOST}:{self.port}",
                 "--log-level", "warning"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                cwd=ROOT,
            )  # fmt: skip

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"idstore serve exited {self.proc.returncode}:\n{self.log()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def fake_record(i: int) -> Any:
    from idstore.backends.base import SlotRecord

    return SlotRecord(node_id=f"fake{i}", nonce=uuid.uuid4().hex, addresses=(address(i),),
                      ports={"app": SRV_PORT})  # fmt: skip


def open_store(
    backend: str, endpoints: Sequence[str], ttl: float = 30.0, cluster: str = "bench"
) -> Any:
    """A store client of ``backend`` (its own session), opened."""
    from idstore import backends
    from idstore.backends.base import StoreOptions

    opts = StoreOptions(endpoints=tuple(endpoints), ttl=ttl, cluster=cluster)
    store = backends.create(backend, opts)
    store.open()
    return store


def preclaim(store: Any, slots: Sequence[int]) -> None:
    """Claim ``slots`` of the pool with fake records under ``store``'s one session."""
    for slot in slots:
        store.claim(POOL, slot, fake_record(slot))


@contextlib.contextmanager
def etcd() -> Iterator[tuple[str, ...]]:
    from tests.harness.etcd_server import EtcdServer

    with EtcdServer() as server:
        yield server.endpoints


@contextlib.contextmanager
def zookeeper() -> Iterator[tuple[str, ...]]:
    from tests.harness.zk_server import ZooKeeperServer

    server = ZooKeeperServer()
    with server:
        yield server.endpoints


def store_server(backend: str) -> contextlib.AbstractContextManager[tuple[str, ...]]:
    return zookeeper() if backend in ("zookeeper", "zk") else etcd()


# --------------------------------------------------------------------------- idstore side


def serve_in_process(n: int, duration_every: int | None = None) -> None:
    """Child process (--in-process): the DNS frontend alone, fed without a store.

    ``duration_every``: time one answer in this many for the request-duration histogram
    (0 = never); None keeps the default."""
    from idstore.config import DnsSettings, PoolSettings
    from idstore.dns import DnsServer, Zone
    from idstore.dns.stats import DurationHistogram
    from idstore.pattern import Pattern
    from idstore.view import Member

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    settings = DnsSettings(listen=((HOST, 0),), zone=ZONE, reverse_zones=("10.in-addr.arpa.",))
    pool = PoolSettings(POOL, Pattern.parse(PATTERN), max(n, 1), port=SRV_PORT)
    zone = Zone(settings, [pool])
    zone.update(
        [
            (POOL, i, Member(POOL, i, name, (addr,), f"node{i}"))
            for i, (name, addr) in enumerate(names(n))
        ]
    )
    zone.set_identity(f"worker0.{ZONE}")
    if duration_every is not None:
        zone.stats.durations = DurationHistogram(every=duration_every or 1 << 62)

    async def main() -> None:
        server = DnsServer(zone, settings)
        await server.start()
        print(server.bound[0][1], flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await server.stop()

    asyncio.run(main())


@contextlib.contextmanager
def in_process_idstore(n: int, duration_every: int | None = None) -> Iterator[Target]:
    extra = [] if duration_every is None else ["--duration-every", str(duration_every)]
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--names", str(n), *extra], stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.strip():
            raise RuntimeError("idstore DNS server did not start")
        port = int(line)
        wait_answering(port)
        yield Target(port, proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


@contextlib.contextmanager
def real_idstore(
    n: int, workdir: Path, backend: str = "etcd", spare: int = 0
) -> Iterator[tuple[Serve, tuple[str, ...]]]:
    """A real store with N-1 fake claims and a real ``idstore serve`` claiming the N-th;
    yields it with the store's endpoints. ``spare``: slots past N (for --churn)."""
    with store_server(backend) as endpoints:
        store = open_store(backend, endpoints)
        try:
            mine = random.randrange(n)  # the serve process gets whichever slot is left
            preclaim(store, [s for s in range(n) if s != mine])
            config = write_config(workdir / "idstore.toml", backend, endpoints, n + spare)
            node = Serve(config, address(mine), "bench-node", workdir)
            try:
                wait_answering(node.port, 30)
                node.check()
                wait_all_names(node.port, [name for name, _ in names(n)])
                yield node, endpoints
            finally:
                node.stop()
        finally:
            store.close(release=True)


class Churn:
    """Second store clients claiming ``rate`` slots a second in all (slots n ..
    n+2*rate-1), each released about a second after its claim, until stopped. One client
    (its own session and thread) per 100 slots a second: one etcd client alone reaches
    only a few hundred requests a second here."""

    def __init__(self, backend: str, endpoints: Sequence[str], n: int, rate: int) -> None:
        workers = max(1, -(-rate // 100))
        self.rates = [rate // workers + (1 if w < rate % workers else 0) for w in range(workers)]
        self.stores = [open_store(backend, endpoints, cluster="bench") for _ in self.rates]
        self.n, self.rate = n, rate
        self.ops = [0] * workers
        self.errors = [0] * workers
        self.started = self.elapsed = 0.0
        self.stop_flag = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(w,), daemon=True)
                        for w in range(workers)]  # fmt: skip

    def __enter__(self) -> Churn:
        self.started = time.monotonic()
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_flag.set()
        for thread in self.threads:
            thread.join(30)
        self.elapsed = time.monotonic() - self.started
        for store in self.stores:
            store.close(release=True)

    def _run(self, w: int) -> None:
        store, rate = self.stores[w], self.rates[w]
        base = self.n + 2 * sum(self.rates[:w])  # this worker's spare slots
        spare = 2 * rate
        held: dict[int, Any] = {}
        tick = 1.0 / rate
        next_at = time.monotonic()
        i = 0
        while not self.stop_flag.is_set():
            slot = base + i % spare
            old = base + (i - rate) % spare
            try:
                if old in held:
                    store.release(held.pop(old))
                    self.ops[w] += 1
                if slot not in held:
                    held[slot] = store.claim(POOL, slot, fake_record(slot))
                    self.ops[w] += 1
            except Exception:  # a lost race or a slow store: count it, keep the pace
                self.errors[w] += 1
            i += 1
            next_at += tick
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def figures(self) -> dict[str, Any]:
        return {"churn_clients": len(self.rates),
                "churn_ops_per_s": round(sum(self.ops) / max(self.elapsed, 1e-9), 1),
                "churn_errors": sum(self.errors)}  # fmt: skip


# --------------------------------------------------------------------------- NSD side


def nsd_zone(n: int, txt: bool) -> list[str]:
    zone = [f"$ORIGIN {ZONE}", "$TTL 5",
            f"@ IN SOA ns.{ZONE} hostmaster.{ZONE} 1 3600 600 86400 5", f"@ IN NS ns.{ZONE}",
            "ns IN A 127.0.0.1"]  # fmt: skip
    for i, (name, addr) in enumerate(names(n)):
        zone.append(f"{name} IN A {addr}")
        if txt:
            zone.append(f'{name} IN TXT "pool={POOL}" "slot={i}" "node=fake{i}"')
    return zone


@contextlib.contextmanager
def nsd(n: int, workdir: Path, txt: bool = False) -> Iterator[Target]:
    binary = shutil.which("nsd") or "/usr/sbin/nsd"
    port = free_dns_port(HOST)
    (workdir / "zone").write_text("\n".join(nsd_zone(n, txt)) + "\n")
    conf = nsd_conf(
        workdir, HOST, port, ZONE, f'  zonefile: "{workdir}/zone"\n',
        "  rrl-ratelimit: 0\n  rrl-whitelist-ratelimit: 0\n  verbosity: 0\n",
    )  # fmt: skip
    proc = subprocess.Popen([binary, "-d", "-c", str(conf)])
    try:
        wait_answering(port)
        yield Target(port, proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


# --------------------------------------------------------------------------- dnsperf


def query_file(path: Path, n: int, mix: bool, case_variants: int = 0) -> Path:
    """Every name once with A; with ``mix`` also AAAA (NODATA) and TXT for some names.
    ``case_variants`` > 0: that many passes over the names, each line in random letter
    case (a fixed seed, so both servers get the same file)."""
    rng = random.Random(14)
    lines = []
    for _ in range(max(1, case_variants)):
        for i, (name, _) in enumerate(names(n)):
            if case_variants:
                name = "".join(c.upper() if rng.random() < 0.5 else c for c in name)
            lines.append(f"{name} A\n")
            if mix and i % 10 == 1:
                lines.append(f"{name} AAAA\n")
            if mix and i % 10 == 2:
                lines.append(f"{name} TXT\n")
    path.write_text("".join(lines))
    return path


def dnsperf(
    port: int, datafile: Path, seconds: int, clients: int, pid: int | None = None
) -> dict[str, Any]:
    """dnsperf's figures; with ``pid`` also the server's CPU time per answered query,
    which a busy machine disturbs far less than the QPS."""
    cpu = cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(
        ["dnsperf", "-s", HOST, "-p", str(port), "-d", str(datafile), "-c", str(clients),
         "-l", str(seconds), "-q", "200"],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    ).stdout  # fmt: skip

    def grab(pattern: str) -> float:
        m = re.search(pattern, out)
        if m is None:
            raise RuntimeError(f"unexpected dnsperf output:\n{out}")
        return float(m.group(1))

    result = {
        "qps": round(grab(r"Queries per second:\s+([\d.]+)"), 1),
        "avg_latency_ms": round(grab(r"Average Latency \(s\):\s+([\d.]+)") * 1000, 3),
        "lost": int(grab(r"Queries lost:\s+(\d+)")),
        "queries": int(grab(r"Queries sent:\s+(\d+)")),
    }
    if pid:
        done = max(1, result["queries"] - result["lost"])
        result["cpu_us_per_query"] = round((cpu_seconds(pid) - cpu) / done * 1e6, 3)
    return result


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--names", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=1, help="measure both servers R times")
    ap.add_argument("--mix", action="store_true", help="add AAAA and TXT queries to the A")
    ap.add_argument(
        "--case-mix",
        action="store_true",
        help="every query line in random letter case (0x20), both servers",
    )
    ap.add_argument(
        "--churn",
        type=int,
        default=0,
        metavar="R",
        help="a second client claims and releases R slots a second meanwhile",
    )
    ap.add_argument("--in-process", action="store_true",
                    help="DnsServer+Zone fed directly, no store and no idstore serve")  # fmt: skip
    ap.add_argument("--skip-nsd", action="store_true")
    ap.add_argument(
        "--duration-every",
        type=int,
        default=None,
        help="--in-process: time 1 answer in N for the histogram (0 = off)",
    )
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve_in_process(args.names, args.duration_every)
        return
    if args.churn and args.in_process:
        ap.error("--churn needs the real store (drop --in-process)")
    mode = "in-process" if args.in_process else "idstore serve (etcd)"
    with tempfile.TemporaryDirectory(prefix="dns_qps.") as tmp:
        workdir = Path(tmp)
        plainfile = query_file(workdir / "queries.txt", args.names, args.mix)
        datafile = plainfile
        if args.case_mix:
            datafile = query_file(workdir / "mixed-case.txt", args.names, args.mix, 100)
        ours: contextlib.AbstractContextManager[Any]
        if args.in_process:
            ours = in_process_idstore(args.names, args.duration_every)
        else:
            ours = real_idstore(args.names, workdir, spare=2 * args.churn)
        with contextlib.ExitStack() as stack:
            got = stack.enter_context(ours)
            target, endpoints = got if isinstance(got, tuple) else (got, ())
            (workdir / "nsd").mkdir()
            base_target: Target | None = None
            if not args.skip_nsd:
                base_target = stack.enter_context(nsd(args.names, workdir / "nsd", txt=args.mix))
            assert isinstance(target, (Target, Serve))
            rounds = [measure_round(args, r, mode, target, base_target, plainfile, datafile,
                                    endpoints) for r in range(max(1, args.rounds))]  # fmt: skip
            summary: dict[str, Any] = {}
            for key in rounds[0]:
                values = [r[key] for r in rounds]
                summary[key] = round(statistics.median(values), 3)
                if len(values) > 1:
                    summary[key + "_rounds"] = [round(v, 3) for v in values]
            if summary:
                print(json.dumps(summary), flush=True)


def measure_round(args: argparse.Namespace, r: int, mode: str, target: Target | Serve,
                  base_target: Target | None, plainfile: Path, datafile: Path,
                  endpoints: Sequence[str]) -> dict[str, float]:  # fmt: skip
    """One round: idstore plain (and under case mix or churn), then NSD the same way;
    returns the round's ratios."""
    extra = {"round": r + 1} if args.rounds > 1 else {}
    common = {"names": args.names, **extra}

    def run(port: int, pid: int, path: Path) -> dict[str, Any]:
        res = dnsperf(port, path, args.seconds, args.clients, pid)
        if isinstance(target, Serve):
            target.check()
        return res

    ratios: dict[str, float] = {}
    plain = run(target.port, target.pid, plainfile)
    print(json.dumps({"server": "idstore", "mode": mode, "queries_kind": "plain", **common,
                      **plain, "loadavg": loadavg()}), flush=True)  # fmt: skip
    if args.churn:
        with Churn("etcd", endpoints, args.names, args.churn) as churn:
            res = run(target.port, target.pid, plainfile)
        print(json.dumps({"server": "idstore", "mode": mode, "queries_kind": "plain",
                          "churn": args.churn, **churn.figures(), **common, **res,
                          "loadavg": loadavg()}), flush=True)  # fmt: skip
        ratios["churn_vs_plain"] = res["qps"] / plain["qps"]
    mixed = None
    if args.case_mix:
        mixed = run(target.port, target.pid, datafile)
        print(json.dumps({"server": "idstore", "mode": mode, "queries_kind": "case-mix",
                          **common, **mixed, "loadavg": loadavg()}), flush=True)  # fmt: skip
    if base_target is None:
        return ratios
    base = run(base_target.port, base_target.pid, plainfile)
    print(json.dumps({"server": "nsd", "queries_kind": "plain", **common, **base,
                      "loadavg": loadavg()}), flush=True)  # fmt: skip
    ratios["ratio"] = plain["qps"] / base["qps"]
    if mixed is not None:
        base_mixed = run(base_target.port, base_target.pid, datafile)
        print(json.dumps({"server": "nsd", "queries_kind": "case-mix", **common, **base_mixed,
                          "loadavg": loadavg()}), flush=True)  # fmt: skip
        ratios["case_mix_ratio"] = mixed["qps"] / base_mixed["qps"]
    return ratios


if __name__ == "__main__":
    main()
