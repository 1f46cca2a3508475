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
from dataclasses import dataclass
from typing import Any

from xenvcpu._backend import Capability
from xenvcpu._impl import CpuMap
from xenvcpu._limits import timeout_arg
from xenvcpu._ranges import format_ranges
from xenvcpu.daemon.vcpus import wait_online
from xenvcpu.errors import DomainNotFound, PlacementError, PlanFailed, XenvcpuError
from xenvcpu.placement.plan import DomainPlan, Plan

__all__ = ["ApplyResult", "apply_plan"]

PinReq = tuple[int, int, "CpuMap | None", "CpuMap | None"]


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


def _pins(d: DomainPlan, *, back: bool) -> list[PinReq]:
    """The pins that take ``d`` to its plan (or, ``back``, to the state read at plan time)."""
    hard, soft = set(d.hard_changes), set(d.soft_changes)
    out: list[PinReq] = []
    for i in sorted(hard | soft):
        h_src = d.hard_now if back else d.hard_want
        s_src = d.soft_now if back else d.soft_want
        h = d.map_at(h_src, i) if i in hard and h_src is not None else None
        s = d.map_at(s_src, i) if i in soft and s_src is not None else None
        out.append((d.id, d.numbers[i], h, s))
    return out


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
    for d in plan.domains:
        if not d:
            continue
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
    requests = [r for d in todo for r in _pins(d, back=False)]
    by_domain = {d.id: d for d in todo}
    gone_checked: dict[int, bool] = {}
    pinned: list[DomainPlan] = []
    made = 0
    try:
        results: list[Any] = host._hv.pin_many(requests) if requests else []
    except XenvcpuError as e:
        # The batch as a whole failed: some chunks may have gone through. Put back all.
        failed.append((host.uri, None, "pin", str(e)))
        pinned = [d for d in todo if d.hard_changes or d.soft_changes]
        results = []
    ok_domains: set[int] = set()
    for (domid, vcpu, _, _), r in zip(requests, results):
        d = by_domain[domid]
        if not isinstance(r, XenvcpuError):
            ok_domains.add(domid)
            made += 1
            continue
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
    if results:
        pinned = [d for d in todo if d.id in ok_domains]
    onlined: list[DomainPlan] = []
    if not failed:
        _online_step(host, todo, gone_checked, deadline, onlined, vanished, failed)
    if failed:
        rolled, rollback_failed = _roll_back(host, pinned, onlined, deadline)
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
    host: Any, pinned: list[DomainPlan], onlined: list[DomainPlan], deadline: float
) -> tuple[list[str], list[str]]:
    """Put back the maps and online sets read at plan time; what was, and what could not."""
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
    requests = [r for d in pinned for r in _pins(d, back=True)]
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
