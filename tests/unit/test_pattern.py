from __future__ import annotations

import pytest

from idstore.errors import ConfigError
from idstore.pattern import Pattern, check_name


def test_renders_idetcd_syntax_and_adds_the_trailing_dot() -> None:
    p = Pattern.parse("worker{{.ID}}.tf.local")
    assert p.render(0) == "worker0.tf.local."
    assert p.render(42) == "worker42.tf.local."
    assert Pattern.parse("Worker{{ .ID }}.TF.local.").render(3) == "worker3.tf.local."


def test_printf_width() -> None:
    p = Pattern.parse('w{{printf "%04d" .ID}}.tf.local.')
    assert p.render(7) == "w0007.tf.local."
    assert p.render(12345) == "w12345.tf.local."


def test_parent_is_the_zone() -> None:
    assert Pattern.parse("worker{{.ID}}.tf.local.").parent() == "tf.local."
    assert Pattern.parse("{{.ID}}.gpu.tf.local.").parent() == "gpu.tf.local."


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("worker.tf.local.", "must contain {{.ID}}"),
        ("worker{{.Name}}.tf.local.", "unsupported template action"),
        ("worker{{.ID}.tf.local.", "must contain"),
        ("worker{{.ID}}}}.tf.local.", "stray"),
    ],
)
def test_bad_patterns_name_the_key(source: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        Pattern.parse(source, "pools.worker.pattern")
    assert "pools.worker.pattern" in str(info.value) and fragment in str(info.value)


@pytest.mark.parametrize(
    ("source", "limit", "fragment"),
    [
        ("w{{.ID}}" + "a" * 62 + ".x.", 10, "at most 63"),
        ("w{{.ID}}." + "a.b" * 90, 1, "at most 253"),
        ("w_{{.ID}} .x.", 1, "may hold only"),
        ("-w{{.ID}}.x.", 1, "may not start"),
        ("w{{.ID}}..x.", 1, "may hold only"),
    ],
)
def test_invalid_rendered_names_are_rejected(source: str, limit: int, fragment: str) -> None:
    p = Pattern.parse(source)
    with pytest.raises(ConfigError) as info:
        p.validate(0, limit)
    assert fragment in str(info.value)


def test_width_growth_is_checked_at_the_last_slot() -> None:
    p = Pattern.parse("w{{.ID}}" + "a" * 61 + ".x.")  # w0aaa.. is 63 chars, w10aaa.. is 64
    p.validate(0, 10)
    with pytest.raises(ConfigError):
        p.validate(0, 11)


def test_check_name() -> None:
    assert check_name("worker0.tf.local.") is None
    assert check_name(".") is not None
