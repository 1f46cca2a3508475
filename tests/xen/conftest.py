"""Tests under tests/xen/ run only inside the Xen lab's dom0 (`make xen-test`, docs/lab.md).

Outside the lab (no XENVCPU_LAB=1 from the lab's dom0 init, or no /dev/xen/privcmd) this
conftest reports every test module here as skipped with the reason SKIP_REASON without
importing it, so the fast suite on the host collects tests/xen harmlessly even though the test
modules import things only dom0 has (the installed wheel, `xl`). Inside the lab every test
collected here gets the `xen` marker automatically (the lab runs `pytest -m xen`), so a new
test file needs nothing special.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

SKIP_REASON = "needs the Xen lab: run `make xen-test`"
GUEST = "domu"  # the lab's PV guest: vcpus=2, maxvcpus=4 (tests/xen/lab/domu.cfg)
HERE = Path(__file__).resolve().parent


def in_lab() -> bool:
    """True inside the lab's dom0: set up by tests/xen/lab/dom0-init.sh, real privcmd present."""
    return os.environ.get("XENVCPU_LAB") == "1" and os.path.exists("/dev/xen/privcmd")


# `import xl` from the test modules, whatever pytest's import mode
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import xl as xl_module  # noqa: E402
from xl import AffinitySaver  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "xen: needs a real Xen dom0 (the lab: `make xen-test`, docs/lab.md)"
    )


class _NeedsLab(pytest.Module):
    """A test module collected outside the lab: skipped as a whole, never imported."""

    def collect(self) -> list[pytest.Item | pytest.Collector]:
        pytest.skip(SKIP_REASON)


def pytest_pycollect_makemodule(
    module_path: Path, parent: pytest.Collector
) -> pytest.Module | None:
    if not in_lab() and HERE in Path(module_path).resolve().parents:
        return _NeedsLab.from_parent(parent, path=module_path)
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.xen)


@pytest.fixture(scope="session")
def xl() -> ModuleType:
    """The `xl` helpers (tests/xen/xl.py): info(), domains(), vcpus(), vcpu_pin(), vcpu_set()..."""
    return xl_module


@pytest.fixture(scope="session")
def nr_cpus() -> int:
    """Number of pCPUs Xen reports (`xl info` nr_cpus; 4 in the lab)."""
    return xl_module.nr_cpus()


@pytest.fixture(scope="session")
def guest() -> str:
    """Name of the running PV guest (vcpus=2, maxvcpus=4); fails if it is not running."""
    names = [d.name for d in xl_module.domains()]
    assert GUEST in names, f"the lab's PV guest {GUEST!r} is not running (xl list: {names})"
    return GUEST


@pytest.fixture
def restore_affinity() -> Iterator[AffinitySaver]:
    """Pin freely; every vCPU touched via restore_affinity.save(dom, vcpu) is reset afterwards."""
    saver = AffinitySaver()
    yield saver
    saver.restore()
