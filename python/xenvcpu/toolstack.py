"""The toolstacks of the native backends: names and the online-vCPU request.

Domain names, cpupool names and each vCPU's ``availability`` live in xenstore on a real
host (xen-interfaces.md §5.4); a simulated host keeps its own. Both satisfy
:class:`xenvcpu._backend.Toolstack`.
"""

from __future__ import annotations

from collections.abc import Set
from typing import TYPE_CHECKING

from xenvcpu._limits import MAX_DOMAIN_NAME
from xenvcpu.daemon import vcpus as _vcpus
from xenvcpu.daemon.xenstore import XenstoreClient
from xenvcpu.errors import XenstoreError

if TYPE_CHECKING:
    from xenvcpu._native import SimControl

#: Xen's run directory (XEN_RUN_DIR): where libxl's QMP sockets ``qmp-libxl-<domid>`` are.
XEN_RUN_DIR = "/var/run/xen"
#: Xen's lib directory (XEN_LIB_DIR): where libxl keeps its per-domain lock files.
XEN_LIB_DIR = "/var/lib/xen"

__all__ = ["XEN_LIB_DIR", "XEN_RUN_DIR", "SimToolstack", "XenstoreToolstack"]

# How much of a /libxl/<domid>/type value is kept (its values are "pv", "pvh", "hvm").
_RECORD_SHOWN = 64


class SimToolstack:
    """The simulated host's toolstack (its guests follow availability after a delay).

    Its HVM domains have a device model only where ``run_dir`` names a directory with a
    QEMU's QMP socket ``qmp-libxl-<domid>`` (the URI's ``run_dir=``): tests can put a real
    QEMU behind a simulated HVM domain. Without ``run_dir`` there is none, so a simulated
    host never talks to the QEMUs of a real host it happens to run on.
    """

    name = "sim"

    def __init__(
        self, sim: SimControl, run_dir: str | None = None, lib_dir: str | None = None
    ) -> None:
        self._sim = sim
        self.run_dir = run_dir
        self.lib_dir = lib_dir if lib_dir is not None else run_dir

    def guest_record(self, domid: int) -> str | None:
        r = self._sim.guest_record(domid)
        return None if r is None else r[0]

    def has_device_model(self, domid: int) -> bool:
        r = self._sim.guest_record(domid)
        return r is not None and r[1]

    def close(self) -> None:
        """Nothing to close: the simulated host lives in this process."""

    def domain_names(self) -> dict[int, str]:
        return dict(self._sim.domain_names())

    def pool_name(self, pool: int) -> str | None:
        return self._sim.pool_name(pool)

    def set_availability(self, domid: int, max_vcpus: int, online: Set[int]) -> None:
        self._sim.set_availability(domid, [v in online for v in range(max_vcpus)])

    def availability(self, domid: int) -> dict[int, bool]:
        a = self._sim.availability(domid) or []
        return dict(enumerate(a))


class XenstoreToolstack:
    """xenstored on the local host (socket, or the xenbus device), opened on first use;
    libxl's QMP sockets in ``run_dir`` and its lock files in ``lib_dir``."""

    name = "xenstore"

    def __init__(
        self, path: str | None = None, run_dir: str | None = None, lib_dir: str | None = None
    ) -> None:
        self._path = path
        self._xs: XenstoreClient | None = None
        self.run_dir = run_dir if run_dir is not None else XEN_RUN_DIR
        self.lib_dir = lib_dir if lib_dir is not None else XEN_LIB_DIR

    def guest_record(self, domid: int) -> str | None:
        """``/libxl/<domid>/type`` ("pv", "pvh", "hvm"), or None where it is missing."""
        raw = self.client().try_read(f"/libxl/{int(domid)}/type")
        if raw is None:
            return None
        # a few letters: anything much longer is no type, and goes into messages clipped
        text = raw[:_RECORD_SHOWN].strip(b"\0").decode("ascii", "replace")
        return text + "..." if len(raw) > _RECORD_SHOWN else text

    def has_device_model(self, domid: int) -> bool:
        """Whether ``/local/domain/0/device-model/<domid>`` exists."""
        return self.client().exists(f"/local/domain/0/device-model/{int(domid)}")

    def client(self) -> XenstoreClient:
        if self._xs is None or self._xs.closed:
            self._xs = XenstoreClient(self._path)
        return self._xs

    def close(self) -> None:
        """Close the xenstored connection (a later call opens a new one)."""
        if self._xs is not None:
            self._xs.close()

    def __del__(self) -> None:
        # A Host dropped without close() must not leak its xenstored socket.
        xs = getattr(self, "_xs", None)
        if xs is not None and not xs.closed:
            xs.close()

    def domain_names(self) -> dict[int, str]:
        """Names from ``/local/domain/<id>/name`` (:func:`~xenvcpu.daemon.vcpus.list_domains`:
        bounded, bogus entries skipped); an unreadable xenstore gives no names."""
        try:
            return {d: n for d, n in _vcpus.list_domains(self.client()).items() if n}
        except (XenstoreError, OSError):
            return {}

    def pool_name(self, pool: int) -> str | None:
        try:
            raw = self.client().try_read(f"/local/pool/{int(pool)}/name")
        except (XenstoreError, OSError):
            return None
        if not raw or len(raw) > MAX_DOMAIN_NAME:  # longer than any value xenstored holds
            return None
        return raw.decode("utf-8", "replace")

    def set_availability(self, domid: int, max_vcpus: int, online: Set[int]) -> None:
        _vcpus.write_availability(self.client(), domid, max_vcpus, online)

    def availability(self, domid: int) -> dict[int, bool]:
        return _vcpus.read_availability(self.client(), domid)
