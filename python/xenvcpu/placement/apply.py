"""Applying a plan: every pin batched across domains, then the online sets; all or nothing.

1. **Validate** before anything changes: every planned domain is looked up again (a domain
   that vanished since the plan is reported and left out; one whose vCPU count changed
   makes the plan stale, an error); the pins are checked by the hypervisor path itself
   (``pin_many`` checks every map, domain and vCPU before its first hypercall).
2. **Pin**: one ``pin_many`` call for every vCPU whose hard or soft affinity changes, in
   multicall batches that span domains.
3. **Online sets**: each domain whose online set changes, waited for where the backend
   can wait.
4. **Roll back** on any failure: every pin already made is put back to the maps read at
   plan time (one batch again) and every online set already changed is set back, then
   :class:`~xenvcpu.errors.PlanFailed` names each failure and what was rolled back.

A domain that vanishes midway fails its own pins with ESRCH; it is reported in
``vanished`` and is not a failure for the others.
"""

from __future__ import annotations

import errno as _errno
import time
from typing import Any

from xenvcpu._backend import Capability
from xenvcpu._impl import CpuMap
from xenvcpu._limits import timeout_arg
from xenvcpu._ranges import format_ranges
from xenvcpu.daemon.vcpus import wait_online
from xenvcpu.errors import DomainNotFound, PlacementError, PlanFailed, XenvcpuError
from xenvcpu.placement.plan import ApplyResult, DomainPlan, Plan

__all__ = ["ApplyResult", "apply_plan"]  # ApplyResult lives in .plan, re-exported

PinReq = tuple[int, int, "CpuMap | None", "CpuMap | None"]


def _gone(host: Any, d: DomainPlan) -> bool:
    """Whether the planned domain no longer exists (or another one has its id); a read
    that fails says no (its pins then count as failed, and are rolled back)."""
    try:
        return str(host.domain(d.id).uuid) != d.uuid
    except DomainNotFound:
        return True
    except XenvcpuError:
        return False


def _present(host: Any) -> dict[int, str]:
    """The domains on the host now: id -> uuid."""
    return {d.id: str(d.uuid) for d in host.domains()}


class _MapCache:
    """One CpuMap per distinct map across an apply's requests (thousands of vCPUs usually
    move to a handful of maps), and per wanted-maps object shared by domains alike (the
    planner hands them the same bytes) one list of them, so such a domain costs a lookup."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.by_bytes: dict[bytes, CpuMap] = {}
        self.by_source: dict[int, tuple[bytes | memoryview, list[CpuMap]]] = {}

    def block(self, data: bytes | memoryview, i: int, maplen: int) -> CpuMap:
        raw = bytes(data[i * maplen : (i + 1) * maplen])
        m = self.by_bytes.get(raw)
        if m is None:
            m = self.by_bytes[raw] = CpuMap.from_bytes(raw, self.width)
        return m

    def all_of(self, data: bytes | memoryview, n: int, maplen: int) -> list[CpuMap]:
        """The n maps of ``data``; remembered by the object when it is immutable bytes."""
        if not isinstance(data, bytes):
            return [self.block(data, i, maplen) for i in range(n)]
        hit = self.by_source.get(id(data))
        if hit is not None and hit[0] is data:
            return hit[1]
        maps = [self.block(data, i, maplen) for i in range(n)]
        self.by_source[id(data)] = (data, maps)  # holding data keeps its id unique
        return maps


def _pins(d: DomainPlan, *, back: bool, maps: _MapCache | None = None) -> list[PinReq]:
    """The pins that take ``d`` to its plan (or, ``back``, to the state read at plan time)."""
    hard, soft = d.hard_changes, d.soft_changes
    cache = _MapCache(d.width) if maps is None else maps
    n, L = len(d.numbers), d.maplen
    h_src = d.hard_now if back else d.hard_want
    s_src = d.soft_now if back else d.soft_want
    h_maps: list[CpuMap] | list[CpuMap | None] | None
    s_maps: list[CpuMap] | list[CpuMap | None] | None
    if not back and d.want_maps is not None:  # the planner's objects: nothing to decode
        h_maps, s_maps = d.want_maps
        h_maps = h_maps if hard else None
        s_maps = s_maps if soft else None
    else:
        h_maps = cache.all_of(h_src, n, L) if hard and h_src is not None else None
        s_maps = cache.all_of(s_src, n, L) if soft and s_src is not None else None
    if h_maps is not None and s_maps is not None and hard == soft:
        return [(d.id, d.numbers[i], h_maps[i], s_maps[i]) for i in hard]
    if s_maps is None and h_maps is not None:
        return [(d.id, d.numbers[i], h_maps[i], None) for i in hard]
    if h_maps is None and s_maps is not None:
        return [(d.id, d.numbers[i], None, s_maps[i]) for i in soft]
    hs, ss = set(hard), set(soft)
    return [
        (
            d.id,
            d.numbers[i],
            h_maps[i] if h_maps is not None and i in hs else None,
            s_maps[i] if s_maps is not None and i in ss else None,
        )
        for i in sorted(hs | ss)
    ]


def apply_plan(plan: Plan, timeout: float = 30.0) -> ApplyResult:
    """Make the host what ``plan`` wants, all or nothing (see the module docstring).

    ``timeout`` bounds the waits for guests following online-vCPU changes (together).

    Raises:
        PlacementError: the plan is stale (a domain's vCPU count changed since).
        PlanFailed: a step failed; what had changed was put back (``rolled_back``), and
            ``rollback_failed`` lists anything that could not be.
    """
    timeout = timeout_arg(timeout)
    t0 = time.perf_counter()
    host = plan.host
    deadline = time.monotonic() + timeout
    vanished: list[str] = []
    failed: list[tuple[str, int | None, str, str]] = []
    todo: list[DomainPlan] = []
    try:
        current = {d.id: d for d in host.domains()}
    except XenvcpuError as e:  # nothing has changed yet
        failed.append((host.uri, None, "read", str(e)))
        raise _plan_failed(plan, failed, [], [], vanished) from e
    for d in plan.changed_domains():
        now = current.get(d.id)
        if now is None or str(now.uuid) != d.uuid:
            vanished.append(d.label)
            continue
        if now.max_vcpus != d.max_vcpus:
            raise PlacementError(
                f"{d.label} has {now.max_vcpus} vCPUs now, {d.max_vcpus} when planned: "
                "the plan is stale, make it again; nothing was changed",
                domain=d.id,
            )
        todo.append(d)
    # ---- pins: one batch across every domain
    shared = _MapCache(todo[0].width if todo else 0)
    requests = [r for d in todo for r in _pins(d, back=False, maps=shared)]
    by_domain = {d.id: d for d in todo}
    gone_checked: dict[int, bool] = {}
    pinned: list[DomainPlan] = []
    try:
        results: list[Any] = host._hv.pin_many(requests) if requests else []
    except XenvcpuError as e:
        # The batch as a whole failed: some chunks may have gone through. Put back all.
        failed.append((host.uri, None, "pin", str(e)))
        pinned = [d for d in todo if d.hard_changes or d.soft_changes]
        results = []
    # Only the failures are looked at one by one: a batch of thousands that all went
    # through costs no Python work per pin.
    bad = [k for k, r in enumerate(results) if isinstance(r, XenvcpuError)]
    made = len(results) - len(bad)
    # The pins that went through (None: unknown, the batch as a whole failed).
    done: set[tuple[int, int]] | None = None
    if results:
        pinned = [d for d in todo if d.hard_changes or d.soft_changes]
    if bad:
        bad_set = set(bad)
        done = {(r[0], r[1]) for k, r in enumerate(requests) if k not in bad_set}
        ok_domains = {domid for domid, _ in done}
        for k in bad:
            domid, vcpu = requests[k][0], requests[k][1]
            r = results[k]
            d = by_domain[domid]
            if r.errno == _errno.ESRCH:
                if domid not in gone_checked:
                    gone_checked[domid] = _gone(host, d)
                if gone_checked[domid]:
                    continue
            failed.append((d.label, vcpu, "pin", str(r)))
        for domid, gone in gone_checked.items():
            if gone:
                vanished.append(by_domain[domid].label)
                ok_domains.discard(domid)
        pinned = [d for d in todo if d.id in ok_domains]
    onlined: list[DomainPlan] = []
    if not failed:
        _online_step(host, todo, gone_checked, deadline, onlined, vanished, failed)
    if failed:
        rolled, rollback_failed = _roll_back(host, pinned, onlined, deadline, done)
        raise _plan_failed(plan, failed, rolled, rollback_failed, vanished)
    return ApplyResult(
        pinned=made,
        online_changed=tuple(d.label for d in onlined),
        vanished=tuple(vanished),
        seconds=time.perf_counter() - t0,
    )


def _plan_failed(
    plan: Plan,
    failed: list[tuple[str, int | None, str, str]],
    rolled: list[str],
    rollback_failed: list[str],
    vanished: list[str],
) -> PlanFailed:
    what = "; ".join(
        f"{who}{'' if v is None else f' vCPU {v}'} {kind}: {msg}"
        for who, v, kind, msg in failed[:_SHOWN]
    ) + _more(failed)
    err = PlanFailed(
        f"applying {plan.spec.source} failed: {what}; rolled back: "
        f"{', '.join(rolled[:_SHOWN]) + _more(rolled) if rolled else 'nothing had changed'}"
        + (f"; could NOT roll back: {'; '.join(rollback_failed)}" if rollback_failed else "")
    )
    err.failed = tuple(failed)
    err.rolled_back = tuple(rolled)
    err.vanished = tuple(vanished)
    err.rollback_failed = tuple(rollback_failed)
    return err


#: How many failures and rollbacks a PlanFailed message spells out (the attributes hold all).
_SHOWN = 5


def _more(items: list[Any]) -> str:
    return f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""


def _online_step(
    host: Any,
    todo: list[DomainPlan],
    gone: dict[int, bool],
    deadline: float,
    onlined: list[DomainPlan],
    vanished: list[str],
    failed: list[tuple[str, int | None, str, str]],
) -> None:
    """Ask every domain for its new online set, then wait for all of them together (the
    guests follow in parallel: the wait costs the slowest guest, not the sum)."""
    can_wait = Capability.WAIT_ONLINE in host.capabilities
    asked: list[tuple[DomainPlan, Any]] = []
    for d in todo:
        if not d.online_changes or gone.get(d.id):
            continue
        assert d.online_want is not None
        try:
            dom = host.domain(d.id)
            onlined.append(d)  # from here on it may be partly done: put it back on failure
            dom.set_online(sorted(d.online_want))
            asked.append((d, dom))
        except DomainNotFound:
            onlined.remove(d)
            vanished.append(d.label)
        except XenvcpuError as e:
            failed.append((d.label, None, "online", str(e)))
            return
    if not can_wait:
        return
    for d, dom in asked:
        assert d.online_want is not None
        try:
            wait_online(
                dom._online_now,
                d.online_want,
                max(deadline - time.monotonic(), 0.0),
                domain=dom.name,
            )
        except XenvcpuError as e:
            failed.append((d.label, None, "online", str(e)))
            return


def _roll_back(
    host: Any,
    pinned: list[DomainPlan],
    onlined: list[DomainPlan],
    deadline: float,
    done: set[tuple[int, int]] | None,
) -> tuple[list[str], list[str]]:
    """Put back the maps and online sets read at plan time; what was, and what could not.

    ``done``: the (domid, vCPU) pins that went through (only those are put back; a pin
    Xen refused changed nothing), or None when unknown (every planned pin is put back)."""
    rolled: list[str] = []
    failed: list[str] = []
    can_wait = Capability.WAIT_ONLINE in host.capabilities
    asked: list[tuple[DomainPlan, Any]] = []
    for d in onlined:
        try:
            dom = host.domain(d.id)
            dom.set_online(sorted(d.online_now) or [0])
            asked.append((d, dom))
        except XenvcpuError as e:
            failed.append(f"{d.label} online: {e}")
    for d, dom in asked:
        try:
            if can_wait:
                # the rollback gets at least a second even when the apply used up its time
                wait_online(
                    dom._online_now,
                    d.online_now or {0},
                    max(deadline - time.monotonic(), 1.0),
                    domain=dom.name,
                )
            rolled.append(f"{d.label} online {format_ranges(d.online_now) or 'none'}")
        except XenvcpuError as e:
            failed.append(f"{d.label} online: {e}")
    if not pinned:
        return rolled, failed
    try:
        present = _present(host)
    except XenvcpuError as e:
        return rolled, [*failed, *(f"{d.label} pins: {e}" for d in pinned)]
    pinned = [d for d in pinned if present.get(d.id) == d.uuid]  # vanished: nothing to put back
    shared = _MapCache(pinned[0].width)
    requests = [
        r
        for d in pinned
        for r in _pins(d, back=True, maps=shared)
        if done is None or (r[0], r[1]) in done
    ]
    try:
        results = host._hv.pin_many(requests) if requests else []
    except XenvcpuError as e:
        return rolled, [*failed, *(f"{d.label} pins: {e}" for d in pinned)]
    bad = {
        (domid, vcpu): r
        for (domid, vcpu, _, _), r in zip(requests, results)
        if isinstance(r, XenvcpuError) and r.errno != _errno.ESRCH
    }
    for d in pinned:
        mine = [(k, r) for k, r in bad.items() if k[0] == d.id]
        if mine:
            failed += [f"{d.label} vCPU {k[1]} pins: {r}" for k, r in mine]
        else:
            rolled.append(f"{d.label} pins")
    return rolled, failed
