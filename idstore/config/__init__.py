"""Configuration: one TOML file identical on every node, plus IDSTORE_* and CLI overrides.

Precedence: command-line flags > environment > file > defaults. Every invalid value
raises ConfigError naming the key (as written in the file, e.g. ``pools.worker.limit``),
the value and what is allowed.

- schema.py: the settings types (Settings, PoolSettings) and the keys a file may hold;
- dns.py: the whole ``[dns]`` section (DnsSettings, its keys and checks);
- loading.py: file, environment and flags merged (``load``);
- build.py: the merged table checked into Settings;
- values.py: checks of single values (numbers, lists, HOST:PORT).
"""

from idstore.backends.base import MIN_TTL
from idstore.config.build import default_node_id, pool_name_from_pattern
from idstore.config.dns import MAX_UDP, DnsSettings
from idstore.config.loading import ENV_VARS, env_overrides, load, read_file
from idstore.config.schema import DEFAULT_PATTERN, PoolSettings, Settings
from idstore.config.values import parse_hostport

__all__ = [
    "DEFAULT_PATTERN",
    "ENV_VARS",
    "MAX_UDP",
    "MIN_TTL",
    "DnsSettings",
    "PoolSettings",
    "Settings",
    "default_node_id",
    "env_overrides",
    "load",
    "parse_hostport",
    "pool_name_from_pattern",
    "read_file",
]
