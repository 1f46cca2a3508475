"""Utilisation sampling: per-vCPU, per-domain and per-pCPU load between two snapshots.

What ``xenvcpu top`` shows and what a tool computes from two readings of the host::

    >>> import xenvcpu
    >>> from xenvcpu.metrics import Sampler
    >>> host = xenvcpu.connect("sim:///default")
    >>> host.sim.freeze_clock()
    >>> sampler = Sampler(host)
    >>> first = sampler.sample()               # the reference: no utilisation yet
    >>> host.sim.advance(2.0)                  # on a real host: time passes
    >>> s = sampler.sample()
    >>> s.interval_s, round(s.domain("batch").util, 2)   # CPUs' worth used by batch
    (2.0, 3.27)

(``Host.sample(interval)`` does the same in one call, sleeping ``interval`` seconds.)

A :class:`Sample` is columnar like :class:`~xenvcpu.Snapshot`: one ``array.array`` per
field over every vCPU that was read (``util``, ``cpu_time_ns``, ``cpu``, ``state``, ``domid``,
``number``), in the snapshot's order; :class:`DomainSample` is a view of one domain's slice
of them, and ``pcpu_load`` / ``pcpu_vcpus`` are indexed by physical CPU. Nothing here builds
a Python object per vCPU.

Utilisation is CPU-time delta / wall time: 1.0 is one physical CPU's worth. It is NaN where
it cannot be known: in the first sample, for a domain seen for the first time, for a domain
that came back (under a new domid, or after it vanished: its counters restarted), and for a
vCPU whose counter went backwards. A domain whose vCPUs could not be read in a snapshot
carries its error and no vCPUs; its last good reading is kept, so the next sample measures
it over the longer interval. Domains are tracked by UUID.

Xen before 4.13 can leak ``XEN_RUNSTATE_UPDATE`` (bit 63) into a vCPU's CPU time
(docs/xen-interfaces.md §3.5); the sampler masks it there (:func:`leaks_runstate_update`), so
counters never jump by 2⁶³ ns.
"""

from __future__ import annotations

import math
import time
from array import array
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import sub, truediv
from typing import TYPE_CHECKING, Callable, NamedTuple, Protocol

from xenvcpu._limits import timeout_arg
from xenvcpu.errors import DomainNotFound, XenvcpuError
from xenvcpu.types import default_domain_name

if TYPE_CHECKING:
    from xenvcpu._backend import SnapshotBackend
    from xenvcpu._impl import CpuMap
    from xenvcpu.sim import SimControl
    from xenvcpu.types import Topology

__all__ = [
    "RUNSTATE_UPDATE",
    "DomainSample",
    "GoneDomain",
    "Sample",
    "Sampler",
    "SamplingHost",
    "SamplingSnapshot",
    "cpu_times",
    "domain_blocks",
    "leaks_runstate_update",
]


class SamplingHost(Protocol):
    """What sampling needs of a host: a :class:`xenvcpu.Host` is one. (A protocol, so that
    this module does not import ``xenvcpu.host``, which imports it for ``Host.sample``.)"""

    @property
    def uri(self) -> str: ...
    @property
    def xen_version(self) -> str: ...
    @property
    def max_cpus(self) -> int: ...
    @property
    def cpus(self) -> CpuMap: ...
    @property
    def topology(self) -> Topology: ...
    @property
    def sim(self) -> SimControl | None: ...
    def snapshot(self) -> SamplingSnapshot: ...


class SamplingSnapshot(Protocol):
    """What sampling reads of a snapshot: a :class:`xenvcpu.Snapshot` is one."""

    @property
    def host(self) -> SamplingHost: ...
    @property
    def native(self) -> SnapshotBackend: ...
    @property
    def names(self) -> dict[int, str]: ...
    def column(self, name: str) -> array[int]: ...
    def maps(self, kind: str) -> bytes: ...


#: ``XEN_RUNSTATE_UPDATE``: bit 63 of a runstate time.
RUNSTATE_UPDATE = 1 << 63
_KEEP = RUNSTATE_UPDATE - 1
#: The first release that no longer leaks it into getvcpuinfo's cpu_time.
FIXED_IN = (4, 13)
#: Samples a vanished domain is remembered for, to recognise it when it comes back.
REMEMBER_GONE = 16

NAN = math.nan


def leaks_runstate_update(xen_version: str) -> bool:
    """Whether a hypervisor of this ``major.minor`` (``Host.xen_version``) can leak bit 63
    into per-vCPU CPU time: before 4.13, and where the version is unknown (masking costs
    nothing there: no CPU time comes near 2⁶³ ns, 292 years)."""
    try:
        major, minor = (int(x) for x in xen_version.split(".")[:2])
    except ValueError:
        return True
    return (major, minor) < FIXED_IN


def cpu_times(snapshot: SamplingSnapshot, mask: bool) -> array[int]:
    """The snapshot's ``cpu_time_ns`` column, with bit 63 cleared when ``mask`` (see
    :func:`leaks_runstate_update`). The column is copied only if some value has the bit."""
    col = snapshot.column("cpu_time_ns")
    if mask and col and max(col) > _KEEP:
        col = array("Q", [t & _KEEP for t in col])
    return col


def domain_blocks(
    snapshot: SamplingSnapshot, domains: array[int] | None = None
) -> list[tuple[int, int]]:
    """``(start, stop)`` of every domain's vCPUs in the snapshot's flat columns (``(k, k)``
    for a domain whose vCPUs could not be read). ``domains`` is the ``"domain"`` column, if
    the caller has it already."""
    col = snapshot.column("domain") if domains is None else domains
    native = snapshot.native
    n = len(col)
    out: list[tuple[int, int]] = []
    k = 0
    for i in range(native.domain_count):
        if native.error(i) is not None or k >= n:
            out.append((k, k))
            continue
        domid = col[k]
        # Blocks are contiguous and domids unique, so when both ends hold the domid and the
        # next slot does not, the block is exact; snapshots list domains in id order, where
        # bisect finds the end at once. Anything else: walk.
        stop = bisect_right(col, domid, k)
        if not (stop > k and col[stop - 1] == domid and (stop == n or col[stop] != domid)):
            stop = k
            while stop < n and col[stop] == domid:
                stop += 1
        out.append((k, stop))
        k = stop
    return out


class GoneDomain(NamedTuple):
    """A domain of the previous sample that is not in this one."""

    name: str
    id: int
    uuid: str


class _Last(NamedTuple):
    """The last good reading of one domain."""

    domid: int
    name: str
    time_ns: int
    cpu_time_ns: array[int]


#: Statuses of a :class:`DomainSample`.
STATUSES = ("ok", "first", "returned", "error")


class DomainSample:
    """One domain of a :class:`Sample`: a view of its slice of the sample's columns.

    ``status`` is ``"ok"`` (measured against its previous reading), ``"first"`` (no
    previous reading: the first sample, or a new domain), ``"returned"`` (it came back under
    a new domid, ``previous_id``, or after it vanished: its counters restarted), or
    ``"error"`` (its vCPUs could not be read: ``error``; the next sample measures it from
    its last good reading)."""

    __slots__ = (
        "_sample",
        "cpupool",
        "error",
        "id",
        "index",
        "interval_s",
        "max_vcpus",
        "name",
        "online_vcpus",
        "previous_id",
        "start",
        "status",
        "stop",
        "util",
        "uuid",
    )

    def __init__(
        self,
        sample: Sample,
        index: int,
        name: str,
        domid: int,
        uuid: str,
        max_vcpus: int,
        online_vcpus: int,
        cpupool: int,
        block: tuple[int, int],
        status: str,
        previous_id: int | None,
        interval_s: float | None,
        util: float,
        error: XenvcpuError | None,
    ) -> None:
        self._sample = sample
        #: Position in the snapshot (``Sample.snapshot[index]``).
        self.index = index
        self.name = name
        self.id = domid
        self.uuid = uuid
        self.max_vcpus = max_vcpus
        self.online_vcpus = online_vcpus
        self.cpupool = cpupool
        #: Its vCPUs are ``start:stop`` of the sample's columns (empty on error).
        self.start, self.stop = block
        self.status = status
        self.previous_id = previous_id
        #: Seconds since this domain's previous good reading (None when there is none).
        self.interval_s = interval_s
        #: Sum of its vCPUs' utilisation, in CPUs (NaN when unknown).
        self.util = util
        self.error = error

    def __repr__(self) -> str:
        return (
            f"<DomainSample {self.name} id={self.id} {self.status} util={self.util:.3f} "
            f"vcpus={self.stop - self.start}>"
        )

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def vcpu_util(self) -> array[float]:
        return self._sample.util[self.start : self.stop]

    @property
    def cpu_time_ns(self) -> array[int]:
        return self._sample.cpu_time_ns[self.start : self.stop]

    @property
    def numbers(self) -> array[int]:
        return self._sample.number[self.start : self.stop]

    @property
    def states(self) -> array[int]:
        """0 offline, 1 running, 2 blocked, 3 runnable (``VcpuState`` values)."""
        return self._sample.state[self.start : self.stop]

    @property
    def cpus(self) -> array[int]:
        """pCPU of each vCPU, -1 when offline."""
        return self._sample.cpu[self.start : self.stop]


class Sample:
    """Utilisation between two snapshots (see the module documentation).

    Columns over every vCPU read (the snapshot's flat order): ``domid``, ``number``,
    ``state``, ``cpu`` (-1 offline) and ``cpu_time_ns`` (bit 63 masked where it leaks) are
    the snapshot's; ``util`` (``array('d')``, NaN when unknown) is this sample's. Per
    physical CPU (indexed by CPU id, ``Host.max_cpus`` long): ``pcpu_vcpus``, the online
    vCPUs seen on it at the sample's moment, and ``pcpu_load``, the sum of their
    utilisation over the interval (above 1.0: they pile up on it)."""

    def __init__(
        self,
        snapshot: SamplingSnapshot,
        time_ns: int,
        interval_s: float | None,
        masked: bool,
        cpu_time_ns: array[int],
        domain: array[int],
    ) -> None:
        self.snapshot = snapshot
        self.host = snapshot.host
        #: The sampler's clock at the snapshot (nanoseconds).
        self.time_ns = time_ns
        #: Seconds since the previous sample (None for the first).
        self.interval_s = interval_s
        #: Whether bit 63 of CPU time was masked (Xen < 4.13).
        self.masked = masked
        self.cpu_time_ns = cpu_time_ns
        #: The domid of every vCPU (the snapshot's ``"domain"`` column).
        self.domid = domain
        self.number = snapshot.column("number")
        self.state = snapshot.column("state")
        self.cpu = snapshot.column("cpu")
        self.util: array[float] = array("d")
        self.domains: list[DomainSample] = []
        #: Domains of the previous sample that are gone.
        self.vanished: list[GoneDomain] = []
        #: vCPUs whose counter went backwards (utilisation NaN), as flat indices.
        self.resets: list[int] = []
        self.pcpu_load: array[float] = array("d")
        self.pcpu_vcpus: array[int] = array("I")

    def __repr__(self) -> str:
        iv = "first" if self.interval_s is None else f"{self.interval_s:.3f} s"
        return f"<Sample of {self.host.uri}: {len(self.domains)} domains, {len(self)} vCPUs, {iv}>"

    def __len__(self) -> int:
        return len(self.cpu_time_ns)

    def domain(self, ref: int | str) -> DomainSample:
        """A domain of the sample by id or name."""
        for d in self.domains:
            if d.id == ref or d.name == ref:
                return d
        known = ", ".join(f"{d.name} ({d.id})" for d in self.domains) or "none"
        raise DomainNotFound(f"no domain {ref!r} in this sample; known: {known}", domain=ref)

    def __iter__(self) -> Iterator[DomainSample]:
        return iter(self.domains)

    def vcpus_on(self, cpu: int) -> list[int]:
        """Flat indices of the online vCPUs seen on physical CPU ``cpu``."""
        return [k for k, c in enumerate(self.cpu) if c == cpu]

    def util_total(self) -> float:
        """Utilisation of every vCPU whose utilisation is known, in CPUs."""
        return math.fsum(u for u in self.util if u == u)


Clock = Callable[[], int]


class Sampler:
    """Takes snapshots and measures utilisation against the previous one.

    ``clock`` gives nanoseconds; by default the simulated host's clock on ``sim:`` URIs
    (``Host.sim.clock_ns``: a frozen clock then gives exact figures), else
    ``time.monotonic_ns``. ``mask`` forces bit-63 masking on or off (default: where
    ``Host.xen_version`` < 4.13)."""

    def __init__(self, host: SamplingHost, *, clock: Clock | None = None, mask: bool | None = None):
        self.host = host
        if clock is None:
            sim = host.sim
            clock = sim.clock_ns if sim is not None else time.monotonic_ns
        self.clock: Clock = clock
        self.mask = leaks_runstate_update(host.xen_version) if mask is None else mask
        #: The latest sample (None before the first).
        self.previous: Sample | None = None
        self._last: dict[str, _Last] = {}
        self._gone: dict[str, tuple[_Last, int]] = {}
        self._count = 0

    def reset(self) -> None:
        """Forget every reading: the next sample is a first one."""
        self.previous = None
        self._last.clear()
        self._gone.clear()

    def sample_over(self, interval: float) -> Sample:
        """A sample over ``interval`` seconds from now (a reference sample first, if this
        sampler has none; then a sleep)."""
        interval = timeout_arg(interval)
        if self.previous is None:
            self.sample()
        time.sleep(interval)
        return self.sample()

    def sample(self) -> Sample:
        """A snapshot now, measured against the previous one."""
        snap = self.host.snapshot()
        # CPU times are read during the snapshot; the clock just after it has the same lag
        # in every sample, so intervals come out right.
        now = self.clock()
        times = cpu_times(snap, self.mask)
        dom_col = snap.column("domain")
        prev = self.previous
        s = Sample(
            snap,
            now,
            None if prev is None else (now - prev.time_ns) / 1e9,
            self.mask,
            times,
            dom_col,
        )
        self._count += 1
        util = [NAN] * len(times)
        native = snap.native
        names = snap.names
        n_dom = native.domain_count
        infos = [native.domain(i) for i in range(n_dom)]
        uuids = [info.uuid for info in infos]  # a getter that formats: read once
        seen = Counter(uuids)
        last: dict[str, _Last] = {}
        blocks = domain_blocks(snap, dom_col)
        for i, ((start, stop), info, uuid) in enumerate(zip(blocks, infos, uuids)):
            # a UUID two live domains share (a toolstack that sets none) is told apart by domid
            key = uuid if seen[uuid] == 1 else f"{uuid}/{info.id}"
            name = names.get(info.id) or default_domain_name(info.id)
            err = native.error(i)
            before = self._last.get(key)
            previous_id: int | None = None
            interval: float | None = None
            total = NAN
            if err is not None:
                status = "error"
                if before is not None:
                    last[key] = before  # measure from it next time
            else:
                cur = times[start:stop]
                gone = self._gone.pop(key, None)
                if before is None and gone is None:
                    status = "first"
                elif before is None or before.domid != info.id:
                    # back after it vanished, or under a new domid: counters restarted
                    status = "returned"
                    previous_id = (before or gone[0]).domid  # type: ignore[index]
                else:
                    status = "ok"
                    dt = now - before.time_ns
                    if dt > 0:
                        interval = dt / 1e9
                        total = self._measure(cur, before.cpu_time_ns, dt, start, util, s)
                last[key] = _Last(info.id, name, now, cur)
            s.domains.append(
                DomainSample(
                    s,
                    i,
                    name,
                    info.id,
                    uuid,
                    info.max_vcpus,
                    info.online_vcpus,
                    info.cpupool,
                    (start, stop),
                    status,
                    previous_id,
                    interval,
                    total,
                    err,
                )
            )
        for key, old in self._last.items():
            if key not in last:
                s.vanished.append(GoneDomain(old.name, old.domid, key.split("/")[0]))
                self._gone[key] = (old, self._count)
        for key in [k for k, (_, n) in self._gone.items() if self._count - n > REMEMBER_GONE]:
            del self._gone[key]
        self._last = last
        s.util = array("d", util)
        width = max(self.host.max_cpus, max(s.cpu, default=-1) + 1)
        load = [0.0] * width
        count = [0] * width
        for c, n in Counter(s.cpu).items():
            if c >= 0:
                count[c] = n
        for c, u in zip(s.cpu, util):
            if c >= 0 and u == u:
                load[c] += u
        s.pcpu_load = array("d", load)
        s.pcpu_vcpus = array("I", count)
        self.previous = s
        return s

    @staticmethod
    def _measure(
        cur: array[int], prev: array[int], dt: int, start: int, util: list[float], s: Sample
    ) -> float:
        """Utilisation of one domain's vCPUs into ``util[start:]``; their sum."""
        if len(cur) == len(prev):
            # the common case, in C: every counter moved forward
            deltas = list(map(sub, cur, prev))
            if not deltas or min(deltas) >= 0:
                us = list(map(truediv, deltas, repeat(dt, len(deltas))))
                util[start : start + len(us)] = us
                return math.fsum(us)
        total = 0.0
        for j, (c, p) in enumerate(zip(cur, prev)):
            if c >= p:
                u = (c - p) / dt
                util[start + j] = u
                total += u
            else:
                s.resets.append(start + j)
        return total


@dataclass(frozen=True)
class NodeLoad:
    """One NUMA node's pCPUs and their load in a sample (for ``top``'s strips)."""

    node: int
    cpus: Sequence[int]
    load: Sequence[float]
    vcpus: Sequence[int]


def node_loads(sample: Sample) -> list[NodeLoad]:
    """The sample's per-pCPU load grouped by NUMA node (online CPUs; CPUs whose node Xen
    does not know form node -1)."""
    topo = sample.host.topology
    online = set(sample.host.cpus)
    by_node: dict[int, list[int]] = {}
    for c in topo.cpus:
        if c.cpu in online:
            by_node.setdefault(-1 if c.node is None else c.node, []).append(c.cpu)
    if not by_node:  # no topology: one strip of every online CPU
        by_node[-1] = sorted(online)
    out = []
    for node in sorted(by_node):
        cpus = by_node[node]
        out.append(
            NodeLoad(
                node,
                cpus,
                [sample.pcpu_load[c] if c < len(sample.pcpu_load) else 0.0 for c in cpus],
                [sample.pcpu_vcpus[c] if c < len(sample.pcpu_vcpus) else 0 for c in cpus],
            )
        )
    return out
