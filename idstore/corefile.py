"""Read an idetcd Corefile and turn it into idstore's configuration table.

idetcd (the 2018 CoreDNS plugin idstore replaces) was configured in a Corefile::

    . {
        idetcd {
            endpoint http://10.0.0.2:2379 http://10.0.0.3:2379
            limit 5
            pattern worker{{.ID}}.tf.local.
        }
    }

Mapping onto idstore (the same table a TOML file would give, so every check and error
message of ``idstore.config`` applies unchanged):

- ``endpoint A B ...`` -> ``backend = "etcd"``, ``endpoints = [A, B]`` (idetcd's default
  ``http://localhost:2379`` when absent);
- ``pattern P`` / ``limit N`` -> one pool named after the pattern (``worker``) with
  ``first = 1``: idetcd's IDs began at 1, and keeping that numbering keeps every name
  (``worker1`` .. ``worker5``) that scripts and peers already use;
- the server block's port (``.:53``; CoreDNS's default 53) -> ``dns.listen = 0.0.0.0:PORT``;
  a zone other than ``.`` -> ``dns.zone``;
- sibling plugins idstore has an equivalent for: ``forward . UPSTREAM...`` ->
  ``dns.forward``; ``log`` -> ``dns.log_queries``; ``prometheus [ADDR]`` / ``health
  [ADDR]`` -> ``http`` (one listener serves /metrics, /health and /ready); others are
  reported as ignored.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from idstore.config import pool_name_from_pattern
from idstore.errors import ConfigError

IDETCD_DEFAULT_ENDPOINT = "http://localhost:2379"
IDETCD_FIRST_ID = 1
COREDNS_DEFAULT_PORT = 53
_HTTP_DEFAULTS = {"prometheus": 9153, "health": 8080}  # CoreDNS's default ports
_IGNORED_QUIETLY = {"errors", "whoami", "ready", "reload", "loadbalance"}


@dataclass
class Directive:
    name: str
    args: list[str]
    line: int
    body: list[Directive] = field(default_factory=list)


@dataclass
class Corefile:
    """The idstore table a Corefile maps to, and what of it idstore does not use."""

    raw: dict[str, Any]
    ignored: list[str] = field(default_factory=list)


def looks_like_corefile(path: str | Path) -> bool:
    """A file named Corefile*, or whose text has an ``idetcd {`` block."""
    p = Path(path)
    if p.name.lower().startswith("corefile"):
        return True
    try:
        text = p.read_text(errors="replace")
    except OSError:
        return False
    return re.search(r"^\s*idetcd\s*\{", text, re.MULTILINE) is not None


def read(path: str | Path) -> Corefile:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError("corefile", str(path), "no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError("corefile", str(path), f"cannot be read: {e}") from None
    return parse(text)


def parse(text: str) -> Corefile:
    blocks = _parse_blocks(_tokens(text))
    found = [(keys, d) for keys, body in blocks for d in body if d.name == "idetcd"]
    if len(found) != 1:
        raise ConfigError(
            "corefile",
            f"{len(found)} idetcd blocks",
            "must hold exactly one idetcd { endpoint ... limit ... pattern ... } block",
        )
    keys, idetcd = found[0]
    raw: dict[str, Any] = {"backend": "etcd"}
    _map_idetcd(idetcd, raw)
    _map_server_keys(keys, raw)
    out = Corefile(raw)
    body = next(body for k, body in blocks if k is keys)
    for d in body:
        if d is not idetcd:
            _map_sibling(d, out)
    return out


# --------------------------------------------------------------------------- mapping


def _map_idetcd(block: Directive, raw: dict[str, Any]) -> None:
    values: dict[str, list[str]] = {}
    for d in block.body:
        if d.name not in ("endpoint", "limit", "pattern"):
            raise ConfigError(
                f"idetcd.{d.name}", " ".join(d.args), "unknown; known: endpoint, limit, pattern"
            )
        if not d.args:
            raise ConfigError(f"idetcd.{d.name}", "", f"needs a value (line {d.line})")
        values[d.name] = d.args
    if "pattern" not in values:
        raise ConfigError("idetcd.pattern", None, "is required, e.g. worker{{.ID}}.tf.local.")
    # An unquoted {{printf "%03d" .ID}} splits at its spaces: idetcd saw one argument.
    pattern = " ".join(values["pattern"])
    pool: dict[str, Any] = {"pattern": pattern, "first": IDETCD_FIRST_ID}
    if "limit" in values:
        limit = values["limit"][0]
        if not limit.isdigit() or int(limit) < 1 or len(values["limit"]) > 1:
            raise ConfigError("idetcd.limit", " ".join(values["limit"]), "must be a number >= 1")
        pool["limit"] = int(limit)
    endpoints = [e for a in values.get("endpoint", []) for e in a.split(",") if e]
    raw["endpoints"] = endpoints or [IDETCD_DEFAULT_ENDPOINT]
    raw["pools"] = {pool_name_from_pattern(pattern): pool}


def _map_server_keys(keys: list[str], raw: dict[str, Any]) -> None:
    """``.``, ``.:53``, ``dns://tf.local:1053``: the zone and port of the server block."""
    key = re.sub(r"^dns://", "", keys[0]) if keys else "."
    zone, _, port = key.rpartition(":") if ":" in key else (key, "", "")
    if port and not port.isdigit():
        raise ConfigError("corefile server block", keys[0], "must be ZONE or ZONE:PORT")
    dns: dict[str, Any] = {"listen": [f"0.0.0.0:{port or COREDNS_DEFAULT_PORT}"]}
    if zone not in ("", "."):
        dns["zone"] = zone
    raw["dns"] = dns


def _map_sibling(d: Directive, out: Corefile) -> None:
    dns = out.raw["dns"]
    if d.name == "forward" and len(d.args) >= 2:
        dns["forward"] = [_upstream(a) for a in d.args[1:]]
    elif d.name == "log":
        dns["log_queries"] = True
    elif d.name in _HTTP_DEFAULTS:
        # prometheus wins over health: both are the same listener in idstore.
        if d.name == "prometheus" or "http" not in out.raw:
            out.raw["http"] = _http_address(d.args[0] if d.args else "", _HTTP_DEFAULTS[d.name])
    elif d.name not in _IGNORED_QUIETLY:
        out.ignored.append(f"{d.name} (line {d.line})")


def _upstream(text: str) -> str:
    text = re.sub(r"^dns://", "", text)
    return "resolv.conf" if text == "/etc/resolv.conf" else text


def _http_address(text: str, default_port: int) -> str:
    host, _, port = text.rpartition(":") if text else ("", "", "")
    return f"{host or '0.0.0.0'}:{port or default_port}"


# --------------------------------------------------------------------------- syntax


@dataclass
class _Token:
    text: str
    line: int
    first: bool  # first token on its line: starts a directive


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    for n, line in enumerate(text.splitlines(), 1):
        lexer = shlex.shlex(line, posix=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        try:
            words = list(lexer)
        except ValueError as e:
            raise ConfigError("corefile", line.strip(), f"line {n}: {e}") from None
        out += [_Token(w, n, i == 0) for i, w in enumerate(words)]
    return out


def _parse_blocks(tokens: list[_Token]) -> list[tuple[list[str], list[Directive]]]:
    """Server blocks: ``KEY... {`` directives ``}``."""
    blocks: list[tuple[list[str], list[Directive]]] = []
    pos = 0
    while pos < len(tokens):
        keys: list[str] = []
        while pos < len(tokens) and tokens[pos].text != "{":
            keys.append(tokens[pos].text)
            pos += 1
        if pos >= len(tokens):
            raise ConfigError("corefile", " ".join(keys), "a server block needs { ... }")
        body, pos = _parse_body(tokens, pos + 1)
        blocks.append((keys, body))
    return blocks


def _parse_body(tokens: list[_Token], pos: int) -> tuple[list[Directive], int]:
    body: list[Directive] = []
    while pos < len(tokens):
        tok = tokens[pos]
        if tok.text == "}":
            return body, pos + 1
        d = Directive(tok.text, [], tok.line)
        pos += 1
        while pos < len(tokens) and not tokens[pos].first and tokens[pos].text not in ("{", "}"):
            d.args.append(tokens[pos].text)
            pos += 1
        if pos < len(tokens) and tokens[pos].text == "{" and tokens[pos].line == d.line:
            d.body, pos = _parse_body(tokens, pos + 1)
        body.append(d)
    raise ConfigError("corefile", "{", "is never closed with }")
