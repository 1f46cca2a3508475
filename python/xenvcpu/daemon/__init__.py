"""The daemon path: pure-Python clients for the Xen toolstack daemons.

* :mod:`xenvcpu.daemon.xenstore` -- xenstore wire-protocol client (socket or xenbus device).
* :mod:`xenvcpu.daemon.vcpus` -- change the online vCPUs of a running domain through
  xenstore (no hypercall can, xen-interfaces.md §3.7, §5.5), validation helpers, waiting for the
  guest.
* :mod:`xenvcpu.daemon.sxp` -- reader for xend's S-expressions.
* :mod:`xenvcpu.daemon.xend` -- legacy xend HTTP/SXP client (Xen <= 4.4 hosts).
* :mod:`xenvcpu.daemon.qmp` -- QMP client for QEMU, and vCPU hotplug of HVM guests whose
  device model is upstream QEMU.

Standard library only; nothing here imports the native module, so this package works
on hosts where ``xenvcpu._native`` cannot be loaded.
"""

from __future__ import annotations

__all__ = ["qmp", "sxp", "vcpus", "xend", "xenstore"]
