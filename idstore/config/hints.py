"""Slot hints: ``prefer_slot`` = a number, ``env:NAME`` or ``file:PATH``.

Schedulers hand out indexes (``SLURM_PROCID``, ``JOB_COMPLETION_INDEX``,
``NOMAD_ALLOC_INDEX``) and clouds a launch index, none of them promised unique; the
node claims the hinted slot through the store's atomic claim, so the index becomes
a guaranteed one. The hint is read once, when the configuration is loaded: a bad
hint is a configuration error (exit 2), never a surprise at claim time.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from idstore.errors import ConfigError

PREFER_MODES = ("fallback", "require")


def prefer_slot(value: Any, key: str, environ: Mapping[str, str], slots: range) -> int | None:
    """The hinted slot, checked against the pool's ``slots``; None when not set."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ConfigError(key, value, _ALLOWED)
    text = str(value).strip()
    if text.startswith("env:"):
        name = text[4:]
        if name not in environ or environ[name].strip() == "":
            raise ConfigError(key, value, f"environment variable {name} is not set")
        slot = _integer(environ[name], key, f"{name}={environ[name]!r} is not a whole number")
    elif text.startswith("file:"):
        path = text[5:]
        try:
            content = Path(path).read_text().strip()
        except (OSError, UnicodeDecodeError) as e:
            why = e.strerror if isinstance(e, OSError) else "not text"
            raise ConfigError(key, value, f"cannot read {path}: {why}") from None
        slot = _integer(content, key, f"{path} holds {content[:40]!r}, not a whole number")
    else:
        slot = _integer(text, key, _ALLOWED)
    if slot not in slots:
        raise ConfigError(
            key, value, f"slot {slot} is outside the pool's slots {slots.start}..{slots.stop - 1}"
        )
    return slot


def prefer_mode(value: Any, key: str) -> str:
    mode = str(value).strip().lower()
    if mode not in PREFER_MODES:
        raise ConfigError(key, value, "must be fallback (the default) or require")
    return mode


def _integer(text: str, key: str, why: str) -> int:
    text = text.strip()
    if not (text.isdigit() or (text.startswith("-") and text[1:].isdigit())):
        raise ConfigError(key, text, why)
    return int(text)


_ALLOWED = "must be a slot number, env:NAME or file:PATH"
