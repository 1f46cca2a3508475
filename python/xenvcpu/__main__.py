import sys

from xenvcpu.cli import main

sys.exit(main())
