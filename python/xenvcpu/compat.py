"""The 2006 proposal's three functions, for porting libvirt-era code.

They raise typed exceptions (:mod:`xenvcpu.errors`) instead of returning -1, and take a
:class:`~xenvcpu.host.Domain` (or None for Domain-0 of the local host).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xenvcpu._impl import CpuMap, VcpuInfo

if TYPE_CHECKING:
    from xenvcpu.host import Domain

__all__ = ["get_vcpus", "pin_vcpu", "set_vcpus"]


def _dom(domain: Domain | None) -> Domain:
    if domain is not None:
        return domain
    from xenvcpu.host import connect

    return connect().domain(0)


def set_vcpus(domain: Domain | None, nvcpus: int) -> None:
    """virDomainSetVcpus: bring vCPUs 0..nvcpus-1 online (through the toolstack)."""
    _dom(domain).set_vcpus(nvcpus)


def pin_vcpu(domain: Domain | None, vcpu: int, cpumap: bytes, maplen: int) -> None:
    """virDomainPinVcpu: set the hard affinity from ``maplen`` bytes of a little-endian map
    (CPU0-7 in byte 0, lowest CPU in the least significant bit)."""
    dom = _dom(domain)
    if not 0 <= maplen <= len(cpumap):
        raise ValueError(f"maplen {maplen} must be between 0 and len(cpumap) = {len(cpumap)}")
    m = CpuMap.from_bytes(cpumap[:maplen], max(8 * maplen, 1))
    dom.pin_vcpu(vcpu, hard=m)


def get_vcpus(domain: Domain | None, maxinfo: int) -> list[VcpuInfo]:
    """virDomainGetVcpus: information on the first ``maxinfo`` vCPUs (no 256-CPU cap:
    each map is as wide as the host)."""
    if maxinfo < 0:
        raise ValueError(f"maxinfo {maxinfo} must be >= 0")
    return _dom(domain).vcpus()[:maxinfo]
