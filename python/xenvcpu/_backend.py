"""The seam between :class:`~xenvcpu.host.Host` and the backends that serve it.

A backend module (:mod:`xenvcpu.backends.native`, :mod:`~xenvcpu.backends.xend`,
:mod:`~xenvcpu.backends.xenstore`) turns a parsed URI into :class:`Parts`: a hypervisor
object (:class:`HypervisorBackend`), a toolstack (:class:`Toolstack`: names and the
online-vCPU request), the :class:`Capabilities` it has, and the simulator's control where
there is one. :func:`xenvcpu.connect` alone builds the Host from them; nothing here or in
a backend imports :mod:`xenvcpu.host`. :class:`ListSnapshot` is the pure-Python
counterpart of the native columnar ``Snapshot``.
"""

from __future__ import annotations

import enum
from array import array
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol, Union

from xenvcpu._impl import CpuMap, DomainInfo, VcpuInfo
from xenvcpu.errors import NotSupported, XenvcpuError

if TYPE_CHECKING:
    from xenvcpu.sim import SimControl

__all__ = [
    "Capabilities",
    "Capability",
    "DomainEvents",
    "Entry",
    "HypervisorBackend",
    "ListSnapshot",
    "Parts",
    "PinResult",
    "SnapshotBackend",
    "Toolstack",
]

#: The effective (hard, soft) maps of a pin; None for a kind not requested.
PinResult = tuple[Union[CpuMap, None], Union[CpuMap, None]]


class Capability(str, enum.Enum):
    """Something a backend may or may not be able to do; :class:`Capabilities` says which."""

    #: Confirm that a guest followed an online-vCPU change (the hypervisor's view of the
    #: online vCPUs, getvcpuinfo): what ``wait=True`` needs.
    WAIT_ONLINE = "wait_online"
    #: Change the online vCPUs of an HVM guest through its QEMU (QMP), under libxl's lock.
    HVM_HOTPLUG = "hvm_hotplug"


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do: every :class:`Capability` except those in ``missing``,
    which maps each absent one to why (a sentence for error messages and ``doctor``)."""

    missing: Mapping[Capability, str] = field(default_factory=lambda: MappingProxyType({}))

    def __contains__(self, capability: object) -> bool:
        return isinstance(capability, Capability) and capability not in self.missing

    def why_not(self, capability: Capability) -> str | None:
        """Why the backend cannot do it, or None when it can."""
        return self.missing.get(capability)

    def require(self, capability: Capability, what: str, *, domain: int | None = None) -> None:
        """Raise :class:`~xenvcpu.errors.NotSupported` if missing: the message is ``what``
        followed by the reason, which completes the sentence (``"wait=True needs …"``)."""
        why = self.missing.get(capability)
        if why is not None:
            raise NotSupported(f"{what} {why}", domain=domain)


class Toolstack(Protocol):
    """What Xen keeps outside the hypervisor: names, the online-vCPU request, what kind of
    guest a domain is, and where libxl keeps its QMP sockets and locks."""

    @property
    def name(self) -> str:
        """ "xenstore", "sim" or "xend", for messages and ``xenvcpu doctor``."""
        ...

    @property
    def run_dir(self) -> str | None:
        """XEN_RUN_DIR (QMP sockets ``qmp-libxl-<domid>``), or None where there is none."""
        ...

    @property
    def lib_dir(self) -> str | None:
        """XEN_LIB_DIR (libxl's per-domain lock files), or None where there is none."""
        ...

    def guest_record(self, domid: int) -> str | None: ...

    def has_device_model(self, domid: int) -> bool: ...

    def domain_names(self) -> dict[int, str]: ...

    def names_with(
        self, read: Callable[[], Sequence[DomainInfo]], complete: bool = True
    ) -> tuple[Sequence[DomainInfo], dict[int, str]]:
        """``read()`` (the hypervisor's domains) and ``{domid: name}`` of the domains it
        returned (a domain without a name is left out). What the toolstack knows is taken
        before ``read()`` runs, so a domain that goes away meanwhile keeps a name it had;
        names may be cached where the toolstack can tell when one changes. ``complete``:
        ``read()`` returns every domain of the host."""
        ...

    def pool_name(self, pool: int) -> str | None: ...

    def set_availability(self, domid: int, max_vcpus: int, online: Set[int]) -> None: ...

    def availability(self, domid: int) -> dict[int, bool]: ...

    def close(self) -> None: ...

    def domain_events(self) -> DomainEvents | None:
        """A source of "domains appeared or went" events (xenstored's ``@introduceDomain``
        and ``@releaseDomain`` watches), or None where the toolstack has none; the placement
        watcher then re-plans on its interval only."""
        ...


class DomainEvents(Protocol):
    """Tells that domains appeared or went (not which: re-read the host)."""

    def wait(self, timeout: float) -> bool:
        """True when an event came within ``timeout`` seconds (all queued ones consumed),
        False when none did."""
        ...

    def close(self) -> None: ...


class SnapshotBackend(Protocol):
    """Every vCPU of every domain at one moment (the native ``Snapshot`` interface)."""

    @property
    def width(self) -> int: ...
    @property
    def maplen(self) -> int: ...
    @property
    def domain_count(self) -> int: ...
    def offsets(self) -> list[int]: ...
    def __len__(self) -> int: ...
    def domains(self) -> list[DomainInfo]: ...
    def domain(self, i: int, /) -> DomainInfo: ...
    def vcpus(self, i: int, /) -> list[VcpuInfo]: ...
    def error(self, i: int, /) -> XenvcpuError | None: ...
    def vcpu(self, k: int, /) -> VcpuInfo: ...
    def affinity(self, k: int, kind: str, /) -> CpuMap: ...
    def column(self, name: str, /) -> array[int]: ...
    def maps(self, kind: str, /, start: int = 0, stop: int | None = None) -> bytes: ...
    def domain_columns(self) -> tuple[list[int], list[int], list[int], list[int]]: ...
    def differences(
        self,
        domains: list[int],
        hard: Sequence[CpuMap | None] | None = None,
        soft: Sequence[CpuMap | None] | None = None,
        online: Sequence[int] | None = None,
    ) -> list[tuple[int, int, int, bool]]: ...


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
    def pin_many(
        self,
        requests: list[tuple[int, int, CpuMap | None, CpuMap | None]],
        force: bool = False,
        /,
    ) -> list[tuple[CpuMap | None, CpuMap | None] | XenvcpuError]: ...


@dataclass(frozen=True)
class Parts:
    """What a backend hands :func:`xenvcpu.connect` to build a Host from."""

    hypervisor: HypervisorBackend
    toolstack: Toolstack
    capabilities: Capabilities = field(default_factory=Capabilities)
    #: The simulated host's control (``Host.sim``); None on other backends.
    sim: SimControl | None = None


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

    def offsets(self) -> list[int]:
        out, at = [], 0
        for _, r in self._entries:
            out.append(at)
            at += 0 if isinstance(r, XenvcpuError) else len(r)
        return [*out, at]

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
        raise ValueError(f"affinity kind {kind!r}: expected 'hard' or 'soft'")

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
            f"unknown column {name!r}: expected domain, number, state, cpu or cpu_time_ns"
        )

    def maps(self, kind: str, /, start: int = 0, stop: int | None = None) -> bytes:
        if kind not in ("hard", "soft"):
            raise ValueError(f"map kind {kind!r}: expected 'hard' or 'soft'")
        n = self.maplen
        return b"".join(
            (v.hard_affinity if kind == "hard" else v.soft_affinity).to_bytes(n)
            for v in self._flat[start:stop]
        )

    def domain_columns(self) -> tuple[list[int], list[int], list[int], list[int]]:
        ids, maxv, pools, shapes = [], [], [], []
        for d, r in self._entries:
            ids.append(d.id)
            maxv.append(d.max_vcpus)
            pools.append(d.cpupool)
            if isinstance(r, XenvcpuError):
                shapes.append(-1)
            elif all(v.number == k for k, v in enumerate(r)):
                shapes.append(len(r))
            else:
                shapes.append(-2)
        return ids, maxv, pools, shapes

    def differences(
        self,
        domains: list[int],
        hard: Sequence[CpuMap | None] | None = None,
        soft: Sequence[CpuMap | None] | None = None,
        online: Sequence[int] | None = None,
    ) -> list[tuple[int, int, int, bool]]:
        want_online = None if online is None else set(online)
        out = []
        for k, i in enumerate(domains):
            d, r = self._entry(i)
            if isinstance(r, XenvcpuError):
                raise ValueError(f"domain index {i} (id {d.id}): its vCPUs could not be read")
            counts = []
            for kind, want in (("hard", hard), ("soft", soft)):
                if want is not None and len(want) != len(r):
                    raise ValueError(
                        f"domain {d.id} has {len(r)} vCPUs, {len(want)} {kind} maps were given"
                    )
                counts.append(
                    0
                    if want is None
                    else sum(
                        1
                        for v, w in zip(r, want)
                        if w is not None
                        and (v.hard_affinity if kind == "hard" else v.soft_affinity) != w
                    )
                )
            o = want_online is not None and {v.number for v in r if v.online} != want_online
            if counts[0] or counts[1] or o:
                out.append((k, counts[0], counts[1], o))
        return out
