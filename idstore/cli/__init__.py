"""The ``idstore`` command.

Exit status: 0 success, 1 runtime failure (store unreachable, no slot), 2 bad usage or
configuration — always a one-line message, never a traceback.

- parser.py: every subcommand and its flags;
- common.py: exit codes, messages, settings from the flags;
- serve.py: ``serve``; cluster.py: ``whoami``, ``wait``, ``env`` (reading through
  reader.py: the local server's /status or the store); store.py: ``list``,
  ``backends``; config_check.py: ``config check``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from idstore.cli.common import EXIT_FAIL, EXIT_OK, EXIT_USAGE, UsageError, fail, settings_from
from idstore.cli.config_check import effective
from idstore.cli.parser import build_parser
from idstore.cli.store import print_claims
from idstore.errors import BackendNotFound, ConfigError, IdstoreError

__all__ = [
    "EXIT_FAIL",
    "EXIT_OK",
    "EXIT_USAGE",
    "build_parser",
    "effective",
    "main",
    "print_claims",
    "settings_from",
]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        code: int = args.func(args)
        return code
    except UsageError as e:
        fail(f"{e} (see 'idstore --help')")
        return EXIT_USAGE
    except (ConfigError, BackendNotFound) as e:
        fail(str(e))
        return EXIT_USAGE
    except IdstoreError as e:
        fail(str(e))
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130
