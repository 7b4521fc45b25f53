"""Name patterns in idetcd's Go-template syntax: ``worker{{.ID}}.tf.local.``.

Supported actions: ``{{.ID}}`` and a zero-padded width, ``{{printf "%03d" .ID}}`` (for
pools whose names should sort). Anything else inside ``{{ }}`` is rejected rather than
silently rendered wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from idstore.errors import ConfigError

_ACTION = re.compile(r"\{\{(.*?)\}\}")
_PLAIN_ID = re.compile(r"^\s*\.ID\s*$")
_PRINTF_ID = re.compile(r'^\s*printf\s+"%(0?\d*)d"\s+\.ID\s*$')
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
MAX_NAME = 253  # RFC 1035: 255 octets on the wire = 253 characters in text form


def normalize_name(name: str) -> str:
    """Lower-case, absolute (trailing dot) form of a domain name."""
    name = name.strip().lower()
    return name if name.endswith(".") else name + "."


def check_name(name: str) -> str | None:
    """Why ``name`` (absolute) is not a valid host name, or None if it is."""
    text = name.rstrip(".")
    if not text:
        return "the name is empty"
    if len(text) > MAX_NAME:
        return f"{text[:40]}... is {len(text)} characters long (at most {MAX_NAME})"
    for label in text.split("."):
        if len(label) > 63:
            return f"label {label[:20]}... is {len(label)} characters long (at most 63)"
        if not _LABEL.match(label):
            return (
                f"label {label!r} may hold only letters, digits, '-' and '_', "
                "and may not start or end with '-'"
            )
    return None


@dataclass(frozen=True)
class Pattern:
    """A parsed pattern; ``render(7)`` gives ``worker7.tf.local.``."""

    source: str
    _parts: tuple[str, ...]  # literal text around the actions (len = actions + 1)
    _widths: tuple[str, ...]  # printf flags+width of each action ("" for plain {{.ID}})

    @classmethod
    def parse(cls, source: str, key: str = "pattern") -> Pattern:
        text = source.strip()
        parts: list[str] = []
        widths: list[str] = []
        pos = 0
        for m in _ACTION.finditer(text):
            inner = m.group(1)
            if _PLAIN_ID.match(inner):
                widths.append("")
            elif pm := _PRINTF_ID.match(inner):
                widths.append(pm.group(1))
            else:
                raise ConfigError(
                    key,
                    source,
                    f"unsupported template action {m.group(0)!r}; "
                    'use {{.ID}} or {{printf "%03d" .ID}}',
                )
            parts.append(text[pos : m.start()])
            pos = m.end()
        parts.append(text[pos:])
        if not widths:
            raise ConfigError(key, source, "must contain {{.ID}}, e.g. 'worker{{.ID}}.tf.local.'")
        if "{{" in "".join(parts) or "}}" in "".join(parts):
            raise ConfigError(key, source, "has an unterminated '{{' or a stray '}}'")
        return cls(source, tuple(parts), tuple(widths))

    def render(self, slot: int) -> str:
        out = [self._parts[0]]
        for width, literal in zip(self._widths, self._parts[1:], strict=True):
            out.append(f"{slot:{width}d}" if width else str(slot))
            out.append(literal)
        return normalize_name("".join(out))

    def validate(self, first: int, limit: int, key: str = "pattern") -> None:
        """Reject a pattern whose names for slots first..first+limit-1 are not valid."""
        # Names only grow with the number of digits, so the extremes cover every slot.
        for slot in {first, first + limit - 1}:
            if why := check_name(self.render(slot)):
                raise ConfigError(key, self.source, f"renders {self.render(slot)!r}: {why}")
        if self.render(first) == self.render(first + 1):
            raise ConfigError(key, self.source, "renders the same name for every slot")

    def parent(self) -> str:
        """The domain the names live in: the rendered name minus its first label."""
        name = self.render(0)
        return name.split(".", 1)[1] if name.count(".") > 1 else "."
