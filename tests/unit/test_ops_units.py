"""sd_notify, the Prometheus renderer, and the shipped unit / cloud-init files."""

from __future__ import annotations

import math
import socket
import uuid
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from idstore import metrics, systemd

ROOT = Path(__file__).parents[2]


def test_notify_sends_one_datagram_to_a_path_and_an_abstract_socket() -> None:
    for name in (f"/tmp/idstore-n-{uuid.uuid4().hex[:8]}", f"@idstore-n-{uuid.uuid4().hex}"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.bind(name.replace("@", "\0", 1))
            s.settimeout(5)
            assert systemd.notify("READY=1", "STATUS=ok", environ={"NOTIFY_SOCKET": name})
            assert s.recv(100) == b"READY=1\nSTATUS=ok"
        if name.startswith("/"):
            Path(name).unlink()


def test_notify_outside_systemd_is_a_no_op() -> None:
    assert not systemd.notify("READY=1", environ={})
    assert not systemd.notify("READY=1", environ={"NOTIFY_SOCKET": "/nonexistent/sock"})


def test_rendered_metrics_parse_with_escapes_and_histogram() -> None:
    # 0.0005, 0.005 and 0.5 observed: cumulative buckets as idstore.dns.stats makes them
    samples = ([(0.001, 1), (0.01, 2), (math.inf, 3)], 3, 0.5055)
    fams = [
        metrics.Family("idstore_x_total", "counter", "help with \\ and\nnewline").add(
            3, {"v": 'quote " backslash \\ newline \n'}
        ),
        metrics.histogram_family("idstore_d_seconds", "d", samples),
    ]
    parsed = {f.name: f for f in text_string_to_metric_families(metrics.render(fams))}
    (sample,) = parsed["idstore_x"].samples
    assert sample.labels["v"] == 'quote " backslash \\ newline \n' and sample.value == 3
    buckets = {s.labels.get("le"): s.value for s in parsed["idstore_d_seconds"].samples
               if s.name.endswith("_bucket")}  # fmt: skip
    assert buckets == {"0.001": 1, "0.01": 2, "+Inf": 3}


def test_unit_file_has_the_promised_settings() -> None:
    unit = (ROOT / "contrib/systemd/idstore.service").read_text()
    for line in (
        "Type=notify",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "ProtectSystem=strict",
        "Restart=on-failure",
        "RestartPreventExitStatus=78",  # cli.common.EXIT_DUPLICATE: never restart a twin
        "ExecReload=/bin/kill -HUP $MAINPID",
    ):
        assert f"\n{line}\n" in unit


def test_cloud_init_is_valid_yaml_and_carries_the_same_unit() -> None:
    text = (ROOT / "contrib/cloud-init/user-data.yaml").read_text()
    assert text.startswith("#cloud-config\n")
    doc = yaml.safe_load(text)
    files = {f["path"]: f["content"] for f in doc["write_files"]}
    assert (
        files["/etc/systemd/system/idstore.service"]
        == (ROOT / "contrib/systemd/idstore.service").read_text()
    )
    import tomllib

    cfg = tomllib.loads(files["/etc/idstore.toml"])
    from idstore import config

    config.load(raw=cfg, environ={})  # the embedded config is valid
