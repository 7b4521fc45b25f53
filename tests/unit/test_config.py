from __future__ import annotations

from pathlib import Path

import pytest

from idstore import config
from idstore.cli import main
from idstore.errors import ConfigError

TWO_POOLS = """
backend = "etcd"
endpoints = ["http://127.0.0.1:2379"]
ttl = 6

[pools.ps]
pattern = "ps{{.ID}}.tf.local."
limit = 2
port = 2222

[pools.worker]
pattern = "worker{{.ID}}.tf.local."
limit = 64
first = 1
port = 2222

[dns]
listen = ["127.0.0.1:5353", "[::1]:5353"]
ttl = 3
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "idstore.toml"
    path.write_text(text)
    return str(path)


def test_file_with_two_pools(tmp_path: Path) -> None:
    s = config.load(cli={"config": write(tmp_path, TWO_POOLS)}, environ={})
    assert [p.name for p in s.pools] == ["ps", "worker"]
    assert s.pool == "ps"  # default: the first pool
    assert s.pool_settings("worker").name_of(1) == "worker1.tf.local."
    assert s.pool_settings("worker").slots() == range(1, 65)
    assert s.dns.zone == "tf.local."
    assert s.dns.listen == (("127.0.0.1", 5353), ("::1", 5353))
    assert s.store.ttl == 6 and s.store.endpoints == ("http://127.0.0.1:2379",)


def test_precedence_cli_over_env_over_file(tmp_path: Path) -> None:
    path = write(tmp_path, TWO_POOLS)
    env = {"IDSTORE_POOL": "worker", "IDSTORE_TTL": "8", "IDSTORE_BACKEND": "zookeeper"}
    s = config.load(cli={"config": path, "ttl": "4"}, environ=env)
    assert (s.pool, s.store.ttl, s.backend) == ("worker", 4.0, "zookeeper")
    s = config.load(cli={"config": path}, environ=env)
    assert s.store.ttl == 8.0


def test_single_pool_flags_without_a_file() -> None:
    s = config.load(
        cli={"pattern": "worker{{.ID}}.tf.local.", "limit": "8", "listen": ["127.0.0.1:53"]},
        environ={},
    )
    assert s.pool == "worker" and s.pool_settings().limit == 8
    assert s.backend == "memory"  # the embedded default


def test_defaults_need_no_file() -> None:
    s = config.load(cli={}, environ={})
    assert s.backend == "memory" and s.store.ttl == 10 and s.pools and s.node_id


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"ttl": 1}, "ttl"),
        ({"ttl": "ten"}, "ttl"),
        ({"pools": {"w": {"pattern": "w.x."}}}, "pools.w.pattern"),
        ({"pools": {"w": {"pattern": "w{{.ID}}.x.", "limit": 0}}}, "pools.w.limit"),
        ({"pools": {"w": {"pattern": "w{{.ID}}.x.", "limt": 3}}}, "pools.w.limt"),
        ({"pools": {"w": {"pattern": "w{{.ID}}.x.", "port": 70000}}}, "pools.w.port"),
        ({"dns": {"listen": ["localhost"]}}, "dns.listen"),
        ({"dns": {"ttl": -1}}, "dns.ttl"),
        ({"pool": "nope"}, "pool"),
        ({"addresses": ["not-an-ip"]}, "addresses"),
        ({"colour": "blue"}, "colour"),
        (
            {"pools": {"a": {"pattern": "n{{.ID}}.x."}, "b": {"pattern": "n{{.ID}}.x."}}},
            "pools.b.pattern",
        ),
        ({"pools": {"a": {"pattern": "n{{.ID}}.x."}}, "dns": {"zone": "y."}}, "pools.a.pattern"),
    ],
)
def test_invalid_values_name_the_key(raw: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(raw=raw, environ={})
    assert info.value.key == key
    assert f"invalid {key} = " in str(info.value)


def test_cli_reports_bad_config_in_one_line_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, '[pools.w]\npattern = "w{{.ID}}.x."\nlimit = -3\n')
    assert main(["config", "check", path]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pools.w.limit" in err and "Traceback" not in err


def test_cli_reports_toml_syntax_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", write(tmp_path, "ttl = = 3")]) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_config_check_prints_effective_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["config", "check", write(tmp_path, TWO_POOLS)]) == 0
    out = capsys.readouterr().out
    assert '"worker"' in out and "worker1.tf.local. .. worker64.tf.local." in out


def test_unknown_backend_lists_installed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--backend", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "unknown backend 'nosuch'" in err and "memory" in err and "etcd" in err
