"""The xenstore-only backend: ``connect("xenstore:///")`` (pure Python, no hypercalls).

For a dom0 where hypercalls are unavailable (the native module cannot load, or privcmd
cannot be opened) but xenstored answers. ``xenstore:///`` finds xenstored where the
client looks by default (``XENSTORED_PATH``, the usual sockets, ``/dev/xen/xenbus``);
``xenstore:///PATH`` uses that socket or device (see :mod:`xenvcpu.uri`).

What it can do, from xenstore alone (xen-interfaces.md §5.4):

* list domains (``/local/domain/<id>``), their names, uuids (``vm``), and maximum vCPUs
  (how many ``cpu/<n>`` nodes libxl wrote; 0 when there are none, e.g. for a dom0 that
  libxl did not build); HVM is recognised from ``/libxl/<id>/type`` or ``hvmloader``;
* ``Domain.set_vcpus(n)`` / ``Domain.set_online(cpus)``: every ``availability`` node
  written in ONE transaction, exactly as on the hypercall path.

What it cannot do, with NotSupported naming the missing privcmd: anything about vCPU
state or affinity (``vcpus()``, ``snapshot()``, pinning), host CPUs and topology, and
``wait=True`` (confirming that the guest followed needs the hypervisor's view of the
online vCPUs). ``Domain.online_vcpus`` here counts the vCPUs *requested* online in
xenstore, which the guest may not have acted on yet. ``dying`` is never known (False).
"""

from __future__ import annotations

from types import MappingProxyType

from xenvcpu import _impl
from xenvcpu._backend import Capabilities, Capability, ListSnapshot, Parts
from xenvcpu._impl import CpuMap, DomainInfo, VcpuInfo
from xenvcpu.daemon.vcpus import list_domains, max_vcpus_from_xenstore, read_availability
from xenvcpu.daemon.xenstore import XenstoreClient
from xenvcpu.errors import DomainNotFound, NotSupported, XenvcpuError
from xenvcpu.toolstack import XenstoreToolstack
from xenvcpu.uri import Uri

__all__ = ["XenstoreHypervisor", "open_parts"]

NO_UUID = "00000000-0000-0000-0000-000000000000"


def open_parts(uri: Uri) -> Parts:
    """The parts of a Host over xenstore alone (see the module docstring).

    Connects at once, so an unreachable xenstored fails here.

    Raises:
        XenstoreError: no xenstored endpoint answers (the message lists where it looked).
        PermissionDenied: the socket or device is root-only.
    """
    toolstack = XenstoreToolstack(uri.path, uri.run_dir, uri.lib_dir)
    toolstack.client()  # fail early
    why = (
        "needs the hypervisor's view of the online vCPUs (getvcpuinfo through privcmd), "
        f"which the xenstore:/// backend cannot read: {_why_no_privcmd()}; nothing was "
        "changed. Call without wait (xenstore then holds the request; "
        "Domain.online_vcpus reports it, not what the guest did)"
    )
    caps = Capabilities(MappingProxyType({Capability.WAIT_ONLINE: why}))
    return Parts(XenstoreHypervisor(toolstack), toolstack, caps)


def _why_no_privcmd() -> str:
    if not _impl.HAVE_NATIVE:
        return f"the native module xenvcpu._native cannot be loaded ({_impl.NATIVE_ERROR})"
    return "this connection is xenstore:/// (connect to xen:///system as root in dom0 for it)"


def _unsupported(what: str) -> NotSupported:
    return NotSupported(
        f"{what} needs hypercalls through privcmd, which the xenstore:/// backend does not "
        f"use: {_why_no_privcmd()}; xenstore:/// only lists domains and sets online vCPUs"
    )


class XenstoreHypervisor:
    """The native ``Hypervisor`` interface, as far as xenstore can answer it."""

    transport = "xenstore"
    version = (0, 0, 0, 0)  # unknown: xenstore does not say which Xen runs

    def __init__(self, toolstack: XenstoreToolstack) -> None:
        self.toolstack = toolstack

    def __repr__(self) -> str:
        return f"<XenstoreHypervisor {self.toolstack.client().endpoint}>"

    def _xs(self) -> XenstoreClient:
        return self.toolstack.client()

    @property
    def width(self) -> int:
        raise _unsupported("the host's physical CPUs (CPU maps, pinning)")

    def physinfo(self) -> dict[str, int]:
        raise _unsupported("host information (physinfo)")

    def online_cpus(self) -> CpuMap:
        raise _unsupported("the host's online CPUs")

    def topology(self) -> list[tuple[int | None, int | None, int | None] | None]:
        raise _unsupported("the CPU topology")

    def cpupools(self) -> list[tuple[int, int, int, CpuMap]]:
        raise _unsupported("cpupools")

    def _info(self, domid: int) -> DomainInfo:
        xs = self._xs()
        home = f"/local/domain/{domid}"
        try:
            max_vcpus = max_vcpus_from_xenstore(xs, domid)
            online = sum(read_availability(xs, domid).values())
        except DomainNotFound:
            if not xs.exists(home):
                raise DomainNotFound(
                    f"no domain with id {domid} in xenstore", domain=domid
                ) from None
            max_vcpus = online = 0
        vm = (xs.try_read(f"{home}/vm") or b"").decode("utf-8", "replace")
        uuid = vm.rstrip("/").rsplit("/", 1)[-1] or NO_UUID
        kind = xs.try_read(f"/libxl/{domid}/type")
        hvm = kind == b"hvm" or xs.exists(f"{home}/hvmloader")
        try:
            return DomainInfo(domid, uuid, max_vcpus, online, hvm=hvm)
        except ValueError:  # a vm path without a uuid at its end
            return DomainInfo(domid, NO_UUID, max_vcpus, online, hvm=hvm)

    def domains(self) -> list[DomainInfo]:
        out = []
        for domid in sorted(list_domains(self._xs())):
            try:
                out.append(self._info(domid))
            except DomainNotFound:  # gone meanwhile
                continue
        return out

    def domain(self, domid: int, /) -> DomainInfo:
        return self._info(domid)

    def vcpus(self, domid: int, /) -> list[VcpuInfo]:
        raise _unsupported("vCPU state and affinity (getvcpuinfo)")

    def vcpu(self, domid: int, vcpu: int, /) -> VcpuInfo:
        raise _unsupported("vCPU state and affinity (getvcpuinfo)")

    def snapshot(self) -> ListSnapshot:
        raise _unsupported("a snapshot of every vCPU")

    def pin(
        self,
        domid: int,
        vcpu: int,
        hard: CpuMap | None = None,
        soft: CpuMap | None = None,
        force: bool = False,
        /,
    ) -> tuple[CpuMap | None, CpuMap | None]:
        raise _unsupported("pinning vCPUs")

    def pin_all(
        self,
        domid: int,
        hard: CpuMap | None = None,
        soft: CpuMap | None = None,
        force: bool = False,
        /,
    ) -> list[tuple[int, tuple[CpuMap | None, CpuMap | None] | XenvcpuError]]:
        raise _unsupported("pinning vCPUs")

    def pin_many(
        self,
        requests: list[tuple[int, int, CpuMap | None, CpuMap | None]],
        force: bool = False,
        /,
    ) -> list[tuple[CpuMap | None, CpuMap | None] | XenvcpuError]:
        raise _unsupported("pinning vCPUs")
