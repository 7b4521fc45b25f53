"""idetcd Corefiles mapped onto idstore settings, and `config check` on them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from idstore import cli, config, corefile
from idstore.errors import ConfigError

IDETCD_README = """
. {
    idetcd {
        endpoint http://10.0.0.2:2379 http://10.0.0.3:2379
        limit 5
        pattern worker{{.ID}}.tf.local.
    }
}
"""


def settings(text: str) -> config.Settings:
    return config.load(raw=corefile.parse(text).raw, environ={})


def test_the_idetcd_readme_example_keeps_its_names() -> None:
    s = settings(IDETCD_README)
    assert s.backend == "etcd"
    assert s.store.endpoints == ("http://10.0.0.2:2379", "http://10.0.0.3:2379")
    (pool,) = s.pools
    assert (pool.name, pool.first, pool.limit) == ("worker", 1, 5)
    assert [pool.name_of(i) for i in pool.slots()] == [f"worker{i}.tf.local." for i in range(1, 6)]
    assert s.dns.zone == "tf.local."
    assert s.dns.listen == (("0.0.0.0", 53),)  # CoreDNS's default port


def test_defaults_port_zone_and_sibling_plugins() -> None:
    text = """
    # a comment
    tf.local:1053 {
        errors
        log
        forward . 192.0.2.53 dns://192.0.2.54:5353
        prometheus :9253
        cache 30
        idetcd {
            pattern "node{{.ID}}.tf.local."
        }
    }
    """
    parsed = corefile.parse(text)
    assert parsed.ignored == ["cache (line 8)"]
    s = config.load(raw=parsed.raw, environ={})
    assert s.store.endpoints == ("http://localhost:2379",)  # idetcd's default
    assert s.dns.listen == (("0.0.0.0", 1053),)
    assert s.dns.zone == "tf.local."
    assert s.dns.forward == ("192.0.2.53", "192.0.2.54:5353")
    assert s.dns.log_queries is True
    assert s.http == ("0.0.0.0", 9253)
    assert s.pools[0].limit == 64


def test_a_one_line_block_parses() -> None:
    s = settings(". { idetcd { pattern w{{.ID}}.x. } }")
    assert s.pools[0].name_of(1) == "w1.x."


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (". {\n whoami\n}\n", "corefile"),
        (". {\n idetcd {\n  limit 5\n }\n}\n", "idetcd.pattern"),
        (". {\n idetcd {\n  pattern w{{.ID}}.x.\n  limit many\n }\n}\n", "idetcd.limit"),
        (". {\n idetcd {\n  pattern w{{.ID}}.x.\n  ttl 3\n }\n}\n", "idetcd.ttl"),
        (". {\n idetcd {\n  pattern w{{.ID}}.x.\n", "corefile"),
        (". {\n idetcd {\n  pattern w.x.\n }\n}\n", "pools.w.pattern"),
    ],
)
def test_errors_name_the_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        settings(text)
    assert e.value.key == key


def test_config_check_accepts_a_corefile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "Corefile"
    path.write_text(IDETCD_README)
    assert cli.main(["config", "check", str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["pools"]["worker"]["names"] == "worker1.tf.local. .. worker5.tf.local."
    assert out["backend"] == "etcd"


def test_config_check_bad_corefile_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "Corefile"
    path.write_text(". {\n idetcd {\n  limit 0\n  pattern w{{.ID}}.x.\n }\n}\n")
    assert cli.main(["config", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "idetcd.limit" in err


def test_corefile_and_config_together_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "Corefile"
    path.write_text(IDETCD_README)
    assert cli.main(["whoami", "--corefile", str(path), "--config", str(path)]) == 2
    assert "cannot be used together" in capsys.readouterr().err
