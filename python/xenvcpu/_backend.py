"""What :class:`~xenvcpu.host.Host` needs from a hypervisor backend, as Protocols.

The native ``Hypervisor`` (privcmd, sim) satisfies :class:`HypervisorBackend`; so do the
pure-Python backends of :mod:`xenvcpu.daemon.xend_backend` and
:mod:`xenvcpu.daemon.xenstore_backend`. :class:`ListSnapshot` is the pure-Python
counterpart of the native columnar ``Snapshot``.
"""

from __future__ import annotations

from array import array
from typing import Protocol, Union

from xenvcpu._impl import CpuMap, DomainInfo, VcpuInfo
from xenvcpu._pycpumap import rust_debug
from xenvcpu.errors import XenvcpuError

__all__ = ["Entry", "HypervisorBackend", "ListSnapshot", "PinResult", "SnapshotBackend"]

#: The effective (hard, soft) maps of a pin; None for a kind not requested.
PinResult = tuple[Union[CpuMap, None], Union[CpuMap, None]]


class SnapshotBackend(Protocol):
    """Every vCPU of every domain at one moment (the native ``Snapshot`` interface)."""

    @property
    def width(self) -> int: ...
    @property
    def maplen(self) -> int: ...
    @property
    def domain_count(self) -> int: ...
    def __len__(self) -> int: ...
    def domain(self, i: int, /) -> DomainInfo: ...
    def vcpus(self, i: int, /) -> list[VcpuInfo]: ...
    def error(self, i: int, /) -> XenvcpuError | None: ...
    def vcpu(self, k: int, /) -> VcpuInfo: ...
    def affinity(self, k: int, kind: str, /) -> CpuMap: ...
    def column(self, name: str, /) -> array[int]: ...
    def maps(self, kind: str, /) -> bytes: ...


class HypervisorBackend(Protocol):
    """The calls Host and Domain make (the native ``Hypervisor`` interface)."""

    @property
    def transport(self) -> str: ...
    @property
    def version(self) -> tuple[int, int, int, int]: ...
    @property
    def width(self) -> int: ...
    def physinfo(self) -> dict[str, int]: ...
    def online_cpus(self) -> CpuMap: ...
    def topology(self) -> list[tuple[int | None, int | None, int | None] | None]: ...
    def cpupools(self) -> list[tuple[int, int, int, CpuMap]]: ...
    def domains(self) -> list[DomainInfo]: ...
    def domain(self, domid: int, /) -> DomainInfo: ...
    def vcpus(self, domid: int, /) -> list[VcpuInfo]: ...
    def vcpu(self, domid: int, vcpu: int, /) -> VcpuInfo: ...
    def snapshot(self) -> SnapshotBackend: ...
    def pin(
        self,
        domid: int,
        vcpu: int,
        hard: CpuMap | None,
        soft: CpuMap | None,
        force: bool,
        /,
    ) -> tuple[CpuMap | None, CpuMap | None]: ...
    def pin_all(
        self,
        domid: int,
        hard: CpuMap | None,
        soft: CpuMap | None,
        force: bool,
        /,
    ) -> list[tuple[int, tuple[CpuMap | None, CpuMap | None] | XenvcpuError]]: ...


#: One domain of a snapshot: its record, and its vCPUs or the error reading them.
Entry = tuple[DomainInfo, Union[list[VcpuInfo], XenvcpuError]]

_STATE_CODES = {"OFFLINE": 0, "RUNNING": 1, "BLOCKED": 2, "RUNNABLE": 3}


class ListSnapshot:
    """A :class:`SnapshotBackend` over Python lists (the pure-Python backends' snapshot)."""

    def __init__(self, width: int, entries: list[Entry]) -> None:
        self._width = width
        self._entries = entries
        self._flat: list[VcpuInfo] = [
            v for _, r in entries if not isinstance(r, XenvcpuError) for v in r
        ]

    @property
    def width(self) -> int:
        return self._width

    @property
    def maplen(self) -> int:
        return (self._width + 7) // 8

    @property
    def domain_count(self) -> int:
        return len(self._entries)

    def __len__(self) -> int:
        return len(self._flat)

    def __repr__(self) -> str:
        return (
            f"Snapshot({len(self._entries)} domains, {len(self._flat)} vCPUs, width {self._width})"
        )

    def _entry(self, i: int) -> Entry:
        if not 0 <= i < len(self._entries):
            raise IndexError(
                f"domain index {i} out of range (the snapshot has {len(self._entries)} domains)"
            )
        return self._entries[i]

    def domains(self) -> list[DomainInfo]:
        return [d for d, _ in self._entries]

    def domain(self, i: int, /) -> DomainInfo:
        return self._entry(i)[0]

    def vcpus(self, i: int, /) -> list[VcpuInfo]:
        r = self._entry(i)[1]
        if isinstance(r, XenvcpuError):
            raise r
        return list(r)

    def error(self, i: int, /) -> XenvcpuError | None:
        r = self._entry(i)[1]
        return r if isinstance(r, XenvcpuError) else None

    def vcpu(self, k: int, /) -> VcpuInfo:
        n = len(self._flat)
        if not -n <= k < n:
            raise IndexError(f"vCPU index {k} out of range (the snapshot has {n} vCPUs)")
        return self._flat[k]

    def affinity(self, k: int, kind: str, /) -> CpuMap:
        v = self.vcpu(k)
        if kind == "hard":
            return v.hard_affinity
        if kind == "soft":
            return v.soft_affinity
        raise ValueError(f"affinity kind {rust_debug(kind)}: expected 'hard' or 'soft'")

    def column(self, name: str, /) -> array[int]:
        vs = self._flat
        if name == "domain":
            return array("I", [v.domain for v in vs])
        if name == "number":
            return array("I", [v.number for v in vs])
        if name == "state":
            return array("B", [_STATE_CODES[v.state.name] for v in vs])
        if name == "cpu":
            return array("i", [-1 if v.cpu is None else v.cpu for v in vs])
        if name == "cpu_time_ns":
            return array("Q", [v.cpu_time_ns for v in vs])
        raise ValueError(
            f"unknown column {rust_debug(name)}: expected domain, number, state, cpu or cpu_time_ns"
        )

    def maps(self, kind: str, /) -> bytes:
        if kind not in ("hard", "soft"):
            raise ValueError(f"map kind {rust_debug(kind)}: expected 'hard' or 'soft'")
        n = self.maplen
        return b"".join(
            (v.hard_affinity if kind == "hard" else v.soft_affinity).to_bytes(n) for v in self._flat
        )
