"""Config of per-node ports, slot hints, the default pattern and patterns without a zone:
every bad value a one-line ConfigError naming the key (exit 2 from the CLI)."""

from __future__ import annotations

from pathlib import Path

import pytest

from idstore import config
from idstore.cli import main
from idstore.config import Settings
from idstore.config.ports import PortSpec
from idstore.errors import ConfigError


def load(pool: dict[str, object], environ: dict[str, str] | None = None, **top: object) -> Settings:
    body = {"pattern": "worker{{.ID}}.tf.internal.", "limit": 8, **pool}
    return config.load(raw={"pools": {"worker": body}, **top}, environ=environ or {})


@pytest.mark.parametrize(
    ("value", "spec"),
    [
        (9000, PortSpec("grpc", fixed=9000)),
        ("9000", PortSpec("grpc", fixed=9000)),
        ("auto", PortSpec("grpc")),
        ("20000-20999", PortSpec("grpc", lo=20000, hi=20999)),
        ("20000 - 20000", PortSpec("grpc", lo=20000, hi=20000)),
    ],
)
def test_a_port_is_a_number_auto_or_a_range(value: object, spec: PortSpec) -> None:
    pool = load({"port": value}).pool_settings()
    assert pool.ports == (spec,)
    assert pool.port == spec.fixed  # the fixed number, None when chosen per node


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("20999-20000", "must not be empty"),
        ("-", "a range"),
        ("", "a range"),
        ("20000-70000", "65535"),
        (0, "between 1 and 65535"),
        ("otto", "a range"),
        (True, "a range"),
    ],
)
def test_bad_ports_name_the_key(value: object, why: str) -> None:
    with pytest.raises(ConfigError, match=r"pools\.worker\.port") as info:
        load({"port": value})
    assert why in str(info.value)
    assert "\n" not in str(info.value)


def test_named_ports_each_with_its_own_spec_and_a_primary() -> None:
    pool = load({"ports": {"grpc": "auto", "master": 29500}}).pool_settings()
    assert [s.name for s in pool.ports] == ["grpc", "master"]
    assert pool.service == "grpc" and pool.port is None
    assert pool.member_port({"grpc": 20001}) == 20001
    assert pool.member_port({"grpc": 20001}, "master") == 29500  # fixed: same everywhere
    # no "grpc" among them: the first is the primary, and the SRV service is named after it
    pool = load({"ports": {"rpc": 7000, "master": 29500}}).pool_settings()
    assert (pool.service, pool.port) == ("rpc", 7000)


@pytest.mark.parametrize(
    ("pool", "key"),
    [
        ({"port": 1, "ports": {"a": 2}}, "pools.worker.ports"),
        ({"ports": {}}, "pools.worker.ports"),
        ({"ports": {"Bad_Name": 1}}, "pools.worker.ports.Bad_Name"),
        ({"ports": {"grpc": "1-0"}}, "pools.worker.ports.grpc"),
        ({"ports": {"a": 1}, "service": "b"}, "pools.worker.service"),
    ],
)
def test_bad_named_ports_name_the_key(pool: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(pool)
    assert info.value.key == key


def test_previous_release_claims_publish_their_port_as_app() -> None:
    pool = load({"port": 2222}).pool_settings()
    assert pool.member_port({"app": 2222}) == 2222
    assert pool.member_port({}) == 2222
    assert load({"port": "auto"}).pool_settings().member_port({}) is None


def test_port_flag_sets_the_pools_port_and_the_primary_of_named_ports() -> None:
    s = config.load(cli={"pattern": "w{{.ID}}.x.internal.", "port": "auto"}, environ={})
    assert s.pool_settings().ports == (PortSpec("grpc"),)
    raw = {"pools": {"w": {"pattern": "w{{.ID}}.x.", "ports": {"grpc": 1, "master": 2}}}}
    s = config.load(cli={"port": "3000-3010"}, raw=raw, environ={})
    assert s.pool_settings().ports == (PortSpec("grpc", lo=3000, hi=3010), PortSpec("master", 2))


def test_prefer_slot_number_env_and_file(tmp_path: Path) -> None:
    assert load({}, prefer_slot=3).prefer_slot == 3
    assert load({}, prefer_slot="3").prefer_slot == 3
    assert load({}, {"SLURM_PROCID": "5"}, prefer_slot="env:SLURM_PROCID").prefer_slot == 5
    (tmp_path / "index").write_text("6\n")
    assert load({}, prefer_slot=f"file:{tmp_path / 'index'}").prefer_slot == 6
    assert load({}).prefer_slot is None and load({}).prefer == "fallback"
    assert load({}, prefer="require").prefer == "require"
    s = config.load(raw={}, environ={"IDSTORE_PREFER_SLOT": "2", "IDSTORE_PREFER": "require"})
    assert (s.prefer_slot, s.prefer) == (2, "require")


@pytest.mark.parametrize(
    ("value", "environ", "why"),
    [
        (8, {}, "outside the pool's slots 0..7"),
        (-1, {}, "outside"),
        ("env:NOPE", {}, "NOPE is not set"),
        ("env:IDX", {"IDX": ""}, "IDX is not set"),
        ("env:IDX", {"IDX": "two"}, "not a whole number"),
        ("file:/nonexistent/index", {}, "cannot read /nonexistent/index"),
        ("three", {}, "slot number, env:NAME or file:PATH"),
    ],
)
def test_bad_hints_are_one_line_errors_naming_the_key(
    value: object, environ: dict[str, str], why: str
) -> None:
    with pytest.raises(ConfigError, match="prefer_slot") as info:
        load({}, environ, prefer_slot=value)
    assert why in str(info.value) and "\n" not in str(info.value)


def test_prefer_must_be_fallback_or_require() -> None:
    with pytest.raises(ConfigError, match="prefer"):
        load({}, prefer="maybe")


def test_default_pattern_lives_under_internal_and_tf_local_still_works() -> None:
    s = config.load(raw={}, environ={})
    assert s.pool_settings().name_of(0) == "node0.idstore.internal."
    assert s.dns.zone == "idstore.internal."
    s = config.load(raw={"pools": {"w": {"pattern": "worker{{.ID}}.tf.local."}}}, environ={})
    assert s.dns.zone == "tf.local."


@pytest.mark.parametrize("pattern", ["w{{.ID}}", "w{{.ID}}.", "{{.ID}}"])
def test_a_pattern_with_no_zone_above_the_name_is_an_error(pattern: str) -> None:
    with pytest.raises(ConfigError, match=r"pools\.w\.pattern") as info:
        config.load(raw={"pools": {"w": {"pattern": pattern}}}, environ={})
    assert "no zone above it" in str(info.value)


def test_cli_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for args in (
        ["--pattern", "w{{.ID}}"],
        ["--pattern", "w{{.ID}}.x.internal.", "--port", "9-1"],
        ["--pattern", "w{{.ID}}.x.internal.", "--prefer-slot", "env:IDSTORE_TEST_UNSET"],
        ["--pattern", "w{{.ID}}.x.internal.", "--prefer-slot", f"file:{tmp_path}/none"],
    ):
        assert main(["whoami", "--backend", "memory", *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("idstore: error: invalid "), err


def test_config_check_shows_ports_and_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        'prefer_slot = 2\n[pools.worker]\npattern = "worker{{.ID}}.tf.internal."\n'
        'ports = { grpc = "20000-20999", master = 29500 }\n'
    )
    assert main(["config", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert '"grpc": "20000-20999"' in out and '"master": "29500"' in out
    assert '"prefer_slot": 2' in out
