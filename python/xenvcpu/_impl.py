"""The one place that imports the native module ``xenvcpu._native``, or falls back.

With the native module: ``CpuMap``, ``VcpuInfo``, ``DomainInfo`` and ``Hypervisor`` are
the Rust ones. Without it (no wheel for this platform, a broken build, a source tree):
``CpuMap``/``VcpuInfo``/``DomainInfo`` are the pure-Python equivalents
(:mod:`xenvcpu._pycpumap`, :mod:`xenvcpu._pytypes`), ``HAVE_NATIVE`` is False,
``NATIVE_ERROR`` says why, and importing xenvcpu emits one :class:`RuntimeWarning`.
What still works then: ``xend+unix://`` / ``xend+http://`` URIs (Xen <= 4.4) and the
``xenstore:///`` backend; hypercalls (``xen:///system``) and ``sim:///`` need the module.

To silence the warning where the fallback is expected::

    warnings.filterwarnings("ignore", "xenvcpu: the native module", RuntimeWarning)
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

__all__ = [
    "HAVE_NATIVE",
    "MAX_WIDTH",
    "NATIVE_ERROR",
    "CpuMap",
    "DomainInfo",
    "Hypervisor",
    "VcpuInfo",
    "fallback_message",
]

if TYPE_CHECKING:
    # Type checkers see the native API (_native.pyi); the fallback classes match it.
    from xenvcpu._native import MAX_WIDTH, CpuMap, DomainInfo, Hypervisor, VcpuInfo

    #: True when xenvcpu._native loaded.
    HAVE_NATIVE: bool
    #: Why xenvcpu._native did not load ("ExcType: message"), or None.
    NATIVE_ERROR: str | None
else:
    try:
        from xenvcpu._native import MAX_WIDTH, CpuMap, DomainInfo, Hypervisor, VcpuInfo
    except ImportError as exc:
        NATIVE_ERROR = f"{type(exc).__name__}: {exc}"
        from xenvcpu._pycpumap import MAX_WIDTH, CpuMap
        from xenvcpu._pytypes import DomainInfo, VcpuInfo

        Hypervisor = None
    else:
        NATIVE_ERROR = None
    HAVE_NATIVE = NATIVE_ERROR is None


def fallback_message() -> str:
    """What is missing and what still works (the text of the import warning)."""
    return (
        f"xenvcpu: the native module xenvcpu._native cannot be loaded ({NATIVE_ERROR}); "
        "hypercalls (xen:///system: vCPU info, pinning) and the simulator (sim:///) are "
        "unavailable. Still working, in pure Python: xend URIs for Xen <= 4.4 hosts "
        "(xend+unix:///var/lib/xend/xend-socket, xend+http://HOST:8000), the xenstore:/// "
        "backend (domain list, online vCPUs) and CpuMap"
    )


if not HAVE_NATIVE:
    warnings.warn(fallback_message(), RuntimeWarning, stacklevel=2)
