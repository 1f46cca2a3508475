from __future__ import annotations

import sys
from pathlib import Path

# The pure-Python baselines are the test suite's reference model.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
