"""Control of a simulated host: ``Host.sim`` on ``sim:`` URIs (None elsewhere).

The simulated host answers the same hypercalls as Xen (see docs/simulator.md); this is its
other side, for testing tools built on xenvcpu: make the n-th hypercall fail with an errno,
make a domain vanish midway or start dying, hold a pin override (EBUSY), refuse multicall
batches, choose how the guests follow an online-vCPU change, and stop or move the clock.
Everything here acts on the shared state of the host, so every connection to it sees it.

>>> import xenvcpu
>>> host = xenvcpu.connect("sim:///default")
>>> host.sim.fail_nth(1, "EINVAL")          # the next domctl/sysctl fails with EINVAL
>>> host.sim.set_follow(None)               # guests no longer follow set_vcpus
"""

from __future__ import annotations

import errno as _errno
import math
from typing import TYPE_CHECKING, Protocol, Union

from xenvcpu.errors import DomainNotFound
from xenvcpu.types import VcpuState

if TYPE_CHECKING:
    from xenvcpu._native import SimControl as NativeSimControl

__all__ = ["DomainArg", "SimControl"]


class _HasId(Protocol):
    @property
    def id(self) -> int: ...


#: A domain as the controls take it: an id, a name, or a :class:`~xenvcpu.Domain`.
DomainArg = Union[int, str, _HasId]

_STATES = {
    VcpuState.RUNNING: "running",
    VcpuState.BLOCKED: "blocked",
    VcpuState.RUNNABLE: "runnable",
}


def _count(name: str, n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{name} is an int, not {type(n).__name__}")
    if not 1 <= n <= 1 << 62:
        raise ValueError(f"{name} {n}: expected 1 (the next call) or more")
    return n


def _errno_arg(value: int | str) -> int:
    """An errno number, or its name ("EINVAL")."""
    if isinstance(value, str):
        code = getattr(_errno, value, None)
        if not value.startswith("E") or not isinstance(code, int):
            raise ValueError(f"unknown errno name {value!r} (e.g. 'EINVAL', 'ESRCH', 'EBUSY')")
        return code
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"an errno is an int or a name such as 'EINVAL', not {value!r}")
    if not 1 <= value <= 4095:
        raise ValueError(f"errno {value}: expected 1 to 4095")
    return value


#: The furthest the clock moves in one step, and the longest follow delay (a year).
MAX_CLOCK_STEP = 365 * 86400.0


def _seconds(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} is a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or not 0 <= value <= MAX_CLOCK_STEP:
        raise ValueError(
            f"{name} {value}: expected a finite number of seconds from 0 to {MAX_CLOCK_STEP:g}"
        )
    return float(value)


class SimControl:
    """The test controls of one simulated host. Get it as ``Host.sim``."""

    def __init__(self, native: NativeSimControl) -> None:
        self._native = native

    def __repr__(self) -> str:
        return f"<SimControl of {len(self._native.domain_names())} domains>"

    def _domid(self, domain: DomainArg) -> int:
        if isinstance(domain, bool):
            raise TypeError("a domain is an id, a name or a Domain, not a bool")
        if isinstance(domain, int):
            return domain
        if isinstance(domain, str):
            names = self._native.domain_names()
            for domid, name in names:
                if name == domain:
                    return domid
            known = ", ".join(f"{n} ({i})" for i, n in names) or "none"
            raise DomainNotFound(
                f"the simulated host has no domain named {domain!r}; known domains: {known}",
                domain=domain,
            )
        ident = getattr(domain, "id", None)
        if isinstance(ident, int) and not isinstance(ident, bool):
            return ident
        raise TypeError(f"a domain is an id, a name or a Domain, not {type(domain).__name__}")

    # ---- faults ----------------------------------------------------------------------

    def fail_nth(self, n: int, errno: int | str) -> None:
        """Fail the ``n``-th domctl/sysctl from now (1 = the next; each entry of a multicall
        batch counts once) with ``errno`` (a number or a name such as ``"EINVAL"``)."""
        self._native.fail_nth(_count("n", n), _errno_arg(errno))

    def remove_domain_at(self, n: int, domain: DomainArg) -> None:
        """Make ``domain`` vanish just before the ``n``-th domctl/sysctl from now, as a
        domain destroyed while a batch runs does."""
        domid = self._domid(domain)
        if not 0 <= domid < 0x7FF0:
            raise DomainNotFound(f"no domain with id {domid}", domain=domid)
        self._native.remove_domain_at(_count("n", n), domid)

    def set_dying(self, domain: DomainArg, dying: bool = True) -> None:
        """Mark a domain as being destroyed (``DomainDying`` for changes), or not."""
        self._native.set_dying(self._domid(domain), bool(dying))

    def set_pin_override(self, domain: DomainArg, vcpu: int, on: bool = True) -> None:
        """Hold a temporary pin override on a vCPU: Xen then refuses hard pins with EBUSY
        (``AffinityBusy``) until one is made with ``force=True``."""
        self._native.set_pin_override(self._domid(domain), vcpu, bool(on))

    def refuse_multicall(self, errno: int | str | None = "ENOSYS") -> None:
        """Make the multicall hypercall fail with ``errno`` (batches then fall back to one
        hypercall per operation, as on a hypervisor without multicall); None accepts
        batches again."""
        self._native.refuse_multicall(None if errno is None else _errno_arg(errno))

    def set_release(self, version: str) -> None:
        """Pretend to be another Xen release, e.g. ``"4.10.1"``: its interface versions and
        layouts from the next call on (an unknown release refuses every call, EACCES)."""
        parts = version.split(".") if isinstance(version, str) else []
        if not 2 <= len(parts) <= 3 or not all(p.isascii() and p.isdigit() for p in parts):
            raise ValueError(f"Xen release {version!r}: expected MAJOR.MINOR[.PATCH]")
        major, minor, patch = (int(p) for p in (*parts, "0")[:3])
        if max(major, minor, patch) > 0xFFFF:
            raise ValueError(f"Xen release {version!r}: numbers above 65535")
        self._native.set_release(major, minor, patch)

    # ---- guests ----------------------------------------------------------------------

    def set_vcpu_state(self, domain: DomainArg, vcpu: int, state: VcpuState | str) -> None:
        """Set an online vCPU's run state: RUNNING, BLOCKED or RUNNABLE."""
        if isinstance(state, str) and not isinstance(state, VcpuState):
            name = state.upper()
            if name not in VcpuState.__members__:
                raise ValueError(f"unknown vCPU state {state!r}: running, blocked or runnable")
            state = VcpuState[name]
        if state not in _STATES:
            raise ValueError(f"vCPU state {state.name}: set_vcpu_state takes an online state")
        self._native.set_vcpu_state(self._domid(domain), vcpu, _STATES[state])

    def set_follow(self, delay: float | None) -> None:
        """How guests follow an online-vCPU change: after ``delay`` seconds (0 = at once),
        or never (None: a guest without vCPU hotplug, for timeout paths)."""
        self._native.set_follow(None if delay is None else _seconds("delay", delay))

    # ---- time ------------------------------------------------------------------------

    def freeze_clock(self, frozen: bool = True) -> None:
        """Stop (or restart) the clock: CPU times and pending guest actions then move only
        with :meth:`advance`, so results are reproducible."""
        self._native.freeze_clock(bool(frozen))

    def advance(self, seconds: float) -> None:
        """Move the clock forward (CPU time accrues; due guest actions happen)."""
        self._native.advance(_seconds("seconds", seconds))

    # ---- counters --------------------------------------------------------------------

    def hypercalls(self) -> int:
        """Hypercalls issued so far (a multicall batch counts once)."""
        return self._native.hypercalls()

    def ops(self) -> int:
        """domctl/sysctl operations executed so far (each entry of a batch counts once)."""
        return self._native.ops()
