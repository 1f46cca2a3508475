"""The public API: :func:`connect`, :class:`Host`, :class:`Domain`.

One place picks the backend (:func:`connect`). Hypercalls (info, pinning) go through the
Rust core; what Xen keeps in the toolstack — domain and cpupool names, and the online
vCPU request — comes from a :class:`~xenvcpu.toolstack.Toolstack` (xenstore on a real
host, the simulator's own on ``sim:///``).
"""

from __future__ import annotations

import os
import warnings
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Union, overload

from xenvcpu import _impl, backends, placement
from xenvcpu import uri as _uri
from xenvcpu._backend import (
    Capabilities,
    Capability,
    HypervisorBackend,
    Parts,
    SnapshotBackend,
    Toolstack,
)
from xenvcpu._impl import CpuMap, DomainInfo, VcpuInfo
from xenvcpu._limits import DOMID_FIRST_RESERVED, ascii_uint, timeout_arg
from xenvcpu._ranges import valid_range
from xenvcpu.daemon import vcpus as _vcpus
from xenvcpu.daemon.qmp import libxl_socket_path as qmp_socket_path
from xenvcpu.daemon.qmp import no_socket_error
from xenvcpu.errors import (
    AffinityNarrowed,
    CpuListError,
    DomainNotFound,
    InvalidAffinity,
    NoHypervisor,
    NotSupported,
    VcpuNotFound,
    XenvcpuError,
)
from xenvcpu.guests import classify, set_hvm_online
from xenvcpu.placement import Plan, SpecSource
from xenvcpu.records import Cpupool, Pinning
from xenvcpu.sim import SimControl
from xenvcpu.types import SCHEDULERS, CpuTopology, GuestType, HostInfo, Topology
from xenvcpu.types import default_domain_name as default_name

if TYPE_CHECKING:
    from xenvcpu.metrics import Sample

__all__ = ["DEFAULT_URI", "Domain", "DomainVcpus", "Host", "MapSpec", "Snapshot", "connect"]

DEFAULT_URI = _uri.DEFAULT_URI
PRIVCMD_NODES = ("/dev/xen/privcmd", "/proc/xen/privcmd")

#: What a map argument may be: a CpuMap, a cpulist string, little-endian bytes (the 2006
#: proposal's byte map), or CPU numbers.
MapSpec = Union[CpuMap, str, bytes, bytearray, memoryview, Iterable[int]]


def connect(uri: str | None = None) -> Host:
    """Connect to a hypervisor.

    ``xen:///system`` is the local Xen host (privcmd + xenstore; the default where
    ``/dev/xen/privcmd`` exists). ``sim:///default``, ``sim:///?cpus=4096&domains=1000``
    or ``sim:///path/host.toml`` is a simulated host, for trying and testing tools
    without Xen. Both need the native module (``xenvcpu._native``).

    Pure Python (they work without the native module):

    * ``xend+unix:///var/lib/xend/xend-socket`` or ``xend+http://HOST:8000``: a Xen <= 4.4
      host through xend (:mod:`xenvcpu.backends.xend`): info, vCPUs, hard pinning,
      online count (no soft affinity; online vCPUs only as a count 0..n-1).
    * ``xenstore:///`` (the usual xenstored socket or xenbus device) or
      ``xenstore:///PATH/TO/SOCKET``: the xenstore-only path for dom0s where hypercalls
      are unavailable (:mod:`xenvcpu.backends.xenstore`): domain list, names,
      maximum vCPUs, and ``set_vcpus``/``set_online`` (without ``wait``); vCPU state and
      pinning raise NotSupported.

    The URI is read by :func:`xenvcpu.uri.parse`; the backend its scheme names hands over
    its parts, and the Host is built from them here.

    Raises:
        NoHypervisor: no URI was given and this machine is not a Xen control domain.
        PermissionDenied: privcmd exists but this process may not use it (run as root).
        InterfaceMismatch: the running Xen speaks an interface version xenvcpu does not know.
        NotSupported: an unknown URI scheme.
        InvalidUri: a malformed URI of a known scheme.
    """
    if uri is None:
        if not any(os.path.exists(p) for p in PRIVCMD_NODES):
            raise NoHypervisor(
                "no Xen hypervisor here (neither /dev/xen/privcmd nor /proc/xen/privcmd "
                "exists); to try xenvcpu without Xen, use connect('sim:///default')"
                + (
                    ""
                    if _impl.HAVE_NATIVE
                    else f" once xenvcpu._native loads ({_impl.NATIVE_ERROR})"
                )
            )
        uri = DEFAULT_URI
    parsed = _uri.parse(uri)
    return Host(parsed, backends.open_parts(parsed))


class DomainVcpus(NamedTuple):
    """One domain of a :meth:`Host.snapshot`: its vCPUs, or the error reading them."""

    domain: Domain
    vcpus: list[VcpuInfo]
    error: XenvcpuError | None


class Host:
    """A hypervisor host. Get one with :func:`connect`."""

    def __init__(self, uri: _uri.Uri, parts: Parts) -> None:
        #: The URI as given to :func:`connect`.
        self.uri: str = uri.text
        self._backend: HypervisorBackend = parts.hypervisor
        #: Names and the online-vCPU request (xenstore, the simulator's, or xend).
        self.toolstack: Toolstack = parts.toolstack
        #: What this backend can do (see :class:`~xenvcpu._backend.Capabilities`).
        self.capabilities: Capabilities = parts.capabilities
        self._sim = parts.sim
        self._topology: Topology | None = None

    def __repr__(self) -> str:
        return f"<Host {self.uri} Xen {self.xen_version} via {self.backend}>"

    def close(self) -> None:
        """Close the toolstack connection (xenstored); the hypercall handle closes with
        the Host. ``with xenvcpu.connect() as host:`` does this at the end of the block."""
        self.toolstack.close()

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _hv(self) -> Any:
        """The backend object, untyped: for backend-specific switches in tests and
        benchmarks (e.g. the native ``multicall`` switch)."""
        return self._backend

    @property
    def sim(self) -> SimControl | None:
        """The simulated host's controls (faults, clock, guests: :class:`~xenvcpu.sim.SimControl`)
        on ``sim:`` URIs; None on every other backend."""
        return self._sim

    @property
    def backend(self) -> str:
        """What serves hypercalls: "privcmd" or "sim" (or "xend", "xenstore")."""
        return self._backend.transport

    @property
    def xen_version(self) -> str:
        """``major.minor``, or "unknown" where the backend cannot tell (xenstore:///)."""
        major, minor, _, _ = self._backend.version
        return f"{major}.{minor}" if major else "unknown"

    @property
    def max_cpus(self) -> int:
        """Width of every CPU map of this host (max_cpu_id + 1, offline CPUs included)."""
        return self._backend.width

    @property
    def cpus(self) -> CpuMap:
        """The online physical CPUs."""
        return self._backend.online_cpus()

    @property
    def info(self) -> HostInfo:
        p = self._backend.physinfo()
        return HostInfo(
            xen_version=self.xen_version,
            nr_cpus=p["nr_cpus"],
            max_cpu_id=p["max_cpu_id"],
            threads_per_core=p["threads_per_core"],
            cores_per_socket=p["cores_per_socket"],
            nr_nodes=p["nr_nodes"],
            cpu_mhz=p["cpu_khz"] // 1000,
            total_memory_mib=p["total_pages"] * 4096 // (1 << 20),
            free_memory_mib=p["free_pages"] * 4096 // (1 << 20),
        )

    @property
    def topology(self) -> Topology:
        """Core, socket and node of every present CPU, and the cpupools (read once per
        Host; :meth:`read_topology` reads them again)."""
        if self._topology is None:
            self._topology = self.read_topology()
        return self._topology

    def read_topology(self) -> Topology:
        """Read the topology and the cpupools now (and keep them for :attr:`topology`)."""
        rows = self._backend.topology()
        cpus = tuple(CpuTopology(cpu, *row) for cpu, row in enumerate(rows) if row is not None)
        per_cpu: list[list[int | None]] = [[None] * self.max_cpus for _ in range(3)]
        for c in cpus:
            if c.cpu < self.max_cpus:
                per_cpu[0][c.cpu], per_cpu[1][c.cpu], per_cpu[2][c.cpu] = c.node, c.socket, c.core
        try:
            pools = {p.name: tuple(p.cpus) for p in self.cpupools}
        except NotSupported:  # a backend without cpupools: pool: terms name none
            pools = {}
        self._topology = Topology(
            cpus=cpus,
            cpu_to_node=tuple(per_cpu[0]),
            cpu_to_socket=tuple(per_cpu[1]),
            cpu_to_core=tuple(per_cpu[2]),
            pools=pools,
        )
        return self._topology

    @property
    def cpupools(self) -> list[Cpupool]:
        return [
            Cpupool(
                id=pid,
                name=self.toolstack.pool_name(pid) or f"Pool-{pid}",
                scheduler=SCHEDULERS.get(sched, f"scheduler-{sched}"),
                cpus=cpus,
                n_domains=n_dom,
            )
            for pid, sched, n_dom, cpus in self._backend.cpupools()
        ]

    def cpumap(self, spec: MapSpec, *, what: str = "CPU map") -> CpuMap:
        """A map of this host's width from a CpuMap, a cpulist (``"0-3,^2"``, ``"node:1"``),
        little-endian bytes (the 2006 proposal's byte map: CPU0-7 in the first byte, so
        ``b"\\x01"`` is CPU 0), or CPU numbers.

        Raises:
            CpuListError: malformed cpulist, or a CPU number or byte-map bit outside the host.
            InvalidAffinity: a CpuMap with CPUs beyond this host's CPUs.
        """
        width = self.max_cpus
        if isinstance(spec, CpuMap):
            if spec.width == width:
                return spec
            try:
                return spec.resized(width)
            except CpuListError as e:
                raise InvalidAffinity(
                    f"{what} {spec} is wider than the host: CPU {e.cpu} does not exist; "
                    f"valid CPUs are {valid_range(width)}"
                ) from None
        if isinstance(spec, str):
            return CpuMap.parse(spec, width, topology=self.topology)
        if isinstance(spec, (bytes, bytearray, memoryview)):
            return CpuMap.from_bytes(spec, width)
        return CpuMap.from_cpus(spec, width)

    # ---- domains -----------------------------------------------------------------------

    def _names(
        self, read: Callable[[], Sequence[DomainInfo]], complete: bool = True
    ) -> tuple[Sequence[DomainInfo], dict[int, str]]:
        # read() and the names of its domains: the toolstack keeps the names it has seen,
        # by domid and UUID, while it can tell that they hold (xenstore: a watch), so most
        # listings read none; what it knows is taken before read() runs
        return self.toolstack.names_with(read, complete)

    def _domain(self, info: DomainInfo, names: dict[int, str]) -> Domain:
        return Domain(self, info, names.get(info.id) or default_name(info.id))

    def domains(self) -> list[Domain]:
        """Every domain, by id."""
        infos, names = self._names(self._backend.domains)
        return [self._domain(d, names) for d in infos]

    def domain(self, ref: int | str | Domain) -> Domain:
        """A domain by id, by name, or a decimal id given as a string.

        Raises:
            DomainNotFound: no such domain; the message lists the known ones.
        """
        if isinstance(ref, Domain):
            return ref
        domid: int | None = None
        names: dict[int, str] | None = None
        if isinstance(ref, bool):
            raise TypeError("a domain is an id (int) or a name (str)")
        if isinstance(ref, int):
            domid = ref
        elif isinstance(ref, str):
            names = self._all_names()
            matches = [i for i, n in names.items() if n == ref]
            if matches:
                domid = matches[0]
            else:  # a decimal id: ASCII digits only ("٣" is not domain 3)
                domid = ascii_uint(ref, DOMID_FIRST_RESERVED)
        else:
            raise TypeError(f"a domain is an id (int) or a name (str), not {type(ref).__name__}")
        if domid is None or not 0 <= domid < DOMID_FIRST_RESERVED:
            raise DomainNotFound(
                f"no domain named {ref!r}; known domains: {self._known(names)}", domain=ref
            )
        read = self._backend.domain
        try:
            if names is None:
                (info,), names = self._names(lambda: [read(domid)], complete=False)
            else:
                info = read(domid)
        except DomainNotFound:
            raise DomainNotFound(
                f"no domain with id {domid}; known domains: {self._known(names)}", domain=domid
            ) from None
        return self._domain(info, names)

    def _all_names(self) -> dict[int, str]:
        """Every domain's name: where the domain list is one hypercall (privcmd, sim), by
        its domids through the toolstack's cache; elsewhere (xenstore:///, xend, whose
        list costs a request or more per domain) the toolstack's own listing."""
        if self.backend in ("privcmd", "sim"):
            return self._names(self._backend.domains)[1]
        return self.toolstack.domain_names()

    def _known(self, names: dict[int, str] | None) -> str:
        if names is None:
            names = self._all_names()
        ids = [d.id for d in self._backend.domains()]
        return ", ".join(f"{names.get(i) or default_name(i)} ({i})" for i in ids) or "none"

    def plan(self, spec: SpecSource) -> Plan:
        """What a placement spec wants of this host, against what it has (reads only):
        a :class:`~xenvcpu.placement.Plan` to look at (``changes``, ``diff()``,
        ``to_json()``) and to :meth:`~xenvcpu.placement.Plan.apply`.

        ``spec``: a path to a TOML or JSON placement file, the same data as a ``dict``,
        or a loaded :class:`~xenvcpu.placement.Spec` (docs/placement.md).

        Raises:
            PlacementError: a malformed spec, an entry naming a domain that does not
                exist, or a cpulist this host cannot read (file, entry, key and token
                named).
        """
        return placement.plan(self, spec)

    def snapshot(self) -> Snapshot:
        """Every vCPU of every domain, in one batched pass (the GIL is released throughout).

        The result is a sequence of :class:`DomainVcpus`, made on demand; whole columns
        (``column("cpu")``, ``maps("hard")``) come out without a Python object per vCPU.
        A domain that vanished or failed midway carries its error instead of vCPUs, so
        one domain cannot hide the others.
        """
        taken: list[SnapshotBackend] = []

        def read() -> list[DomainInfo]:
            taken.append(self._backend.snapshot())
            return taken[0].domains()

        infos, names = self._names(read)
        return Snapshot(self, taken[0], names, infos)

    def sample(self, interval: float = 1.0) -> Sample:
        """Utilisation of every vCPU, domain and pCPU over the next ``interval`` seconds:
        a snapshot, a sleep, a snapshot (:class:`xenvcpu.metrics.Sampler`, which keeps the
        previous snapshot for repeated sampling, is the tool for more than one).

        Raises:
            ValueError: ``interval`` is not 0 to 86,400 seconds.
        """
        from xenvcpu.metrics import Sampler

        return Sampler(self).sample_over(interval)


class Snapshot(Sequence["DomainVcpus"]):
    """Every vCPU of every domain at one moment; ``snap[i]`` is the i-th domain's
    :class:`DomainVcpus`. Columns over all vCPUs: :meth:`column`, :meth:`maps`."""

    def __init__(
        self,
        host: Host,
        native: SnapshotBackend,
        names: dict[int, str],
        infos: Sequence[DomainInfo] | None = None,
    ) -> None:
        self.host = host
        self.native = native
        self.names = names
        self._infos = infos  # native.domains(), when the caller has it already

    def __repr__(self) -> str:
        return f"<Snapshot of {self.host.uri}: {len(self)} domains, {self.vcpu_count} vCPUs>"

    def __len__(self) -> int:
        return self.native.domain_count

    @property
    def vcpu_count(self) -> int:
        """vCPUs of the domains that answered."""
        return len(self.native)

    @overload
    def __getitem__(self, i: int) -> DomainVcpus: ...

    @overload
    def __getitem__(self, i: slice) -> list[DomainVcpus]: ...

    def __getitem__(self, i: int | slice) -> DomainVcpus | list[DomainVcpus]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"domain index {i} out of range (the snapshot has {n} domains)")
        i %= n
        dom = self.host._domain(self.native.domain(i), self.names)
        err = self.native.error(i)
        if err is not None:
            return DomainVcpus(dom, [], err)
        return DomainVcpus(dom, self.native.vcpus(i), None)

    def __iter__(self) -> Iterator[DomainVcpus]:
        # what self[i] gives for each i, without its per-index checks: iterating is how a
        # whole snapshot is read, and a host has thousands of domains
        native, host, names, new = self.native, self.host, self.names, tuple.__new__
        infos = self._infos if self._infos is not None else native.domains()
        for i, info in enumerate(infos):
            row: tuple[Domain, list[VcpuInfo], XenvcpuError | None]
            try:
                row = (host._domain(info, names), native.vcpus(i), None)
            except XenvcpuError as e:  # vcpus(i) raises what error(i) returns
                row = (host._domain(info, names), [], e)
            yield new(DomainVcpus, row)

    def domain_at(self, i: int) -> Domain:
        """The i-th domain alone, without building its vCPUs' objects."""
        return self.host._domain(self.native.domain(i), self.names)

    def error_at(self, i: int) -> XenvcpuError | None:
        """Why the i-th domain's vCPUs could not be read, or None."""
        return self.native.error(i)

    def column(self, name: str) -> array[int]:
        """One field of every vCPU as an ``array.array`` (see ``_native.Snapshot.column``)."""
        return self.native.column(name)

    def maps(self, kind: str, start: int = 0, stop: int | None = None) -> bytes:
        """Every vCPU's ``"hard"`` or ``"soft"`` map, ``maplen`` bytes each, back to back
        (with ``start``/``stop``, those of the flat vCPUs ``start:stop`` only)."""
        return self.native.maps(kind, start, stop)

    def domain_columns(self) -> tuple[list[int], list[int], list[int], list[int]]:
        """Per domain: ids, max_vcpus, cpupools and shapes (vCPUs read, numbered 0..n-1;
        -1: unreadable; -2: numbers with gaps), without a record per domain."""
        return self.native.domain_columns()

    def differences(
        self,
        domains: list[int],
        hard: Sequence[CpuMap | None] | None = None,
        soft: Sequence[CpuMap | None] | None = None,
        online: Sequence[int] | None = None,
    ) -> list[tuple[int, int, int, bool]]:
        """Which of ``domains`` (indexes) differ from the wanted maps (one per vCPU, None:
        not compared) and online set: ``(position in domains, hard differing, soft
        differing, online differs)`` for each that does, in order (see
        ``_native.Snapshot.differences``)."""
        return self.native.differences(domains, hard, soft, online)

    def offsets(self) -> list[int]:
        """Where each domain's vCPUs are in the columns: domain i's are
        ``offsets[i]:offsets[i + 1]`` (none for a domain whose vCPUs could not be read)."""
        return self.native.offsets()

    @property
    def maplen(self) -> int:
        """Bytes of one map in :meth:`maps`."""
        return self.native.maplen


class Domain:
    """One domain. Identity (id, name, uuid, max_vcpus, cpupool) is fixed; state is read live."""

    def __init__(self, host: Host, info: DomainInfo, name: str) -> None:
        self.host = host
        self.id = info.id
        self.name = name
        self._uuid: str | None = None  # formatted on first use (a snapshot makes thousands)
        self.max_vcpus = info.max_vcpus
        self.cpupool = info.cpupool
        self._info = info
        self._record = info  # the record it was made from (its identity)
        self._guest: tuple[GuestType, str] | None = None

    def __repr__(self) -> str:
        return f"<Domain {self.name} id={self.id} vcpus={self.max_vcpus}>"

    @property
    def uuid(self) -> str:
        """The domain's UUID (8-4-4-4-12), as it was when this object was made."""
        if self._uuid is None:
            self._uuid = self._record.uuid
        return self._uuid

    def _classify(self) -> tuple[GuestType, str]:
        if self._guest is None:  # a domain keeps its type for life: read it once
            self._guest = classify(self.id, self._info.hvm, self.host.toolstack)
        return self._guest

    @property
    def guest_type(self) -> GuestType:
        """PV, PVH or HVM, decided as libxl decides it (:func:`xenvcpu.guests.classify`)."""
        return self._classify()[0]

    @property
    def guest_type_rule(self) -> str:
        """Which rule decided :attr:`guest_type` (for ``xenvcpu doctor``)."""
        return self._classify()[1]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Domain) and (other.host, other.id, other.uuid) == (
            self.host,
            self.id,
            self.uuid,
        )

    def __hash__(self) -> int:
        return hash((self.id, self.uuid))

    @property
    def label(self) -> str:
        return f"domain {self.name} (id {self.id})"

    def info(self) -> DomainInfo:
        """A fresh getdomaininfo record."""
        self._info = self.host._backend.domain(self.id)
        return self._info

    @property
    def online_vcpus(self) -> int:
        """vCPUs online now (read from Xen)."""
        return self.info().online_vcpus

    def _check_vcpu(self, vcpu: int) -> int:
        if isinstance(vcpu, bool) or not isinstance(vcpu, int):
            raise TypeError(f"a vCPU number is an int, not {type(vcpu).__name__}")
        if not 0 <= vcpu < self.max_vcpus:
            raise VcpuNotFound(
                f"{self.label} has no vCPU {vcpu}: valid vCPUs are {valid_range(self.max_vcpus)}",
                domain=self.id,
                vcpu=vcpu,
            )
        return vcpu

    def vcpus(self) -> list[VcpuInfo]:
        """Every vCPU: state, CPU time, pCPU, hard and soft affinity (one batched call)."""
        return self.host._backend.vcpus(self.id)

    def vcpu(self, vcpu: int) -> VcpuInfo:
        return self.host._backend.vcpu(self.id, self._check_vcpu(vcpu))

    def _maps(
        self, hard: MapSpec | None, soft: MapSpec | None
    ) -> tuple[CpuMap | None, CpuMap | None]:
        if hard is None and soft is None:
            raise InvalidAffinity(
                f"{self.label}: give a hard or a soft affinity (or both)", domain=self.id
            )
        host = self.host
        width = host._backend.width
        # a CpuMap of the host's width is used as it is (what tools that pin often pass):
        # no conversion call, which costs tens of microseconds of a pin_all under TCG
        h = hard if type(hard) is CpuMap and hard.width == width else None
        if h is None and hard is not None:
            h = host.cpumap(hard, what="hard affinity")
        s = soft if type(soft) is CpuMap and soft.width == width else None
        if s is None and soft is not None:
            s = host.cpumap(soft, what="soft affinity")
        if h is not None and not h:
            raise InvalidAffinity(
                f"{self.label}: the hard affinity is empty; a vCPU needs at least one CPU "
                f"(valid CPUs are 0-{self.host.max_cpus - 1})",
                domain=self.id,
            )
        return h, s

    def pin_vcpu(
        self,
        vcpu: int,
        hard: MapSpec | None = None,
        soft: MapSpec | None = None,
        force: bool = False,
    ) -> Pinning:
        """Set the hard and/or soft affinity of one vCPU; returns what Xen applied.

        Warns with :class:`~xenvcpu.errors.AffinityNarrowed` when Xen applied less than
        asked (CPUs outside the domain's cpupool, or soft CPUs outside the hard map).

        Raises:
            VcpuNotFound, InvalidAffinity, AffinityBusy (retry with force=True),
            CpuListError, DomainNotFound.
        """
        vcpu = self._check_vcpu(vcpu)
        h, s = self._maps(hard, soft)
        eh, es = self.host._backend.pin(self.id, vcpu, h, s, force)
        p = Pinning(self.id, vcpu, h, s, eh, es)
        if p.narrowed:
            _warn_narrowed(self, p)
        return p

    def pin_all(
        self, hard: MapSpec | None = None, soft: MapSpec | None = None, force: bool = False
    ) -> list[Pinning]:
        """Pin every vCPU (offline ones too, like ``xl vcpu-pin D all``), batched.

        Input is validated before anything changes. If Xen refuses some vCPUs, the others
        are still pinned and the error raised names every vCPU that failed.
        """
        h, s = self._maps(hard, soft)
        pins: list[Pinning]
        failed: list[tuple[int, XenvcpuError]]
        fast = getattr(self.host._backend, "_pin_all_records", None)
        if fast is not None:
            # the native backend builds the Pinning records itself (no loop here), and
            # reads the domain again in the pins' own batch (this object's record says
            # which vCPUs it has): no getdomaininfo hypercall before them
            pins, failed, narrowed_at = fast(self.id, h, s, force, Pinning, self._record)
        else:
            results = self.host._backend.pin_all(self.id, h, s, force)
            pins = [
                Pinning(self.id, vcpu, h, s, r[0], r[1])
                for vcpu, r in results
                if not isinstance(r, XenvcpuError)
            ]
            failed = [(v, r) for v, r in results if isinstance(r, XenvcpuError)]
            narrowed_at = [i for i, p in enumerate(pins) if p.narrowed]
        if failed:
            first = failed[0][1]
            listed = ", ".join(str(v) for v, _ in failed)
            raise type(first)(
                f"{self.label}: pinning failed for vCPU {listed} ({first}); "
                f"{len(pins)} other vCPU(s) were pinned",
                errno=first.errno,
                domain=self.id,
                vcpu=failed[0][0],
            )
        if narrowed_at:
            _warn_narrowed(self, pins[narrowed_at[0]], count=len(narrowed_at))
        return pins

    # ---- online vCPUs (toolstack path) ---------------------------------------------------

    def _online_now(self) -> set[int]:
        return {v.number for v in self.vcpus() if v.online}

    def set_vcpus(self, n: int, wait: bool = False, timeout: float = 30.0) -> None:
        """Bring vCPUs 0..n-1 online and the rest offline.

        No hypercall can do this for a running domain. PV and PVH guests: the toolstack
        asks the guest through xenstore and the guest acts. HVM guests: their QEMU
        hot-adds or hot-removes CPUs (QMP, under libxl's domain lock) and the guest acts
        on the ACPI notification; availability is written to xenstore as well, as libxl
        does. With ``wait=True``, block until Xen shows exactly that set online (and, for
        HVM, QEMU too), or raise :class:`~xenvcpu.errors.VcpuTimeout` naming the vCPUs
        that did not follow. ``timeout`` covers the whole operation.

        Raises:
            VcpuCountError: ``n`` outside 1..max_vcpus. DomainDying.
            QmpError: an HVM guest's QEMU is missing or refused (a removal refused by
                the guest's legacy ACPI CPU hotplug says which vCPUs stay online).
            NotSupported: the backend cannot (e.g. HVM over xend, wait over xenstore:///).
        """
        timeout = timeout_arg(timeout)
        info = self.info()
        _vcpus.check_settable(self.name, dying=info.dying)
        self._apply_online(_vcpus.validate_count(self.name, n, info.max_vcpus), wait, timeout)

    def set_online(self, vcpus: MapSpec, wait: bool = False, timeout: float = 30.0) -> None:
        """Choose exactly which vCPUs are online (a CpuMap over vCPU numbers, a list such as
        ``"0,2-3"``, a byte map of vCPUs, or numbers); the others go offline. See
        :meth:`set_vcpus`."""
        timeout = timeout_arg(timeout)
        info = self.info()
        _vcpus.check_settable(self.name, dying=info.dying)
        wanted: Iterable[int]
        if isinstance(vcpus, str):
            wanted = CpuMap.parse(vcpus, max(info.max_vcpus, 1))
        elif isinstance(vcpus, (bytes, bytearray, memoryview)):
            wanted = CpuMap.from_bytes(vcpus, max(info.max_vcpus, 1))
        else:
            wanted = vcpus
        online = _vcpus.validate_online(self.name, wanted, info.max_vcpus)
        self._apply_online(online, wait, timeout)

    def check_online_path(self, wait: bool = False) -> None:
        """Raise what changing this domain's online vCPUs would raise before changing
        anything (no backend support, an HVM guest without a reachable device model);
        return quietly when the way is open. A plan checks this for every domain whose
        online set it changes.

        Raises:
            NotSupported, QmpError: as :meth:`set_online` would.
        """
        caps, toolstack = self.host.capabilities, self.host.toolstack
        if wait:
            caps.require(Capability.WAIT_ONLINE, f"{self.label}: wait=True", domain=self.id)
        if self.guest_type is not GuestType.HVM:
            return
        caps.require(
            Capability.HVM_HOTPLUG,
            f"{self.label} is an HVM guest: changing its online vCPUs",
            domain=self.id,
        )
        if toolstack.run_dir is None or toolstack.lib_dir is None:
            raise NotSupported(
                f"{self.label} is an HVM guest of a simulated host without a device model: "
                "connect with run_dir=DIR, a directory holding a QEMU's QMP socket "
                f"qmp-libxl-{self.id}, to change its vCPUs through that QEMU",
                domain=self.id,
            )
        socket_path = qmp_socket_path(self.id, toolstack.run_dir)
        if not os.path.exists(socket_path):  # no device model: say so before any lock
            raise no_socket_error(socket_path)

    def _apply_online(self, online: frozenset[int], wait: bool, timeout: float) -> None:
        toolstack = self.host.toolstack
        self.check_online_path(wait)
        if self.guest_type is not GuestType.HVM:
            toolstack.set_availability(self.id, self.max_vcpus, online)
            if wait:
                _vcpus.wait_online(self._online_now, online, timeout, domain=self.name)
            return
        assert toolstack.run_dir is not None and toolstack.lib_dir is not None
        set_hvm_online(
            domid=self.id,
            uuid=self.uuid,
            label=self.label,
            max_vcpus=self.max_vcpus,
            online=online,
            run_dir=toolstack.run_dir,
            lib_dir=toolstack.lib_dir,
            write_availability=toolstack.set_availability,
            read_online=self._online_now if wait else None,
            timeout=timeout,
        )


def _warn_narrowed(dom: Domain, p: Pinning, count: int = 1) -> None:
    parts = []
    if p.requested_hard is not None and p.hard != p.requested_hard:
        parts.append(f"hard {p.requested_hard} -> {p.hard}")
    if p.requested_soft is not None and p.soft != p.requested_soft:
        parts.append(f"soft {p.requested_soft} -> {p.soft or '(empty)'}")
    more = f" (and {count - 1} more vCPU(s))" if count > 1 else ""
    warnings.warn(
        f"{dom.label} vCPU {p.vcpu}: Xen applied less than requested: {'; '.join(parts)}{more}",
        AffinityNarrowed,
        stacklevel=3,
    )
