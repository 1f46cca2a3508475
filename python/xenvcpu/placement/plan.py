"""Plans: what a placement spec wants of a host, against what the host has now.

:func:`make_plan` reads the host once (one batched snapshot, the topology and the
cpupools) and computes, for every domain an entry matches, the hard and soft affinity of
every vCPU and the online set the spec wants, next to what the host has. It changes
nothing. Domains are matched and grouped by the snapshot's columns, each group's wanted
maps are worked out once, and the core compares every domain of a group with them in
place, so a plan of a thousand domains costs about 1.5 snapshots; a :class:`DomainPlan`
record (maps as packed bytes) is made only when read.
"""

from __future__ import annotations

import dataclasses
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, Protocol, overload

from xenvcpu._impl import CpuMap
from xenvcpu._ranges import format_ranges
from xenvcpu.errors import CpuListError, PlacementError, XenvcpuError
from xenvcpu.placement.spec import Entry, Spec
from xenvcpu.types import Topology, default_domain_name

__all__ = ["ApplyResult", "Change", "DomainPlan", "PlacementHost", "Plan", "make_plan"]


class _DomainLike(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def uuid(self) -> str: ...
    @property
    def max_vcpus(self) -> int: ...


class _Snapshot(Protocol):
    names: dict[int, str]
    native: Any

    def __len__(self) -> int: ...
    def domain_at(self, i: int) -> Any: ...
    def error_at(self, i: int) -> XenvcpuError | None: ...
    def column(self, name: str) -> array[int]: ...
    def maps(self, kind: str, start: int = 0, stop: int | None = None) -> bytes: ...
    def offsets(self) -> list[int]: ...
    def domain_columns(self) -> tuple[list[int], list[int], list[int], list[int]]: ...
    def differences(
        self,
        domains: list[int],
        hard: Sequence[CpuMap | None] | None = None,
        soft: Sequence[CpuMap | None] | None = None,
        online: Sequence[int] | None = None,
    ) -> list[tuple[int, int, int, bool]]: ...
    @property
    def maplen(self) -> int: ...


class PlacementHost(Protocol):
    """What a plan needs of a host (a :class:`xenvcpu.Host`)."""

    @property
    def uri(self) -> str: ...
    @property
    def max_cpus(self) -> int: ...
    def read_topology(self) -> Topology: ...
    @property
    def topology(self) -> Topology: ...
    @property
    def cpupools(self) -> Sequence[Any]: ...
    def snapshot(self) -> Any: ...
    def domains(self) -> Sequence[Any]: ...
    def domain(self, ref: int | str) -> Any: ...
    @property
    def capabilities(self) -> Any: ...
    @property
    def _hv(self) -> Any: ...


class Change(NamedTuple):
    """One difference between the host and the spec, as a person reads it."""

    domain: str
    domid: int
    vcpu: int | None  # None: the domain's online set
    key: str  # "hard", "soft" or "online"
    current: str
    wanted: str


@dataclass
class DomainPlan:
    """One matched domain: what it has and what the spec wants (bytes: packed maps)."""

    name: str
    id: int
    uuid: str
    max_vcpus: int
    width: int
    maplen: int
    numbers: tuple[int, ...]
    # The hard and soft maps read at plan time (packed), or how to read them from the
    # snapshot when first asked: an apply that goes through never needs them.
    now: tuple[bytes, bytes] | Callable[[], tuple[bytes, bytes]] = field(repr=False)
    hard_want: bytes | None
    soft_want: bytes | None
    online_now: frozenset[int]
    online_want: frozenset[int] | None
    entries: tuple[int, ...]  # the entries that matched, by number

    def _now(self) -> tuple[bytes, bytes]:
        now = self.now
        if callable(now):
            now = self.now = now()
        return now

    @property
    def hard_now(self) -> bytes:
        """Every vCPU's hard map as read at plan time, packed back to back."""
        return self._now()[0]

    @property
    def soft_now(self) -> bytes:
        return self._now()[1]

    def _differs(self, now: bytes | memoryview, want: bytes | None) -> list[int]:
        if want is None or now == want:
            return []
        n = self.maplen
        return [
            i
            for i in range(len(self.numbers))
            if now[i * n : (i + 1) * n] != want[i * n : (i + 1) * n]
        ]

    def map_at(self, data: bytes | memoryview, i: int) -> CpuMap:
        n = self.maplen
        return CpuMap.from_bytes(bytes(data[i * n : (i + 1) * n]), self.width)

    # Computed on first use and kept (the maps never change after planning); a plain
    # attribute, not functools.cached_property, whose lock costs more than the compare.
    _hard_changes: list[int] | None = field(default=None, init=False, repr=False, compare=False)
    _soft_changes: list[int] | None = field(default=None, init=False, repr=False, compare=False)
    #: The wanted maps as objects, one per vCPU (None: kept), when the planner has them:
    #: an apply pins with them instead of decoding ``hard_want``/``soft_want`` again.
    want_maps: tuple[list[CpuMap | None] | None, list[CpuMap | None] | None] | None = field(
        default=None, repr=False, compare=False
    )

    @property
    def hard_changes(self) -> list[int]:
        """Indexes (into ``numbers``) of the vCPUs whose hard affinity changes."""
        if self._hard_changes is None:
            self._hard_changes = self._differs(self.hard_now, self.hard_want)
        return self._hard_changes

    @property
    def soft_changes(self) -> list[int]:
        if self._soft_changes is None:
            self._soft_changes = self._differs(self.soft_now, self.soft_want)
        return self._soft_changes

    @property
    def online_changes(self) -> bool:
        return self.online_want is not None and self.online_want != self.online_now

    def __bool__(self) -> bool:
        # Whole-domain compares first: the steady state a watcher re-plans is all equal.
        return (
            (self.hard_want is not None and self.hard_want != self.hard_now)
            or (self.soft_want is not None and self.soft_want != self.soft_now)
            or self.online_changes
        )

    @property
    def label(self) -> str:
        return f"{self.name} (id {self.id})"

    def changes(self) -> Iterator[Change]:
        """vCPU by vCPU (hard, then soft), then the online set."""
        hard, soft = set(self.hard_changes), set(self.soft_changes)
        for i in sorted(hard | soft):
            for key, idx, now, want in (
                ("hard", hard, self.hard_now, self.hard_want),
                ("soft", soft, self.soft_now, self.soft_want),
            ):
                if i in idx and want is not None:
                    yield Change(
                        self.name,
                        self.id,
                        self.numbers[i],
                        key,
                        self.map_at(now, i).to_cpulist() or "none",
                        self.map_at(want, i).to_cpulist() or "none",
                    )
        if self.online_changes:
            assert self.online_want is not None
            yield Change(
                self.name,
                self.id,
                None,
                "online",
                format_ranges(self.online_now) or "none",
                format_ranges(self.online_want),
            )


def grouped_changes(changes: list[Change]) -> Iterator[tuple[str, str, str]]:
    """The changes of one domain as ``(what, current, wanted)``, vCPUs whose change is the
    same sharing one (``"vCPUs 0-7 soft"``; the online set is ``"online"``), so a 512-vCPU
    guest moved as a whole is one item."""
    groups: dict[tuple[str, str, str], list[int]] = {}
    for c in changes:
        if c.vcpu is not None:
            groups.setdefault((c.key, c.current, c.wanted), []).append(c.vcpu)
    seen: set[tuple[str, str, str]] = set()
    for c in changes:
        if c.vcpu is None:
            yield "online", c.current, c.wanted
            continue
        k = (c.key, c.current, c.wanted)
        if k in seen:
            continue
        seen.add(k)
        vcpus = groups[k]
        what = f"vCPU {vcpus[0]}" if len(vcpus) == 1 else f"vCPUs {format_ranges(vcpus)}"
        yield f"{what} {c.key}", c.current, c.wanted


def _diff_lines(changes: list[Change]) -> Iterator[str]:
    """The changes of one domain as -/+ pairs (:func:`grouped_changes`)."""
    for what, current, wanted in grouped_changes(changes):
        yield f"-{what}: {current}"
        yield f"+{what}: {wanted}"


@dataclass(frozen=True)
class ApplyResult:
    """What an apply did."""

    #: vCPU pins made (hard and/or soft, one per vCPU)
    pinned: int
    #: domains whose online set changed
    online_changed: tuple[str, ...]
    #: domains that vanished since the plan (left alone, not failures)
    vanished: tuple[str, ...]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "pinned": self.pinned,
            "online_changed": list(self.online_changed),
            "vanished": list(self.vanished),
            "seconds": round(self.seconds, 6),
        }


@dataclass
class Plan:
    """What a spec wants of a host and what the host has; reads only.

    ``bool(plan)`` is whether anything would change; :attr:`changes` lists each
    difference; :meth:`diff` is text a person reads; :meth:`to_json` the same as data;
    :meth:`apply` makes it so, all or nothing.
    """

    host: PlacementHost
    spec: Spec
    #: every matched domain, in domain-id order (records made when first asked for)
    domains: Sequence[DomainPlan]
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: positions in :attr:`domains` of those with changes, when planning found them
    #: already (None: found by looking at each domain)
    changed_at: Sequence[int] | None = None

    def __bool__(self) -> bool:
        if self.changed_at is not None:
            return bool(self.changed_at)
        return any(self.domains)

    def changed_domains(self) -> list[DomainPlan]:
        """The domains with something to change, in order (the others' records are not
        made)."""
        if self.changed_at is not None:
            return [self.domains[k] for k in self.changed_at]
        return [d for d in self.domains if d]

    def __repr__(self) -> str:
        changed = (
            len(self.changed_at) if self.changed_at is not None else len(self.changed_domains())
        )
        return (
            f"<Plan of {self.spec.source} on {self.host.uri}: {len(self.domains)} domains "
            f"matched, {changed} to change>"
        )

    @property
    def changes(self) -> list[Change]:
        """Every difference, domain by domain (vCPU pins first, then the online set)."""
        return [c for d in self.changed_domains() for c in d.changes()]

    def diff(self) -> str:
        """The changes as a unified-diff-like text (empty when nothing would change).

        One ``@@ name (id N) @@`` hunk per domain; vCPUs with the same change share a line.
        """
        lines = []
        for d in self.changed_domains():
            changes = list(d.changes())
            if changes:
                lines.append(f"@@ {d.label} @@")
                lines.extend(_diff_lines(changes))
        if not lines:
            return ""
        return "\n".join([f"--- {self.host.uri} (now)", f"+++ {self.spec.source} (wanted)", *lines])

    def to_json(self) -> dict[str, Any]:
        """The plan as data (schema 1)."""
        return {
            "schema": 1,
            "uri": self.host.uri,
            "spec": self.spec.source,
            "changes": len(self.changes),
            "warnings": list(self.warnings),
            "domains": [
                {
                    "name": d.name,
                    "id": d.id,
                    "uuid": d.uuid,
                    "entries": list(d.entries),
                    "changes": [
                        {"vcpu": c.vcpu, "key": c.key, "current": c.current, "wanted": c.wanted}
                        for c in d.changes()
                    ],
                }
                for d in self.domains
            ],
        }

    #: The all-or-nothing apply (:func:`xenvcpu.placement.apply.apply_plan`), set by the
    #: package when it loads, so that this module need not import the one that imports it.
    _applier: ClassVar[Callable[[Plan, float], ApplyResult] | None] = None

    def apply(self, timeout: float = 30.0) -> ApplyResult:
        """Make the host so, all or nothing (see :func:`xenvcpu.placement.apply_plan`)."""
        applier = Plan._applier
        if applier is None:  # pragma: no cover - the package sets it on import
            raise RuntimeError("xenvcpu.placement.apply is not loaded")
        return applier(self, timeout)


# ---- planning --------------------------------------------------------------------------


def _merge(entries: list[Entry]) -> dict[str, tuple[Any, Entry]]:
    """Key by key, a later entry overriding an earlier one; per-vCPU overrides too."""
    merged: dict[str, tuple[Any, Entry]] = {}
    for e in entries:
        for key in ("hard", "soft", "online", "layout"):
            value = getattr(e, key)
            if value is not None:
                merged[key] = (value, e)
        for n, over in e.vcpus.items():
            for kind, text in over.items():
                merged[f"vcpu.{n}.{kind}"] = (text, e)
    return merged


class _Resolver:
    """Cpulists to packed maps, once per text (a thousand domains share a few texts)."""

    def __init__(self, spec: Spec, topo: Topology, width: int, maplen: int) -> None:
        self.spec, self.topo, self.width, self.maplen = spec, topo, width, maplen
        self.cache: dict[str, CpuMap] = {}
        self.singles: dict[int, CpuMap] = {}

    def map(self, text: str, entry: Entry, key: str) -> CpuMap:
        m = self.cache.get(text)
        if m is None:
            try:
                m = CpuMap.parse(text, self.width, topology=self.topo)
            except CpuListError as e:
                err = PlacementError(
                    f"{self.spec.source}: {entry.where}: {key} = {text!r}: "
                    f"{e.token!r} at column {e.column}: {e.reason}"
                    if e.kind == "parse"
                    else f"{self.spec.source}: {entry.where}: {key} = {text!r}: {e}"
                )
                err.source, err.entry, err.key = self.spec.source, entry.number, key
                err.token, err.column, err.reason = e.token, e.column, e.reason
                raise err from None
            if key.endswith("hard") and not m:
                err = PlacementError(
                    f"{self.spec.source}: {entry.where}: {key} = {text!r} names no CPU; a vCPU "
                    "needs at least one"
                )
                err.source, err.entry, err.key = self.spec.source, entry.number, key
                raise err
            self.cache[text] = m
        return m

    def packed(self, m: CpuMap) -> bytes:
        return m.to_bytes(self.maplen)

    def single(self, cpu: int) -> CpuMap:
        """The map of one CPU (a layout gives each vCPU one), one object per CPU."""
        m = self.singles.get(cpu)
        if m is None:
            m = self.singles[cpu] = CpuMap.from_cpus([cpu], self.width)
        return m


def _fail(res: _Resolver, e: Entry, key: str, message: str) -> PlacementError:
    err = PlacementError(f"{res.spec.source}: {e.where}: {message}")
    err.source, err.entry, err.key = res.spec.source, e.number, key
    return err


def _check_pool(
    res: _Resolver,
    dom: _Row,
    want: list[CpuMap | None],
    pool: tuple[str, int],
    merged: dict[str, tuple[Any, Entry]],
    numbers: tuple[int, ...],
) -> None:
    """Xen refuses a hard affinity with no online CPU of the domain's cpupool (EINVAL):
    find that at plan time, before anything changes, and name the entry that asked."""
    name, cpus = pool
    L = res.maplen
    seen: set[int] = set()
    for m, v in zip(want, numbers):
        if m is None or id(m) in seen:
            continue
        seen.add(id(m))
        if int.from_bytes(res.packed(m), "little") & cpus:
            continue
        key = f"vcpu.{v}.hard" if f"vcpu.{v}.hard" in merged else "hard"
        text, e = merged[key] if key in merged else merged["layout"]
        pool_cpus = CpuMap.from_bytes(cpus.to_bytes(L, "little"), res.width).to_cpulist()
        raise _fail(
            res,
            e,
            key,
            f"{key} = {text!r}: {dom.name} (id {dom.id}) vCPU {v} would have no CPU of its "
            f"cpupool {name} (CPUs {pool_cpus or 'none'}); Xen refuses such a hard affinity",
        )


def _layout_order(cpus: list[int], topo: Topology, layout: str) -> list[int]:
    """The CPUs of a hard set in the order vCPUs get them: "spread" across nodes, then
    cores, then threads; "pack" filling one core's threads, then the next core."""
    node = topo.cpu_to_node
    sock = topo.cpu_to_socket
    core = topo.cpu_to_core

    def at(seq: tuple[int | None, ...], c: int) -> int:
        v = seq[c] if c < len(seq) else None
        return -1 if v is None else v

    def core_of(c: int) -> tuple[int, int]:
        s, k = at(sock, c), at(core, c)
        return (s, k) if k >= 0 else (-2, c)  # a CPU without a core is a core of its own

    if layout == "pack":
        return sorted(cpus, key=lambda c: (at(node, c), *core_of(c), c))
    thread_rank: dict[int, int] = {}
    by_core: dict[tuple[int, int], list[int]] = {}
    for c in sorted(cpus):
        by_core.setdefault(core_of(c), []).append(c)
    core_rank: dict[tuple[int, int], int] = {}
    per_node: dict[int, int] = {}
    for key, members in sorted(by_core.items(), key=lambda kv: kv[1][0]):
        n = at(node, members[0])
        core_rank[key] = per_node.get(n, 0)
        per_node[n] = core_rank[key] + 1
        for i, c in enumerate(members):
            thread_rank[c] = i
    return sorted(cpus, key=lambda c: (thread_rank[c], core_rank[core_of(c)], at(node, c), c))


class _Row(NamedTuple):
    """What planning needs of one domain (no :class:`Domain` object per domain)."""

    id: int
    name: str
    max_vcpus: int


#: Per vCPU position of a domain, the map wanted (None: that vCPU keeps what it has).
WantMaps = list["CpuMap | None"]


@dataclass
class _Group:
    """Domains alike (the same entries, vCPU numbers, vCPU count and cpupool) want the
    same: it is computed once, and compared in the core for all of them at once."""

    chain: list[Entry]
    merged: dict[str, tuple[Any, Entry]]
    numbers: tuple[int, ...]
    hard: WantMaps | None = None
    soft: WantMaps | None = None
    online: frozenset[int] | None = None
    packed: dict[int, bytes] = field(default_factory=dict)
    members: list[int] = field(default_factory=list)  # snapshot indexes
    online_sets: dict[bytes, frozenset[int]] = field(default_factory=dict)
    #: what the core found: (position in members, hard, soft differing, online differs)
    diffs: list[tuple[int, int, int, bool]] = field(default_factory=list)
    changed: list[int] = field(default_factory=list)  # positions in members with changes

    entry_numbers: tuple[int, ...] = ()  # the entries that matched (not [defaults])

    def __post_init__(self) -> None:
        self.entry_numbers = tuple(e.number for e in self.chain if e.number)

    def pack(
        self,
        want: WantMaps | None,
        now_maps: tuple[bytes, bytes] | Callable[[], tuple[bytes, bytes]],
        kind: int,
        L: int,
    ) -> bytes | None:
        """The wanted maps of one domain as packed bytes (kept vCPUs from ``now``); the
        same bytes object for every domain of the group unless some vCPU keeps its map."""
        if want is None:
            return None
        done = self.packed.get(id(want))
        if done is not None:
            return done
        if None in want:
            assert not callable(now_maps)  # read already: the kept vCPUs need it
            now = now_maps[kind]
            return b"".join(
                m.to_bytes(L) if m is not None else now[i * L : (i + 1) * L]
                for i, m in enumerate(want)
            )
        first = want[0] if want else None
        if first is not None and all(m is first for m in want):
            out = first.to_bytes(L) * len(want)
        else:
            out = b"".join(m.to_bytes(L) for m in want if m is not None)
        self.packed[id(want)] = out
        return out


def _want_maps(
    dom: _Row,
    merged: dict[str, tuple[Any, Entry]],
    res: _Resolver,
    kind: str,
    numbers: tuple[int, ...],
) -> WantMaps | None:
    """The map each vCPU of ``dom`` should have for ``kind`` (hard or soft), or None when
    the spec says nothing about that kind for it."""
    base = merged.get(kind)
    layout = merged.get("layout") if kind == "hard" else None
    overrides = {
        int(k.split(".")[1]): v
        for k, v in merged.items()
        if k.startswith("vcpu.") and k.endswith("." + kind)
    }
    for v, (_, e) in overrides.items():
        if v >= dom.max_vcpus:
            err = PlacementError(
                f"{res.spec.source}: {e.where}: vcpu.{v}.{kind}: {dom.name} (id {dom.id}) "
                f"has no vCPU {v}; valid vCPUs are 0-{dom.max_vcpus - 1}"
            )
            err.source, err.entry, err.key = res.spec.source, e.number, f"vcpu.{v}.{kind}"
            raise err
    if base is None and not overrides:
        return None
    base_map = res.map(base[0], base[1], kind) if base is not None else None
    if base_map is not None and layout is None and not overrides:
        return [base_map] * len(numbers)  # every vCPU alike: one object
    order = (
        _layout_order(list(base_map), res.topo, layout[0])
        if base_map is not None and layout
        else None
    )
    out: WantMaps = []
    for i, v in enumerate(numbers):
        if v in overrides:
            text, e = overrides[v]
            out.append(res.map(text, e, f"vcpu.{v}.{kind}"))
        elif order:
            out.append(res.single(order[i % len(order)]))
        else:
            out.append(base_map)  # None: not named for this vCPU, it keeps what it has
    return out


def _wants(g: _Group, dom: _Row, res: _Resolver, pool: tuple[str, int] | None) -> None:
    """Fill in what the domains of ``g`` want (``dom``: the one named in errors)."""
    merged, numbers = g.merged, g.numbers
    g.hard = _want_maps(dom, merged, res, "hard", numbers)
    if g.hard is not None and pool is not None:
        _check_pool(res, dom, g.hard, pool, merged, numbers)
    g.online = None
    if "online" in merged:
        value, e = merged["online"]
        where = f"{res.spec.source}: {e.where}: online = {value!r}"
        if isinstance(value, int):
            if value > dom.max_vcpus:
                err = PlacementError(
                    f"{where}: {dom.name} (id {dom.id}) has {dom.max_vcpus} vCPUs; the valid "
                    f"range is 1..{dom.max_vcpus}"
                )
                err.source, err.entry, err.key = res.spec.source, e.number, "online"
                raise err
            g.online = frozenset(range(value))
        else:
            try:
                g.online = frozenset(CpuMap.parse(value, max(dom.max_vcpus, 1)))
            except CpuListError as ce:
                err = PlacementError(f"{where}: {ce}")
                err.source, err.entry, err.key = res.spec.source, e.number, "online"
                err.token, err.column, err.reason = ce.token, ce.column, ce.reason
                raise err from None
            if not g.online:
                err = PlacementError(f"{where}: at least one vCPU must stay online")
                err.source, err.entry, err.key = res.spec.source, e.number, "online"
                raise err
    g.soft = _want_maps(dom, merged, res, "soft", numbers)


class _PlanRows(Sequence[DomainPlan]):
    """A plan's domains, each :class:`DomainPlan` made when first asked for and kept: a
    plan of a thousand domains that all match the host builds none of them."""

    def __init__(
        self,
        snap: _Snapshot,
        order: list[int],  # the snapshot index of each
        groups: list[_Group],  # and its group
        kept_online: set[int],  # those whose online set is left alone
        names: list[str],
        ids: list[int],
        maxv: list[int],
        width: int,
    ) -> None:
        self._snap, self._order, self._groups, self._kept_online = snap, order, groups, kept_online
        self._names, self._ids, self._maxv, self._width = names, ids, maxv, width
        self._made: list[DomainPlan | None] = [None] * len(order)
        self._maplen = snap.maplen
        self._counted: dict[int, tuple[int, int]] | None = None
        self._offsets: list[int] | None = None
        self._states: array[int] | None = None

    def __len__(self) -> int:
        return len(self._order)

    @overload
    def __getitem__(self, k: int) -> DomainPlan: ...

    @overload
    def __getitem__(self, k: slice) -> list[DomainPlan]: ...

    def __getitem__(self, k: int | slice) -> DomainPlan | list[DomainPlan]:
        if isinstance(k, slice):
            return [self[j] for j in range(*k.indices(len(self)))]
        made = self._made[k]  # IndexError as a list gives it
        if made is None:
            made = self._made[k] = self._build(k % len(self._order))
        return made

    def __iter__(self) -> Iterator[DomainPlan]:
        for k in range(len(self._order)):
            yield self[k]

    def _counts(self) -> dict[int, tuple[int, int]]:
        """Snapshot index -> (hard maps, soft maps) that differ, as the core counted them."""
        if self._counted is None:
            self._counted = {
                g.members[k]: (nh, ns)
                for g in {id(g): g for g in self._groups}.values()
                for k, nh, ns, _ in g.diffs
            }
        return self._counted

    def _build(self, k: int) -> DomainPlan:
        i, g = self._order[k], self._groups[k]
        snap = self._snap
        if self._offsets is None:
            self._offsets, self._states = snap.offsets(), snap.column("state")
        assert self._states is not None
        lo, hi = self._offsets[i], self._offsets[i + 1]
        L = self._maplen

        def read_now() -> tuple[bytes, bytes]:
            return snap.maps("hard", lo, hi), snap.maps("soft", lo, hi)

        now: tuple[bytes, bytes] | Callable[[], tuple[bytes, bytes]] = read_now
        if (g.hard is not None and None in g.hard) or (g.soft is not None and None in g.soft):
            now = read_now()  # vCPUs that keep their maps: the wanted bytes include them
        # Domains alike mostly have the same vCPUs online: one set per distinct pattern.
        states = self._states[lo:hi].tobytes()
        online_now = g.online_sets.get(states)
        if online_now is None:
            online_now = g.online_sets[states] = frozenset(
                v
                for v, st in zip(g.numbers, states)
                if st != 0  # state 0 is offline
            )
        made = DomainPlan(
            name=self._names[i],
            id=self._ids[i],
            uuid=snap.native.domain(i).uuid,
            max_vcpus=self._maxv[i],
            width=self._width,
            maplen=L,
            numbers=g.numbers,
            now=now,
            hard_want=g.pack(g.hard, now, 0, L),
            soft_want=g.pack(g.soft, now, 1, L),
            online_now=online_now,
            online_want=None if i in self._kept_online else g.online,
            entries=g.entry_numbers,
            want_maps=(g.hard, g.soft),
        )
        # What the core counted spares comparing bytes in the two common cases: every
        # vCPU differs, or none does.
        n = len(g.numbers)
        nh, ns = self._counts().get(i, (0, 0))
        if nh in (0, n):
            made._hard_changes = list(range(nh))
        if ns in (0, n):
            made._soft_changes = list(range(ns))
        return made


def _new_group(spec: Spec, key: tuple[Any, ...], numbers: tuple[int, ...] | None) -> _Group:
    """A group for ``key`` (entry numbers, vCPU count or numbers, max_vcpus, cpupool)."""
    by_number = {e.number: e for e in spec.entries}
    chain = ([spec.defaults] if spec.defaults else []) + [by_number[n] for n in key[0]]
    return _Group(chain, _merge(chain), numbers if numbers is not None else tuple(range(key[1])))


def make_plan(host: PlacementHost, spec: Spec, *, strict: bool = True) -> Plan:
    """The plan of ``spec`` on ``host`` (reads only).

    Everything an apply would trip over is found here, before anything changes: cpulists
    read against the host's topology, per-vCPU overrides and online sets against each
    domain's vCPUs, every hard affinity against the domain's cpupool, and whether the
    online set of each domain can be changed at all (an HVM guest needs its device model).

    ``strict=False`` (the watcher) turns what concerns one domain into a warning and
    plans the others: an exact name or UUID that matches no domain (shut down, or being
    restored), a map its cpupool cannot take (the domain is left out), an online set
    that cannot be changed (left alone).

    How it stays near the cost of the snapshot it starts from: domains are matched by
    columns (names, then one pass per entry), grouped by what makes their wants alike,
    each group's wants are computed once, and the core compares every domain of a group
    with them in place; :class:`DomainPlan` records are made only when asked for.

    Raises:
        PlacementError: an entry that names a domain exactly (name or UUID) matches none,
            or a cpulist or online set cannot be read against this host, or cannot be
            applied to the domain (the message names the file, the entry, the key and,
            for a cpulist, the token).
    """
    t0 = time.perf_counter()
    snap: _Snapshot = host.snapshot()
    width = host.max_cpus
    # Which core, socket and node a CPU is on is read once per Host; the cpupools, which
    # change at run time, are read on every plan (for pool:NAME terms and the pool check).
    cpupools = host.cpupools
    topo = dataclasses.replace(host.topology, pools={p.name: tuple(p.cpus) for p in cpupools})
    res = _Resolver(spec, topo, width, snap.maplen)
    pools = {
        p.id: (p.name, int.from_bytes(p.cpus.to_bytes(snap.maplen), "little")) for p in cpupools
    }
    ids, maxv, pool_col, shapes = snap.domain_columns()
    known = snap.names
    names: list[str] = list(map(known.get, ids))  # type: ignore[arg-type]
    if not all(names):
        names = [n or default_domain_name(d) for n, d in zip(names, ids)]
    uuids: list[str] = []

    def all_uuids() -> list[str]:
        if not uuids:
            uuids.extend(d.uuid for d in snap.native.domains())
        return uuids

    # Which entries match each domain (in entry order), one pass over the names per entry.
    chains: dict[int, tuple[int, ...]] = {}
    matched: dict[int, int] = {}
    for e in spec.entries:
        hits = e.select(names, all_uuids)
        matched[e.number] = len(hits)
        if not chains:
            chains = dict.fromkeys(hits, (e.number,))
            continue
        for i in hits:
            chains[i] = (*chains.get(i, ()), e.number)
    warnings: list[str] = []
    idx = sorted(chains)
    keys: list[tuple[Any, ...]] = list(
        zip(
            map(chains.__getitem__, idx),
            map(shapes.__getitem__, idx),
            map(maxv.__getitem__, idx),
            map(pool_col.__getitem__, idx),
        )
    )
    groups: dict[tuple[Any, ...], _Group] = {}
    if len(set(keys)) == 1 and keys[0][1] >= 0:  # all alike, the common case: one group
        g = groups[keys[0]] = _new_group(spec, keys[0], None)
        g.members = order = idx
        row_groups = [g] * len(idx)
    else:
        order, row_groups = [], []
        offsets: list[int] | None = None
        number_col: array[int] | None = None
        for i, key in zip(idx, keys):
            shape = key[1]
            if shape == -1:
                warnings.append(
                    f"{names[i]} (id {ids[i]}): left out: its vCPUs could not be read "
                    f"({snap.error_at(i)})"
                )
                continue
            numbers = None
            if shape < -1:  # vCPU numbers with gaps: part of what makes domains alike
                if offsets is None:
                    offsets, number_col = snap.offsets(), snap.column("number")
                assert number_col is not None
                numbers = tuple(number_col[offsets[i] : offsets[i + 1]])
                key = (key[0], numbers, *key[2:])
            found = groups.get(key)
            if found is None:
                found = groups[key] = _new_group(spec, key, numbers)
            found.members.append(i)
            order.append(i)
            row_groups.append(found)
    left_out: set[int] = set()
    kept_online: set[int] = set()
    for g in groups.values():
        members = g.members
        first = members[0]
        try:
            _wants(g, _Row(ids[first], names[first], maxv[first]), res, pools.get(pool_col[first]))
        except PlacementError:
            if strict:
                raise
            for i in members:  # each domain's own message (they differ only in name and id)
                try:
                    _wants(g, _Row(ids[i], names[i], maxv[i]), res, pools.get(pool_col[i]))
                except PlacementError as why:
                    warnings.append(f"{names[i]} (id {ids[i]}): left out: {why}")
                left_out.add(i)
            continue
        online = sorted(g.online) if g.online is not None else None
        g.diffs = diffs = snap.differences(members, g.hard, g.soft, online)
        if online is None:  # only maps compared: every domain found has changes
            g.changed = [r[0] for r in diffs]
            continue
        for k, nh, ns, od in diffs:
            i = members[k]
            if od:
                try:
                    snap.domain_at(i).check_online_path()
                except XenvcpuError as why:
                    value, e_entry = g.merged["online"]
                    if strict:
                        raise _fail(res, e_entry, "online", f"online = {value!r}: {why}") from None
                    warnings.append(f"{names[i]} (id {ids[i]}): online set left alone: {why}")
                    kept_online.add(i)
                    od = False
            if nh or ns or od:
                g.changed.append(k)
    for e in spec.entries:
        if matched[e.number]:
            continue
        if e.kind == "glob" or not strict:
            warnings.append(f"{spec.source}: {e.where} matches no domain")
        else:
            err = PlacementError(
                f"{spec.source}: {e.where} matches no domain (it names one by "
                f"{'UUID' if e.kind == 'uuid' else 'name'}; use a glob for optional ones)"
            )
            err.source, err.entry, err.key = spec.source, e.number, "match"
            raise err
    if left_out:
        kept = [k for k, i in enumerate(order) if i not in left_out]
        order = [order[k] for k in kept]
        row_groups = [row_groups[k] for k in kept]
    if order is idx and len(groups) == 1:  # one group, none left out: its positions
        changed_at = next(iter(groups.values())).changed
    else:
        changed_set = {g.members[k] for g in groups.values() for k in g.changed}
        changed_at = [k for k, i in enumerate(order) if i in changed_set] if changed_set else []
    domains = _PlanRows(snap, order, row_groups, kept_online, names, ids, maxv, width)
    return Plan(host, spec, domains, warnings, time.perf_counter() - t0, changed_at)
