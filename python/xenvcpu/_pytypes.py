"""Pure-Python ``VcpuInfo`` and ``DomainInfo``: used when ``xenvcpu._native`` cannot load.

Same constructors, attributes and reprs as the native classes (``rust/py/src/hv.rs``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xenvcpu._pycpumap import CpuMap

if TYPE_CHECKING:
    from xenvcpu.types import VcpuState

__all__ = ["DomainInfo", "VcpuInfo"]

_U8, _U32, _U64 = (1 << 8) - 1, (1 << 32) - 1, (1 << 64) - 1
_HEX = frozenset("0123456789abcdefABCDEF")

# XEN_DOMINF_* (rust/core/src/abi.rs)
_DYING, _HVM, _SHUTDOWN, _PAUSED, _BLOCKED, _RUNNING = 1, 2, 4, 8, 16, 32
_SHUTDOWNSHIFT = 16


def _uint(name: str, value: object, limit: int) -> int:
    if isinstance(value, float) or not hasattr(value, "__index__"):
        raise TypeError(
            f"argument '{name}': '{type(value).__name__}' object cannot be interpreted "
            "as an integer"
        )
    n = int(value.__index__())
    if n < 0:
        raise OverflowError(f"argument '{name}': can't convert negative int to unsigned")
    if n > limit:
        raise OverflowError(f"argument '{name}': out of range integral type conversion attempted")
    return n


def _bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"argument '{name}': '{type(value).__name__}' object is not a bool")
    return value


def _map(name: str, value: object) -> CpuMap:
    if not isinstance(value, CpuMap):
        raise TypeError(f"argument '{name}': '{type(value).__name__}' object is not a CpuMap")
    return value


class _Frozen:
    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"'{type(self).__name__}' object attribute {name!r} is read-only")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"'{type(self).__name__}' object attribute {name!r} is read-only")

    def _set(self, **values: object) -> None:
        for k, v in values.items():
            object.__setattr__(self, "_" + k, v)


class VcpuInfo(_Frozen):
    """One vCPU: its state, CPU time, pCPU and the configured hard and soft affinity."""

    __slots__ = (
        "_blocked",
        "_cpu",
        "_cpu_time_ns",
        "_domain",
        "_hard_affinity",
        "_number",
        "_online",
        "_running",
        "_soft_affinity",
    )
    _domain: int
    _number: int
    _online: bool
    _blocked: bool
    _running: bool
    _cpu_time_ns: int
    _cpu: int | None
    _hard_affinity: CpuMap
    _soft_affinity: CpuMap

    def __init__(
        self,
        domain: int,
        number: int,
        *,
        online: bool,
        blocked: bool,
        running: bool,
        cpu_time_ns: int,
        cpu: int | None,
        hard_affinity: CpuMap,
        soft_affinity: CpuMap,
    ) -> None:
        on = _bool("online", online)
        self._set(
            domain=_uint("domain", domain, _U32),
            number=_uint("number", number, _U32),
            online=on,
            blocked=_bool("blocked", blocked),
            running=_bool("running", running),
            cpu_time_ns=_uint("cpu_time_ns", cpu_time_ns, _U64),
            cpu=None if cpu is None or not on else _uint("cpu", cpu, _U32),
            hard_affinity=_map("hard_affinity", hard_affinity),
            soft_affinity=_map("soft_affinity", soft_affinity),
        )
        if cpu is not None and not on:
            _uint("cpu", cpu, _U32)  # still type-checked, as the native constructor does

    @property
    def domain(self) -> int:
        return self._domain

    @property
    def number(self) -> int:
        return self._number

    @property
    def state(self) -> VcpuState:
        from xenvcpu.types import VcpuState

        if not self._online:
            return VcpuState.OFFLINE
        if self._running:
            return VcpuState.RUNNING
        return VcpuState.BLOCKED if self._blocked else VcpuState.RUNNABLE

    @property
    def online(self) -> bool:
        return self._online

    @property
    def blocked(self) -> bool:
        return self._blocked

    @property
    def running(self) -> bool:
        return self._running

    @property
    def cpu_time_ns(self) -> int:
        return self._cpu_time_ns

    @property
    def cpu(self) -> int | None:
        return self._cpu

    @property
    def hard_affinity(self) -> CpuMap:
        return self._hard_affinity

    @property
    def soft_affinity(self) -> CpuMap:
        return self._soft_affinity

    def __repr__(self) -> str:
        return (
            f"VcpuInfo(domain={self._domain}, number={self._number}, state={self.state.name}, "
            f"cpu={self._cpu}, cpu_time_ns={self._cpu_time_ns}, "
            f"hard_affinity='{self._hard_affinity}', soft_affinity='{self._soft_affinity}')"
        )


def _parse_uuid(text: str) -> bytes | None:
    hexes = text.replace("-", "")
    if len(hexes.encode("utf-8")) != 32 or not hexes.isascii():
        return None
    out = bytearray()
    for i in range(0, 32, 2):
        pair = hexes[i : i + 2]
        # u8::from_str_radix accepts a leading '+'
        if not (set(pair) <= _HEX or (pair[0] == "+" and pair[1] in _HEX)):
            return None
        out.append(int(pair, 16))
    return bytes(out)


class DomainInfo(_Frozen):
    """A domain at one moment: id, uuid, state flags, vCPU counts, CPU time, pool, memory."""

    __slots__ = (
        "_blocked",
        "_cpu_time_ns",
        "_cpupool",
        "_dying",
        "_flags",
        "_hvm",
        "_id",
        "_max_pages",
        "_max_vcpus",
        "_online_vcpus",
        "_paused",
        "_running",
        "_shutdown_code",
        "_tot_pages",
        "_uuid",
    )
    _id: int
    _uuid: bytes
    _flags: int
    _dying: bool
    _hvm: bool
    _shutdown_code: int | None
    _paused: bool
    _running: bool
    _blocked: bool
    _max_vcpus: int
    _online_vcpus: int
    _cpu_time_ns: int
    _cpupool: int
    _tot_pages: int
    _max_pages: int

    def __init__(
        self,
        id: int,
        uuid: str,
        max_vcpus: int,
        online_vcpus: int,
        *,
        dying: bool = False,
        hvm: bool = False,
        shutdown_code: int | None = None,
        paused: bool = False,
        running: bool = False,
        blocked: bool = False,
        cpu_time_ns: int = 0,
        cpupool: int = 0,
        tot_pages: int = 0,
        max_pages: int = 0,
    ) -> None:
        if not isinstance(uuid, str):
            raise TypeError(f"argument 'uuid': '{type(uuid).__name__}' object is not a str")
        code = None if shutdown_code is None else _uint("shutdown_code", shutdown_code, _U8)
        flags = {
            _DYING: _bool("dying", dying),
            _HVM: _bool("hvm", hvm),
            _SHUTDOWN: code is not None,
            _PAUSED: _bool("paused", paused),
            _BLOCKED: _bool("blocked", blocked),
            _RUNNING: _bool("running", running),
        }
        raw = _parse_uuid(uuid)
        values = dict(
            id=_uint("id", id, _U32),
            max_vcpus=_uint("max_vcpus", max_vcpus, _U32),
            online_vcpus=_uint("online_vcpus", online_vcpus, _U32),
            cpu_time_ns=_uint("cpu_time_ns", cpu_time_ns, _U64),
            cpupool=_uint("cpupool", cpupool, _U32),
            tot_pages=_uint("tot_pages", tot_pages, _U64),
            max_pages=_uint("max_pages", max_pages, _U64),
        )
        if raw is None:
            raise ValueError(f"uuid {uuid!r}: expected 32 hex digits (dashes allowed)")
        self._set(
            uuid=raw,
            flags=sum(bit for bit, on in flags.items() if on) | ((code or 0) << _SHUTDOWNSHIFT),
            dying=dying,
            hvm=hvm,
            shutdown_code=code,
            paused=paused,
            running=running,
            blocked=blocked,
            **values,
        )

    @property
    def id(self) -> int:
        return self._id

    @property
    def uuid(self) -> str:
        h = self._uuid.hex()
        return f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"

    @property
    def flags(self) -> int:
        return self._flags

    @property
    def dying(self) -> bool:
        return self._dying

    @property
    def hvm(self) -> bool:
        return self._hvm

    @property
    def shutdown(self) -> bool:
        return self._shutdown_code is not None

    @property
    def shutdown_code(self) -> int | None:
        return self._shutdown_code

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def running(self) -> bool:
        return self._running

    @property
    def blocked(self) -> bool:
        return self._blocked

    @property
    def max_vcpus(self) -> int:
        return self._max_vcpus

    @property
    def online_vcpus(self) -> int:
        return self._online_vcpus

    @property
    def cpu_time_ns(self) -> int:
        return self._cpu_time_ns

    @property
    def cpupool(self) -> int:
        return self._cpupool

    @property
    def tot_pages(self) -> int:
        return self._tot_pages

    @property
    def max_pages(self) -> int:
        return self._max_pages

    def __repr__(self) -> str:
        return (
            f"DomainInfo(id={self._id}, uuid='{self.uuid}', max_vcpus={self._max_vcpus}, "
            f"online_vcpus={self._online_vcpus}, cpupool={self._cpupool})"
        )
