"""xenvcpu: manage the virtual CPUs of running Xen domains.

>>> import xenvcpu
>>> host = xenvcpu.connect("sim:///default")        # or connect() on a Xen dom0
>>> dom = host.domain("web")
>>> [v.state.name for v in dom.vcpus()][:2]         # doctest: +SKIP
['RUNNING', 'BLOCKED']
>>> dom.pin_vcpu(0, hard="0-3").hard                 # doctest: +SKIP
CpuMap.parse("0-3", 64)

Errors are in :mod:`xenvcpu.errors`; the CPU map type is :class:`CpuMap`.
"""

from __future__ import annotations

from xenvcpu._impl import MAX_WIDTH, CpuMap
from xenvcpu.compat import get_vcpus, pin_vcpu, set_vcpus
from xenvcpu.errors import AffinityNarrowed, CpuListError, XenvcpuError
from xenvcpu.host import DEFAULT_URI, Domain, DomainVcpus, Host, Snapshot, connect
from xenvcpu.placement import ApplyResult, Plan, load_spec
from xenvcpu.records import Cpupool, DomainInfo, Pinning, VcpuInfo
from xenvcpu.sim import SimControl
from xenvcpu.types import CpuTopology, GuestType, HostInfo, Topology, VcpuState

__all__ = [
    "DEFAULT_URI",
    "MAX_WIDTH",
    "AffinityNarrowed",
    "ApplyResult",
    "CpuListError",
    "CpuMap",
    "CpuTopology",
    "Cpupool",
    "Domain",
    "DomainInfo",
    "DomainVcpus",
    "GuestType",
    "Host",
    "HostInfo",
    "Pinning",
    "Plan",
    "SimControl",
    "Snapshot",
    "Topology",
    "VcpuInfo",
    "VcpuState",
    "XenvcpuError",
    "__version__",
    "connect",
    "get_vcpus",
    "load_spec",
    "pin_vcpu",
    "set_vcpus",
]

try:
    from importlib.metadata import version as _version

    __version__ = _version("xenvcpu")
except Exception:  # pragma: no cover - running from a source tree without metadata
    __version__ = "0+unknown"
