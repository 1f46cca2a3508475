"""Keep a host at its placement: re-plan on domain events and on an interval, re-apply.

Pins set at run time do not last: a restored or migrated domain comes back with the
affinity it was created with, ``xl cpupool-migrate`` resets affinity to "all", a manual
``xl vcpu-pin`` moves a vCPU elsewhere. :class:`Watcher` notices and puts the placement
back:

* it re-plans every ``interval`` seconds, and soon after xenstored's ``@introduceDomain``
  or ``@releaseDomain`` fires where the toolstack has such events
  (:meth:`xenvcpu._backend.Toolstack.domain_events`, xen-interfaces.md §5.6);
* plans are lenient (``strict=False``): an exact name that matches no domain now, or a
  domain whose cpupool cannot take its map, is a warning, and the other domains are kept;
* each correction is one event (one log line): which domain, whether it appeared since
  the previous pass or drifted, and what changed;
* domains in the middle of a migration (``<name>--incoming``, ``<name>--migratedaway``)
  are left alone until xl has renamed them;
* :meth:`Watcher.request_reload` re-reads the spec file (a bad file keeps the old spec),
  :meth:`Watcher.request_stop` ends :meth:`Watcher.run` within half a second.

Every wait is bounded; no failure of the host ends the watcher, only a stop request.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from xenvcpu._backend import DomainEvents
from xenvcpu.errors import PlacementError, PlanFailed, XenvcpuError
from xenvcpu.placement.plan import DomainPlan, PlacementHost, Plan, grouped_changes, make_plan
from xenvcpu.placement.spec import Spec, load_spec

__all__ = ["TRANSIENT_SUFFIXES", "Event", "Watcher"]

#: Names xl gives a domain while it migrates (xen-interfaces.md §5.6): left alone.
TRANSIENT_SUFFIXES = ("--incoming", "--migratedaway")

#: One thing the watcher did or saw: ``{"time", "event", "message", ...}``.
Event = dict[str, Any]

# How many (domid, uuid) pairs the watcher remembers between passes.
_MAX_KNOWN = 1 << 16

# Longest single wait, so that stop and reload requests are seen promptly.
_SLICE = 0.5


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def summary(d: DomainPlan) -> str:
    """One line of what changes for a domain: ``vCPUs 0-3 hard: 0-63 -> 4-7; online: ...``."""
    return "; ".join(
        f"{what}: {now} -> {want}" for what, now, want in grouped_changes(list(d.changes()))
    )


class Watcher:
    """Re-plans ``spec_path`` against the host ``connect()`` returns, and applies.

    ``emit`` receives every event (the CLI prints them as lines or JSON lines).
    ``settle`` is how long to wait after a domain event before re-planning, so that the
    toolstack has finished building the domain.
    """

    def __init__(
        self,
        connect: Callable[[], PlacementHost],
        spec_path: str,
        *,
        emit: Callable[[Event], None],
        interval: float = 10.0,
        timeout: float = 30.0,
        settle: float = 1.0,
    ) -> None:
        #: Raises PlacementError when the file cannot be read at start.
        self.spec: Spec = load_spec(spec_path)
        self.path = spec_path
        self.interval = interval
        self.timeout = timeout
        self.settle = settle
        self._connect = connect
        self._emit = emit
        self._host: PlacementHost | None = None
        self._events: DomainEvents | None = None
        self._seen: set[tuple[int, str]] | None = None  # domains planned in any pass so far
        self._warned: set[str] = set()
        self._stop = False
        self._reload = False
        #: corrections made since start (domains re-applied)
        self.corrections = 0
        #: passes made since start
        self.passes = 0

    # ---- requests from signal handlers (they only set flags)

    def request_stop(self) -> None:
        self._stop = True

    def request_reload(self) -> None:
        self._reload = True

    # ---- events

    def _event(self, event: str, message: str, **fields: Any) -> None:
        self._emit({"time": _now(), "event": event, "message": message, **fields})

    def reload(self) -> bool:
        """Re-read the spec file; on failure keep the old spec. True when it changed."""
        self._reload = False
        try:
            spec = load_spec(self.path)
        except (PlacementError, OSError) as e:
            self._event("reload-failed", f"{e}; keeping the previous spec", path=self.path)
            return False
        self.spec = spec
        self._warned.clear()
        self._event("reloaded", f"re-read {self.path}: {len(spec.entries)} entries", path=self.path)
        return True

    def _host_now(self) -> PlacementHost:
        if self._host is None:
            self._host = self._connect()
            self._events = None
            toolstack = getattr(self._host, "toolstack", None)
            try:
                self._events = toolstack.domain_events() if toolstack is not None else None
            except XenvcpuError as e:
                self._event(
                    "warning",
                    f"no domain events ({e}); re-planning every {self.interval:g} s only",
                )
        return self._host

    def _drop_host(self) -> None:
        if self._events is not None:
            self._events.close()
        if self._host is not None:
            close = getattr(self._host, "close", None)
            if close is not None:
                close()
        self._host, self._events = None, None

    def close(self) -> None:
        self._drop_host()

    # ---- one pass

    def cycle(self, cause: str = "interval") -> list[Event]:
        """Plan once and apply what differs; returns the corrections made."""
        self.passes += 1
        try:
            host = self._host_now()
            plan = make_plan(host, self.spec, strict=False)
        except XenvcpuError as e:
            self._event("error", f"cannot plan: {e}", cause=cause)
            self._drop_host()  # reconnect next time
            return []
        for w in plan.warnings:
            if w not in self._warned:
                self._event("warning", w)
        self._warned = set(plan.warnings)
        kept = [d for d in plan.domains if not d.name.endswith(TRANSIENT_SUFFIXES)]
        # Every domain planned in some pass so far, not only the last one: a domain left out
        # for a pass (say, while it sat in a cpupool its placement does not fit) has not
        # appeared when it comes back. Bounded: a long-lived watcher starts over at the cap.
        first = self._seen is None
        keys = [(d.id, d.uuid) for d in kept]
        known_before = set() if self._seen is None else {k for k in keys if k in self._seen}
        if self._seen is None or len(self._seen) > _MAX_KNOWN:
            self._seen = set()
        self._seen.update(keys)
        todo = [d for d in plan.changed_domains() if not d.name.endswith(TRANSIENT_SUFFIXES)]
        if not todo:
            return []
        plan = Plan(host, plan.spec, todo, plan.warnings, plan.seconds)
        try:
            result = plan.apply(timeout=self.timeout)
        except PlanFailed as e:
            self._event(
                "failed",
                f"could not apply ({len(todo)} domains): {e}",
                cause=cause,
                failed=[list(f) for f in e.failed],
                rolled_back=list(e.rolled_back),
            )
            return []
        except XenvcpuError as e:
            self._event("failed", f"could not apply: {e}", cause=cause)
            return []
        out: list[Event] = []
        vanished = set(result.vanished)
        for d in todo:
            if d.label in vanished:
                continue
            reason = (
                "initial"
                if first
                else ("drifted" if (d.id, d.uuid) in known_before else "appeared")
            )
            event: Event = {
                "time": _now(),
                "event": "corrected",
                "message": f"corrected {d.label} ({reason}): {summary(d)}",
                "domain": d.name,
                "id": d.id,
                "uuid": d.uuid,
                "reason": reason,
                "cause": cause,
                "changes": [c._asdict() for c in d.changes()],
            }
            self._emit(event)
            out.append(event)
        self.corrections += len(out)
        return out

    # ---- the loop

    def _wait(self, seconds: float) -> bool:
        """Wait up to ``seconds`` (in slices); True when a domain event came."""
        end = time.monotonic() + max(seconds, 0.0)
        while not (self._stop or self._reload):
            left = end - time.monotonic()
            if left <= 0:
                return False
            step = min(left, _SLICE)
            if self._events is None:
                time.sleep(step)
                continue
            try:
                if self._events.wait(step):
                    return True
            except XenvcpuError as e:
                self._event("warning", f"domain events stopped ({e}); reconnecting")
                self._drop_host()
        return False

    def run(self) -> int:
        """Watch until :meth:`request_stop`; returns 0."""
        self._event(
            "started",
            f"watching {self.path} ({len(self.spec.entries)} entries), re-planning every "
            f"{self.interval:g} s",
            path=self.path,
            interval=self.interval,
        )
        cause = "start"
        try:
            while not self._stop:
                if self._reload:
                    self.reload()
                    cause = "reload"
                self.cycle(cause)
                if self._wait(self.interval):
                    # Let the toolstack finish the domain; events meanwhile join this one.
                    end = time.monotonic() + self.settle
                    while time.monotonic() < end and not (self._stop or self._reload):
                        self._wait(end - time.monotonic())
                    cause = "domain event"
                else:
                    cause = "interval"
        finally:
            self._drop_host()
            self._event(
                "stopped",
                f"stopped after {self.passes} passes, {self.corrections} corrections",
                passes=self.passes,
                corrections=self.corrections,
            )
        return 0
