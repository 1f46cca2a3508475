"""Plain value types of the public API: enums and records without CPU maps.

A leaf module (it imports nothing of xenvcpu), so that every other module, the native
one included, can use it. The records that hold CPU maps (:class:`~xenvcpu.Cpupool`,
:class:`~xenvcpu.Pinning`) are in :mod:`xenvcpu.records`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = [
    "SCHEDULERS",
    "CpuTopology",
    "GuestType",
    "HostInfo",
    "Topology",
    "VcpuState",
    "default_domain_name",
]


class VcpuState(enum.IntEnum):
    """State of a vCPU. The first three keep the 2006 proposal's numbers.

    RUNNABLE is online but neither running nor blocked: waiting for a physical CPU
    (libvirt reports that as offline; it is not).
    """

    OFFLINE = 0
    RUNNING = 1
    BLOCKED = 2
    RUNNABLE = 3

    @property
    def letter(self) -> str:
        """The letter `xl vcpu-list` uses: r, b, - (runnable) or p (offline)."""
        return {0: "p", 1: "r", 2: "b", 3: "-"}[int(self)]


class GuestType(str, enum.Enum):
    """What kind of guest a domain is (see :func:`xenvcpu.guests.classify`)."""

    #: paravirtualised: online vCPUs through xenstore
    PV = "pv"
    #: an HVM container without a device model: online vCPUs through xenstore, as PV
    PVH = "pvh"
    #: fully virtualised with a QEMU device model: online vCPUs through QMP
    HVM = "hvm"

    def __str__(self) -> str:
        return self.value


class CpuTopology(NamedTuple):
    """Where one physical CPU sits (Xen's ids; None when Xen does not know)."""

    cpu: int
    core: int | None
    socket: int | None
    node: int | None


@dataclass(frozen=True)
class Topology:
    """Per-CPU core, socket and NUMA node of the host's present CPUs, and its cpupools.

    What ``CpuMap.parse(text, width, topology=...)`` reads for topology terms (each indexed
    by CPU id, None where Xen does not say): ``cpu_to_node`` for ``node:N``,
    ``cpu_to_socket`` for ``socket:N``, ``cpu_to_socket`` and ``cpu_to_core`` for
    ``siblings:N`` (the CPUs on CPU N's core), ``pools`` (name -> CPU ids) for ``pool:NAME``.
    """

    cpus: tuple[CpuTopology, ...]
    cpu_to_node: tuple[int | None, ...]
    cpu_to_socket: tuple[int | None, ...] = ()
    cpu_to_core: tuple[int | None, ...] = ()
    pools: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def siblings(self, cpu: int) -> list[int]:
        """CPU ``cpu`` and its hyper-thread siblings (the CPUs on the same core)."""
        me = next((c for c in self.cpus if c.cpu == cpu), None)
        if me is None or me.core is None or me.socket is None:
            return []
        return [c.cpu for c in self.cpus if (c.socket, c.core) == (me.socket, me.core)]

    def node_cpus(self, node: int) -> list[int]:
        """CPU ids on NUMA node ``node``."""
        return [c.cpu for c in self.cpus if c.node == node]

    @property
    def nodes(self) -> list[int]:
        """NUMA nodes that have at least one CPU."""
        return sorted({c.node for c in self.cpus if c.node is not None})

    @property
    def sockets(self) -> list[int]:
        return sorted({c.socket for c in self.cpus if c.socket is not None})


SCHEDULERS = {5: "credit", 6: "credit2", 7: "arinc653", 8: "rtds", 9: "null"}


@dataclass(frozen=True)
class HostInfo:
    """The host as physinfo reports it."""

    xen_version: str
    nr_cpus: int
    max_cpu_id: int
    threads_per_core: int
    cores_per_socket: int
    nr_nodes: int
    cpu_mhz: int
    total_memory_mib: int
    free_memory_mib: int


def default_domain_name(domid: int) -> str:
    """The name a domain without a toolstack name goes by (as ``xl list`` shows dom0)."""
    return "Domain-0" if domid == 0 else f"domain-{domid}"
