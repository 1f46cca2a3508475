#!/usr/bin/env python3
"""Seed ansible-test's pip bootstrap cache with an offline stand-in for get-pip.py.

``ansible-test sanity`` makes a virtual environment per test and bootstraps pip into it
with a get-pip.py it downloads from a host of its own, which this project's machines (and
its CI) cannot reach. ansible-test first looks in ``~/.ansible/test/cache/get_pip_<V>.py``;
this writes a stand-in there that installs the same pip from the Python's own ensurepip
and then the package index the machine already uses. The real script does the same job
(pip into an empty environment), so the sanity tests run as they would elsewhere.

Run with the Python that has ansible-core installed (`make ansible-sanity` does).
An existing cache file is left alone.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

STAND_IN = '''"""Offline stand-in for get-pip.py, written by xenvcpu's ansible/seed_get_pip.py.

Called as get-pip.py is: [pip options] pip==VERSION ...; installs pip with ensurepip, then
the requested packages with that pip.
"""
import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"],
                      stdout=subprocess.DEVNULL)
subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", *args])
'''


def main() -> int:
    from ansible_test._internal.python_requirements import get_venv_packages

    version = "{}.{}".format(*sys.version_info[:2])
    pip = get_venv_packages(SimpleNamespace(version=version))["pip"]  # type: ignore[arg-type]
    cache = Path(os.path.expanduser("~/.ansible/test/cache"))
    path = cache / f"get_pip_{pip.replace('.', '_')}.py"
    if path.exists():
        print(f"seed_get_pip: {path} exists, left alone")
        return 0
    cache.mkdir(parents=True, exist_ok=True)
    path.write_text(STAND_IN)
    print(f"seed_get_pip: wrote the offline stand-in {path} (pip {pip})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
