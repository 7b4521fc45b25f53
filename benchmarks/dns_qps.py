"""DNS queries per second: idstore's DNS frontend vs NSD, same names, same run.

Runs dnsperf (10 clients, 10 s by default) against
1. idstore's DnsServer (the code ``idstore serve`` runs) on uvloop, holding N claimed
   names with the full feature set on (reverse zone, NSID identity, SRV pools), fed
   directly through ``Zone.update`` so no store is needed;
2. NSD serving the same N names from a zone file (response-rate limiting off, see the
   field notes: Debian's default RRL throttles a benchmark to a few hundred QPS).

Prints one JSON line per server (server, qps, avg_latency_ms, lost, queries) and then
``{"ratio": idstore_qps / nsd_qps}``. Usage::

    python benchmarks/dns_qps.py [--names 1000] [--seconds 10] [--clients 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ZONE = "tf.local."


def names(n: int) -> list[tuple[str, str]]:
    return [(f"worker{i}.{ZONE}", f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}")
            for i in range(n)]  # fmt: skip


# --------------------------------------------------------------------------- idstore side


def serve(n: int) -> None:
    """Child process: run the DNS frontend until SIGTERM; print the port when ready."""
    from idstore.config import DnsSettings, PoolSettings
    from idstore.dns import DnsServer, Zone
    from idstore.pattern import Pattern
    from idstore.view import Member

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    settings = DnsSettings(
        listen=(("127.0.0.1", 0),), zone=ZONE, reverse_zones=("10.in-addr.arpa.",)
    )
    pool = PoolSettings("worker", Pattern.parse("worker{{.ID}}." + ZONE), max(n, 1), port=2222)
    zone = Zone(settings, [pool])
    zone.update(
        [
            ("worker", i, Member("worker", i, name, (addr,), f"node{i}"))
            for i, (name, addr) in enumerate(names(n))
        ]
    )
    zone.set_identity(f"worker0.{ZONE}")

    async def main() -> None:
        server = DnsServer(zone, settings)
        await server.start()
        print(server.bound[0][1], flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await server.stop()

    asyncio.run(main())


def start_idstore(n: int) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--names", str(n)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.strip():
        proc.kill()
        raise RuntimeError("idstore DNS server did not start")
    return proc, int(line)


# --------------------------------------------------------------------------- NSD side


def free_port() -> int:
    # A port free for both UDP and TCP at the time of asking.
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return int(port)


def start_nsd(n: int, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    nsd = shutil.which("nsd") or "/usr/sbin/nsd"
    port = free_port()
    zone = [f"$ORIGIN {ZONE}", "$TTL 5",
            f"@ IN SOA ns.{ZONE} hostmaster.{ZONE} 1 3600 600 86400 5", f"@ IN NS ns.{ZONE}",
            "ns IN A 127.0.0.1"]  # fmt: skip
    zone += [f"{name} IN A {addr}" for name, addr in names(n)]
    (workdir / "zone").write_text("\n".join(zone) + "\n")
    (workdir / "nsd.conf").write_text(f"""server:
  ip-address: 127.0.0.1@{port}
  port: {port}
  server-count: 1
  username: ""
  chroot: ""
  zonesdir: "{workdir}"
  pidfile: "{workdir}/nsd.pid"
  database: ""
  zonelistfile: "{workdir}/zone.list"
  xfrdfile: "{workdir}/xfrd.state"
  xfrdir: "{workdir}"
  logfile: "{workdir}/nsd.log"
  rrl-ratelimit: 0
  rrl-whitelist-ratelimit: 0
  verbosity: 0
remote-control:
  control-enable: no
zone:
  name: {ZONE}
  zonefile: "{workdir}/zone"
""")
    proc = subprocess.Popen([nsd, "-d", "-c", str(workdir / "nsd.conf")])
    wait_answering(port)
    return proc, port


def wait_answering(port: int, deadline: float = 15.0) -> None:
    query = bytes.fromhex("abcd01000001000000000000") + b"\x02ns\x02tf\x05local\x00\x00\x01\x00\x01"
    end = time.monotonic() + deadline
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        while time.monotonic() < end:
            s.sendto(query, ("127.0.0.1", port))
            try:
                if s.recv(512)[:2] == b"\xab\xcd":
                    return
            except OSError:
                time.sleep(0.1)
    raise RuntimeError(f"no DNS server answering on port {port}")


# --------------------------------------------------------------------------- dnsperf


def dnsperf(port: int, datafile: Path, seconds: int, clients: int) -> dict[str, float]:
    out = subprocess.run(
        ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(datafile), "-c", str(clients),
         "-l", str(seconds), "-q", "200"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip

    def grab(pattern: str) -> float:
        m = re.search(pattern, out)
        if m is None:
            raise RuntimeError(f"unexpected dnsperf output:\n{out}")
        return float(m.group(1))

    return {
        "qps": round(grab(r"Queries per second:\s+([\d.]+)"), 1),
        "avg_latency_ms": round(grab(r"Average Latency \(s\):\s+([\d.]+)") * 1000, 3),
        "lost": int(grab(r"Queries lost:\s+(\d+)")),
        "queries": int(grab(r"Queries sent:\s+(\d+)")),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--names", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--skip-nsd", action="store_true")
    args = ap.parse_args()
    if args.serve:
        serve(args.names)
        return
    with tempfile.TemporaryDirectory(prefix="dns_qps.") as tmp:
        workdir = Path(tmp)
        datafile = workdir / "queries.txt"
        datafile.write_text("".join(f"{name} A\n" for name, _ in names(args.names)))
        results = {}
        proc, port = start_idstore(args.names)
        try:
            wait_answering(port)
            results["idstore"] = dnsperf(port, datafile, args.seconds, args.clients)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
        print(json.dumps({"server": "idstore", "names": args.names, **results["idstore"]}))
        if args.skip_nsd:
            return
        nsd, nsd_port = start_nsd(args.names, workdir)
        try:
            results["nsd"] = dnsperf(nsd_port, datafile, args.seconds, args.clients)
        finally:
            nsd.send_signal(signal.SIGTERM)
            nsd.wait(10)
        print(json.dumps({"server": "nsd", "names": args.names, **results["nsd"]}))
        ratio = results["idstore"]["qps"] / results["nsd"]["qps"]
        print(json.dumps({"ratio": round(ratio, 3)}))


if __name__ == "__main__":
    main()
