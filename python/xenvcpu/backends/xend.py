"""The whole public API over xend, for Xen <= 4.4 hosts (pure Python, no hypercalls).

``connect("xend+unix:///var/lib/xend/xend-socket")`` or ``connect("xend+http://HOST:8000")``
returns an ordinary :class:`~xenvcpu.Host` whose hypervisor object is
:class:`XendHypervisor` and whose toolstack is :class:`XendToolstack`. Results are the
same types as on the hypercall path (the native ``VcpuInfo``/``DomainInfo``/``CpuMap``
when the native module loads, the pure-Python ones otherwise).

What xend cannot do, and what happens instead:

* soft affinity (Xen <= 4.4 has none): a pin with ``soft=`` raises NotSupported; every
  vCPU reports a soft affinity of all CPUs;
* ``force=True`` (temporary pin overrides arrived in Xen 4.7): NotSupported;
* choosing *which* vCPUs are online: ``op=set_vcpus`` takes a count, so ``set_online``
  works only for 0..n-1 and raises NotSupported otherwise;
* topology: xend reports no per-CPU core/socket; with one NUMA node every CPU is on
  node 0, otherwise the topology is empty;
* cpupools: one pool, Pool-0, of every CPU; the scheduler is credit (the default of
  every Xen <= 4.4) unless xend's node info names another (``xen_scheduler``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence, Set
from decimal import Decimal
from types import MappingProxyType

from xenvcpu._backend import Capabilities, Capability, Entry, ListSnapshot, Parts
from xenvcpu._impl import MAX_WIDTH, CpuMap, DomainInfo, VcpuInfo
from xenvcpu._ranges import format_ranges
from xenvcpu.daemon import sxp
from xenvcpu.daemon.xend import XendClient, XendDomain, XendNodeInfo
from xenvcpu.errors import (
    DaemonError,
    DomainNotFound,
    InvalidAffinity,
    NotSupported,
    VcpuNotFound,
    XenvcpuError,
)
from xenvcpu.types import SCHEDULERS
from xenvcpu.uri import Uri

__all__ = ["DEFAULT_VERSION", "XendHypervisor", "XendToolstack", "open_parts"]

#: Reported when xend's node info has no xen_major/xen_minor.
DEFAULT_VERSION = (4, 4, 0, 0)
NO_UUID = "00000000-0000-0000-0000-000000000000"
_SCHEDULER_IDS = {name: sid for sid, name in SCHEDULERS.items()}


def open_parts(uri: Uri) -> Parts:
    """The parts of a Host over xend at ``uri`` (``xend+unix:///PATH`` or
    ``xend+http://HOST[:PORT]``). Reads xend's node info once (so an unreachable xend fails
    here).

    Raises:
        XendError: xend cannot be reached or answered an error.
        PermissionDenied: the socket is root-only.
    """
    address = uri.path if uri.scheme == "xend+unix" else uri.host
    assert address is not None
    client = XendClient(address)
    caps = Capabilities(
        MappingProxyType(
            {
                Capability.HVM_HOTPLUG: (
                    "needs QMP to the guest's device model, which xenvcpu does not drive "
                    "through xend (Xen <= 4.4): use xm vcpu-set there"
                )
            }
        )
    )
    return Parts(XendHypervisor(client), XendToolstack(client), caps)


def _int_field(node: XendNodeInfo, key: str, high: int) -> int | None:
    """An informational field of the node info, or None when it is missing, not a
    number (sxp.number's caps: ``1e999999999`` took minutes in int(Decimal(...))) or
    outside ``0..high``."""
    raw = node.fields.get(key)
    if raw is None:
        return None
    try:
        value = int(sxp.number(raw))
    except ValueError:
        return None
    return value if 0 <= value <= high else None


def _seconds_ns(value: Decimal | None) -> int:
    """xend's seconds as nanoseconds; 0 when unknown or beyond u64 (as the native types hold)."""
    ns = int((value or Decimal(0)) * 1_000_000_000)  # sxp.number capped the exponent
    return ns if 0 <= ns <= _U64_MAX else 0


_U64_MAX = (1 << 64) - 1
# Memory in MiB that fits the page counts (x256) of the native types with room to spare.
_MIB_MAX = (1 << 44) - 1


class XendHypervisor:
    """The native ``Hypervisor`` interface, answered by xend (see the module docstring)."""

    transport = "xend"

    def __init__(self, client: XendClient) -> None:
        self.client = client
        self.node = client.node_info()
        node = self.node
        major, minor = _int_field(node, "xen_major", 0xFFFF), _int_field(node, "xen_minor", 0xFFFF)
        if major is None or minor is None:
            self._version = DEFAULT_VERSION
        else:
            extra = node.fields.get("xen_extra", "").lstrip(".")
            digits = "".join(c for c in extra[:4] if c.isdigit())
            patch = int(digits) if extra[:1].isdigit() and digits else 0
            self._version = (major, minor, patch, 0)
        # nr_cpus is at most MAX_WIDTH (parse_node_info checked it); a max_cpu_id beyond
        # the widest CPU map is ignored like an unreadable one
        max_id = _int_field(node, "max_cpu_id", MAX_WIDTH - 1)
        self._width = max(node.nr_cpus, 1, (max_id + 1) if max_id is not None else 0)

    def __repr__(self) -> str:
        return f"<XendHypervisor {self.client.describe()}>"

    @property
    def version(self) -> tuple[int, int, int, int]:
        return self._version

    @property
    def width(self) -> int:
        return self._width

    def physinfo(self) -> dict[str, int]:
        node = self.node
        total = _int_field(node, "total_memory", _MIB_MAX) or 0  # MiB
        free = _int_field(node, "free_memory", _MIB_MAX) or 0
        return {
            "threads_per_core": node.threads_per_core or 1,
            "cores_per_socket": node.cores_per_socket or 1,
            "nr_cpus": node.nr_cpus,
            "max_cpu_id": self._width - 1,
            "nr_nodes": node.nr_nodes or 1,
            "max_node_id": (node.nr_nodes or 1) - 1,
            "cpu_khz": (node.cpu_mhz or 0) * 1000,
            "capabilities": 0,
            "total_pages": total * 256,
            "free_pages": free * 256,
        }

    def online_cpus(self) -> CpuMap:
        return CpuMap.from_cpus(range(min(self.node.nr_cpus, self._width)), self._width)

    def topology(self) -> list[tuple[int | None, int | None, int | None] | None]:
        online = set(self.online_cpus())
        one_node = (self.node.nr_nodes or 1) == 1
        return [
            (None, None, 0) if one_node and cpu in online else None for cpu in range(self._width)
        ]

    def cpupools(self) -> list[tuple[int, int, int, CpuMap]]:
        sched = _SCHEDULER_IDS.get(self.node.fields.get("xen_scheduler", "credit"), 5)
        return [(0, sched, len(self.domains()), self.online_cpus())]

    # ---- domains -----------------------------------------------------------------------

    def _info(self, rec: XendDomain) -> DomainInfo:
        assert rec.domid is not None
        state = (rec.state or "------").ljust(6, "-")
        raw = rec.raw
        image = sxp.child(raw, "image")
        hvm = image is not None and any(sxp.name(k) == "hvm" for k in image[1:])
        try:
            seconds = sxp.value_decimal(raw, "cpu_time")
            memory = sxp.value_int(raw, "memory") or 0
            maxmem = sxp.value_int(raw, "maxmem") or memory
        except ValueError:
            seconds, memory, maxmem = None, 0, 0
        if not (0 <= memory <= _MIB_MAX and 0 <= maxmem <= _MIB_MAX):
            memory = maxmem = 0  # unknown, like an unreadable value
        # parse_domain checked these against MAX_VCPUS
        max_vcpus = rec.max_vcpus or 0
        if rec.online_vcpus is not None:
            online = min(rec.online_vcpus, max_vcpus)
        elif rec.vcpu_avail is not None:
            online = bin(rec.vcpu_avail & ((1 << max_vcpus) - 1)).count("1")
        else:
            online = max_vcpus
        shutdown = 3 if state[4] == "c" else (0 if state[3] == "s" else None)

        def make(uuid: str) -> DomainInfo:
            assert rec.domid is not None
            return DomainInfo(
                rec.domid,
                uuid,
                max_vcpus,
                online,
                dying=state[5] == "d",
                hvm=hvm,
                shutdown_code=shutdown,
                paused=state[2] == "p",
                running=state[0] == "r",
                blocked=state[1] == "b",
                cpu_time_ns=_seconds_ns(seconds),
                cpupool=0,
                tot_pages=memory * 256,
                max_pages=maxmem * 256,
            )

        try:
            return make(rec.uuid or NO_UUID)
        except ValueError:  # a uuid xend wrote in a form we do not parse
            return make(NO_UUID)

    def records(self) -> list[XendDomain]:
        """The running domains' records, by id."""
        recs = [r for r in self.client.domains() if r.domid is not None]
        return sorted(recs, key=lambda r: r.domid or 0)

    def domains(self) -> list[DomainInfo]:
        return [self._info(r) for r in self.records()]

    def domain(self, domid: int, /) -> DomainInfo:
        rec = self.client.domain(domid)
        if rec.domid != domid:
            raise DomainNotFound(f"xend has no running domain with id {domid}", domain=domid)
        return self._info(rec)

    # ---- vCPUs -------------------------------------------------------------------------

    def vcpus(self, domid: int, /) -> list[VcpuInfo]:
        width = self._width
        soft = CpuMap.full(width)
        out = []
        for v in self.client.vcpuinfo(domid):
            cpus = [c for c in v.cpumap if c < width]
            hard = CpuMap.from_cpus(cpus, width) if cpus else CpuMap.full(width)
            out.append(
                VcpuInfo(
                    domid,
                    v.number,
                    online=v.online,
                    blocked=v.blocked,
                    running=v.running,
                    cpu_time_ns=v.cpu_time_ns,
                    cpu=v.cpu,
                    hard_affinity=hard,
                    soft_affinity=soft,
                )
            )
        return out

    def vcpu(self, domid: int, vcpu: int, /) -> VcpuInfo:
        for v in self.vcpus(domid):
            if v.number == vcpu:
                return v
        raise VcpuNotFound(f"domain {domid} has no vCPU {vcpu}", domain=domid, vcpu=vcpu)

    def snapshot(self) -> ListSnapshot:
        entries: list[Entry] = []
        for info in self.domains():
            try:
                entries.append((info, self.vcpus(info.id)))
            except XenvcpuError as e:
                entries.append((info, e))
        return ListSnapshot(self._width, entries)

    # ---- pinning -----------------------------------------------------------------------

    def _check_pin(
        self, domid: int, vcpu: int | None, hard: CpuMap | None, soft: CpuMap | None, force: bool
    ) -> CpuMap:
        if soft is not None:
            raise NotSupported(
                f"domain {domid}: xend has no soft affinity (Xen <= 4.4); pin the hard "
                "affinity only",
                domain=domid,
                vcpu=vcpu,
            )
        if force:
            raise NotSupported(
                f"domain {domid}: force needs Xen 4.7 or later (XEN_VCPUAFFINITY_FORCE); "
                "xend hosts run Xen <= 4.4, which has no temporary pin overrides",
                domain=domid,
                vcpu=vcpu,
            )
        if hard is None or not hard:
            raise InvalidAffinity(
                f"domain {domid}: give a non-empty hard affinity", domain=domid, vcpu=vcpu
            )
        return hard

    def pin(
        self,
        domid: int,
        vcpu: int,
        hard: CpuMap | None = None,
        soft: CpuMap | None = None,
        force: bool = False,
        /,
    ) -> tuple[CpuMap | None, CpuMap | None]:
        """``op=pincpu``; the effective map is read back with ``op=vcpuinfo``."""
        h = self._check_pin(domid, vcpu, hard, soft, force)
        self.client.pincpu(domid, vcpu, h.to_list())
        return self.vcpu(domid, vcpu).hard_affinity, None

    def pin_all(
        self,
        domid: int,
        hard: CpuMap | None = None,
        soft: CpuMap | None = None,
        force: bool = False,
        /,
    ) -> list[tuple[int, tuple[CpuMap | None, CpuMap | None] | XenvcpuError]]:
        """One ``op=pincpu`` per vCPU (so one failure names its vCPU), one read back."""
        h = self._check_pin(domid, None, hard, soft, force)
        n = self.domain(domid).max_vcpus
        failed: dict[int, XenvcpuError] = {}
        for vcpu in range(n):
            try:
                self.client.pincpu(domid, vcpu, h.to_list())
            except XenvcpuError as e:
                if e.vcpu is None:
                    e.vcpu = vcpu
                failed[vcpu] = e
        after = {v.number: v.hard_affinity for v in self.vcpus(domid)}
        results: list[tuple[int, tuple[CpuMap | None, CpuMap | None] | XenvcpuError]] = []
        for vcpu in range(n):
            err = failed.get(vcpu)
            results.append((vcpu, err if err is not None else (after.get(vcpu), None)))
        return results

    def pin_many(
        self,
        requests: list[tuple[int, int, CpuMap | None, CpuMap | None]],
        force: bool = False,
        /,
    ) -> list[tuple[CpuMap | None, CpuMap | None] | XenvcpuError]:
        """xend has no batches: every request is checked first, then one ``op=pincpu`` each
        (a failure is that pin's result; the others still go)."""
        known = {d.id: d.max_vcpus for d in self.domains()}
        for domid, vcpu, hard, soft in requests:
            self._check_pin(domid, vcpu, hard, soft, force)
            if domid not in known:
                raise DomainNotFound(f"xend has no running domain with id {domid}", domain=domid)
            if not 0 <= vcpu < known[domid]:
                raise VcpuNotFound(f"domain {domid} has no vCPU {vcpu}", domain=domid, vcpu=vcpu)
        out: list[tuple[CpuMap | None, CpuMap | None] | XenvcpuError] = []
        for domid, vcpu, hard, soft in requests:
            try:
                out.append(self.pin(domid, vcpu, hard, soft, force))
            except XenvcpuError as e:
                out.append(e)
        return out


class XendToolstack:
    """Names and the online-vCPU request, through xend."""

    name = "xend"
    #: xend hosts keep no libxl QMP sockets or locks
    run_dir = None
    lib_dir = None

    def __init__(self, client: XendClient) -> None:
        self.client = client

    def guest_record(self, domid: int) -> str | None:
        """xend knows PV and HVM guests (its record's image): "pv" or "hvm"."""
        image = sxp.child(self.client.domain(domid).raw, "image")
        return "hvm" if image is not None and any(sxp.name(k) == "hvm" for k in image[1:]) else "pv"

    def has_device_model(self, domid: int) -> bool:
        return self.guest_record(domid) == "hvm"

    def close(self) -> None:
        """Nothing to close: every xend request opens its own connection."""

    def domain_events(self) -> None:
        """xend has no event stream xenvcpu reads: watchers re-plan on their interval."""
        return None

    def domain_names(self) -> dict[int, str]:
        """Names of the running domains; an unreachable xend gives no names."""
        try:
            return {r.domid: r.name for r in self.client.domains() if r.domid is not None}
        except DaemonError:
            return {}

    def names_with(
        self, read: Callable[[], Sequence[DomainInfo]], complete: bool = True
    ) -> tuple[Sequence[DomainInfo], dict[int, str]]:
        """xend sends no events to keep names by: asked every time, before ``read()``."""
        names = self.domain_names()
        return read(), names

    def pool_name(self, pool: int) -> str | None:
        return "Pool-0" if pool == 0 else None

    def set_availability(self, domid: int, max_vcpus: int, online: Set[int]) -> None:
        """``op=set_vcpus``: only "vCPUs 0..n-1 online" can be asked of xend."""
        wanted = frozenset(online)
        n = len(wanted)
        if wanted != frozenset(range(n)):
            raise NotSupported(
                f"domain {domid}: xend can only set a count (vCPUs 0..n-1 online), not "
                f"exactly vCPU(s) {format_ranges(wanted)}; use set_vcpus(n)",
                domain=domid,
            )
        self.client.set_vcpus(domid, n)

    def availability(self, domid: int) -> dict[int, bool]:
        """xend's ``vcpu_avail`` mask: what was asked of the guest, not what it did."""
        rec = self.client.domain(domid)
        mask = rec.vcpu_avail if rec.vcpu_avail is not None else 0
        return {n: bool(mask >> n & 1) for n in range(rec.max_vcpus or 0)}
