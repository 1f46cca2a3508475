"""``python -m xenvcpu``: the ``xenvcpu`` command (for hosts where the script is not on PATH)."""

import sys

from xenvcpu.cli import main

sys.exit(main())
