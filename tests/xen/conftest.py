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
# every guest the lab can start: kind (as in XEN_TEST_GUESTS) -> xl name (lab/<name>.cfg)
LAB_GUESTS = {"pv": GUEST, "pvh": "domu-pvh", "hvm": "domu-hvm"}
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


def started_guests() -> list[str]:
    """The guest kinds dom0 started in this run (XEN_TEST_GUESTS on the host; "pv" by default)."""
    return os.environ.get("XENVCPU_GUESTS", "pv").replace(",", " ").split()


def _lab_guest(kind: str) -> str:
    name = LAB_GUESTS[kind]
    if kind not in started_guests():
        pytest.skip(
            f"the lab did not start its {kind.upper()} guest {name!r} in this run "
            f"(started: {' '.join(started_guests()) or 'none'}): "
            f"add {kind} to XEN_TEST_GUESTS (e.g. XEN_TEST_GUESTS=pv,pvh,hvm)"
        )
    names = [d.name for d in xl_module.domains()]
    assert name in names, (
        f"the lab's {kind.upper()} guest {name!r} is not running (xl list: {names})"
    )
    return name


@pytest.fixture(scope="session")
def guest() -> str:
    """Name of the running PV guest "domu" (vcpus=2, maxvcpus=4; lab/domu.cfg).

    Skipped when the run did not start it (XEN_TEST_GUESTS without pv, e.g. a PVH- or
    HVM-only subset); fails if it was started but is not running."""
    return _lab_guest("pv")


@pytest.fixture(scope="session")
def pvh_guest() -> str:
    """Name of the running PVH guest "domu-pvh" (vcpus=2, maxvcpus=4; lab/domu-pvh.cfg).

    Skipped when the run did not start it (XEN_TEST_GUESTS without pvh); fails if it was
    started but is not running. `xl.domid(pvh_guest)` gives its id."""
    return _lab_guest("pvh")


@pytest.fixture(scope="session")
def hvm_guest() -> str:
    """Name of the running HVM guest "domu-hvm" (vcpus=2, maxvcpus=4, qemu-xen device model
    whose QMP socket is qmp.QMP_PATH; lab/domu-hvm.cfg). Its vCPUs can be added (QMP
    device_add) but never removed, so a test that adds some leaves them there. Under TCG it
    needs minutes to boot (docs/lab.md), so only XEN_TEST_GUESTS=...,hvm starts it.

    Skipped when the run did not start it (XEN_TEST_GUESTS without hvm); fails if it was
    started but is not running."""
    return _lab_guest("hvm")


HVM_PAUSED = "domu-hvm-paused"


@pytest.fixture(scope="module")
def hvm_paused() -> Iterator[str]:
    """Name of a paused HVM guest made for the test module: lab/domu-hvm.cfg created with
    `xl create -p` as "domu-hvm-paused" (its device model runs and answers QMP, its vCPUs never
    run), destroyed after the module's last test, so other modules never see it. Cheap (~3 s),
    so default runs have it: the toolstack side of HVM vCPU changes (QMP device_add, xenstore)
    does not need the guest to run. Skipped when Xen offers no HVM (an XEN_TEST_CPU without
    svm)."""
    caps = str(xl_module.info()["virt_caps"]).split()
    if "hvm" not in caps:
        pytest.skip(f"Xen offers no HVM guests here (virt_caps: {' '.join(caps)}): XEN_TEST_CPU")
    log = xl_module.CONSOLE_LOG.format(name=HVM_PAUSED)
    xl_module.xl(
        "create",
        "-p",
        "/xenvcpu-lab/domu-hvm.cfg",
        f'name="{HVM_PAUSED}"',
        f'serial="file:{log}"',
        timeout=120,
    )
    try:
        yield HVM_PAUSED
    finally:
        xl_module.xl("destroy", HVM_PAUSED, timeout=120)


@pytest.fixture
def restore_affinity() -> Iterator[AffinitySaver]:
    """Pin freely; every vCPU touched via restore_affinity.save(dom, vcpu) is reset afterwards."""
    saver = AffinitySaver()
    yield saver
    saver.restore()
