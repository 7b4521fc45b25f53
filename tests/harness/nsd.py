"""NSD, the reference authoritative server, as tests and benchmarks run it: one place
for the nsd.conf that keeps it unprivileged and inside a work directory."""

from __future__ import annotations

import shutil
from pathlib import Path

NSD = shutil.which("nsd") or ("/usr/sbin/nsd" if Path("/usr/sbin/nsd").exists() else None)


def write_conf(workdir: Path, host: str, port: int, zone: str, zone_lines: str,
               server_lines: str = "") -> Path:
    """nsd.conf in ``workdir``: one process, no chroot or user switch, every file it
    writes under ``workdir``; ``zone_lines`` go in the zone block (zonefile, request-xfr
    ...), ``server_lines`` in the server block."""
    conf = workdir / "nsd.conf"
    conf.write_text(f"""server:
  ip-address: {host}@{port}
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
{server_lines}remote-control:
  control-enable: no
zone:
  name: {zone}
{zone_lines}""")
    return conf
