"""xenvcpu: manage the virtual CPUs of running Xen domains.

The CPU map type is :class:`CpuMap` (little-endian bytes, the ``xl``/``virsh`` cpulist
grammar, set algebra). Errors are in :mod:`xenvcpu.errors`.
"""

from __future__ import annotations

from xenvcpu._native import MAX_WIDTH, CpuMap
from xenvcpu.errors import CpuListError, XenvcpuError

__all__ = ["MAX_WIDTH", "CpuListError", "CpuMap", "XenvcpuError", "__version__"]

try:
    from importlib.metadata import version as _version

    __version__ = _version("xenvcpu")
except Exception:  # pragma: no cover - running from a source tree without metadata
    __version__ = "0+unknown"
