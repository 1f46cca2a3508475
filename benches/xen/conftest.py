"""Benchmarks on real Xen: they run only inside the lab's dom0 (`make xen-bench`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SKIP_REASON = "needs the Xen lab: run `make xen-bench` (or `make xen-test` for a smoke run)"


def in_lab() -> bool:
    return os.environ.get("XENVCPU_LAB") == "1" and os.path.exists("/dev/xen/privcmd")


class _NeedsLab(pytest.Module):
    def collect(self) -> list[pytest.Item]:
        pytest.skip(SKIP_REASON)


def pytest_pycollect_makemodule(
    module_path: Path, parent: pytest.Collector
) -> pytest.Module | None:
    if not in_lab() and HERE in Path(module_path).resolve().parents:
        return _NeedsLab.from_parent(parent, path=module_path)
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The lab runs `pytest -m xen`: these belong to it like tests/xen.
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.xen)
