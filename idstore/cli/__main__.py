"""``python -m idstore.cli``, as before the CLI became a package."""

import sys

from idstore.cli import main

sys.exit(main())
