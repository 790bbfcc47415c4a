"""``python -m cli ARGS`` is ``atom ARGS``."""

import sys

from cli.main import main

sys.exit(main())
