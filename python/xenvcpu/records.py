"""Result records that hold CPU maps, and the per-vCPU and per-domain records of Xen.

The same classes whichever backend answered: :class:`VcpuInfo` and :class:`DomainInfo`
are the native ones (or their pure-Python equivalents without the native module).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from xenvcpu._impl import CpuMap, DomainInfo, VcpuInfo

__all__ = ["Cpupool", "DomainInfo", "Pinning", "VcpuInfo"]


@dataclass(frozen=True)
class Cpupool:
    """A cpupool: its CPUs, scheduler and how many domains run in it."""

    id: int
    name: str
    scheduler: str
    cpus: CpuMap
    n_domains: int


class Pinning(NamedTuple):
    """What a pin asked for and what Xen applied.

    ``hard``/``soft`` are the *effective* maps Xen wrote back (requested ∩ the cpupool's
    online CPUs; soft also ∩ hard, and it may be empty); None for a kind not requested.
    A NamedTuple: ``pin_all`` makes one per vCPU, and a frozen dataclass cost more to
    build than the pin itself.
    """

    domain: int
    vcpu: int
    requested_hard: CpuMap | None
    requested_soft: CpuMap | None
    hard: CpuMap | None
    soft: CpuMap | None

    @property
    def narrowed(self) -> bool:
        """Whether Xen applied less than was asked for."""
        return (self.requested_hard is not None and self.hard != self.requested_hard) or (
            self.requested_soft is not None and self.soft != self.requested_soft
        )
