import sys

from idstore.cli import main

sys.exit(main())
