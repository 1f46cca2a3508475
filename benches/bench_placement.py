"""Placement at scale on the simulated host, against its baselines in the same run.

Host: 4096 pCPUs in 4 NUMA nodes, 1000 domains x 8 vCPUs (every map 512 bytes).

* plan — a spec matching every guest (``guest-*``: hard and soft affinity), against
  ``Host.snapshot()``, the read a plan starts from (target: at most 2x). Cases: the
  steady state a watcher re-plans every interval (nothing to change), a plan where
  every vCPU of every guest changes, and the same with a ``DomainPlan`` record made for
  every changed domain (records are made on demand).
* apply — moving every vCPU of every guest between node 1 and node 2 (hard affinity, 8000
  pins), as one all-or-nothing apply (``Plan.apply``: one batch across domains), against a
  ``Domain.pin_all`` loop (one batch per domain) and against one ``pin_vcpu`` call per vCPU
  (what ``xl vcpu-pin`` does). The plan is made outside the timed part.

Every case records ``per`` (vCPUs covered per call) for the per-vCPU column of the report.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

import xenvcpu
from xenvcpu import Host
from xenvcpu.placement import load_spec

SCALE_URI = "sim:///?cpus=4096&nodes=4&domains=1000&vcpus=8"
GUEST_VCPUS = 8000


def record(benchmark: Any, group: str, impl: str, per: int) -> None:
    benchmark.group = f"placement {group}"
    benchmark.extra_info.update(suite="placement", op=group, impl=impl, per=per)


@pytest.fixture(scope="module")
def host() -> Iterator[Host]:
    h = xenvcpu.connect(SCALE_URI)
    assert h.sim is not None
    h.sim.freeze_clock(True)
    yield h


def spec_for(node: int) -> Any:
    return load_spec(
        {"domain": [{"match": "guest-*", "hard": f"node:{node}", "soft": f"node:{node}"}]}
    )


def test_snapshot_baseline(benchmark: Any, host: Host) -> None:
    record(benchmark, "plan", "snapshot (baseline)", GUEST_VCPUS)
    assert len(benchmark(host.snapshot)) == 1001


def test_plan_steady_state(benchmark: Any, host: Host) -> None:
    spec = spec_for(3)
    host.plan(spec).apply()
    record(benchmark, "plan", "plan, nothing to change", GUEST_VCPUS)
    plan = benchmark(host.plan, spec)
    assert not plan and len(plan.domains) == 1000


def test_plan_everything_changes(benchmark: Any, host: Host) -> None:
    spec = spec_for(0)
    host.plan(spec_for(3)).apply()
    record(benchmark, "plan", "plan, every vCPU changes", GUEST_VCPUS)
    plan = benchmark(host.plan, spec)
    changed = plan.changed_domains()
    assert len(changed) == 1000 and all(len(d.hard_changes) == 8 for d in changed)


def test_plan_everything_changes_records(benchmark: Any, host: Host) -> None:
    """The same, with a ``DomainPlan`` record made for every changed domain (what an apply,
    a diff or a JSON report reads; a plan makes them only when asked)."""
    spec = spec_for(0)
    host.plan(spec_for(3)).apply()
    record(benchmark, "plan", "plan + a record per changed domain", GUEST_VCPUS)

    def plan_and_records() -> int:
        return len(host.plan(spec).changed_domains())

    assert benchmark(plan_and_records) == 1000


def _flip(host: Host) -> Iterator[str]:
    """Cpulists alternating between node 1 and node 2, so every round moves every vCPU."""
    for node in itertools.cycle((1, 2)):
        yield f"node:{node}"


def test_apply_one_batch(benchmark: Any, host: Host) -> None:
    record(benchmark, "apply", "Plan.apply (one batch)", GUEST_VCPUS)
    cpulists = _flip(host)

    def setup() -> tuple[tuple[Any], dict[str, Any]]:
        spec = load_spec({"domain": [{"match": "guest-*", "hard": next(cpulists)}]})
        return (host.plan(spec),), {}

    def apply(plan: Any) -> int:
        return int(plan.apply().pinned)

    assert benchmark.pedantic(apply, setup=setup, rounds=8, warmup_rounds=1) == GUEST_VCPUS


def test_apply_pin_all_loop(benchmark: Any, host: Host) -> None:
    record(benchmark, "apply", "pin_all per domain", GUEST_VCPUS)
    guests = [d for d in host.domains() if d.name.startswith("guest-")]
    cpulists = _flip(host)

    def setup() -> tuple[tuple[Any], dict[str, Any]]:
        return (host.cpumap(next(cpulists)),), {}

    def loop(m: Any) -> int:
        for d in guests:
            d.pin_all(hard=m)
        return len(guests)

    assert benchmark.pedantic(loop, setup=setup, rounds=8, warmup_rounds=1) == 1000


def test_apply_pin_per_vcpu(benchmark: Any, host: Host) -> None:
    record(benchmark, "apply", "pin_vcpu per vCPU (as xl)", GUEST_VCPUS)
    guests = [d for d in host.domains() if d.name.startswith("guest-")]
    cpulists = _flip(host)

    def setup() -> tuple[tuple[Any], dict[str, Any]]:
        return (host.cpumap(next(cpulists)),), {}

    def loop(m: Any) -> int:
        n = 0
        for d in guests:
            for v in range(d.max_vcpus):
                d.pin_vcpu(v, hard=m)
                n += 1
        return n

    assert benchmark.pedantic(loop, setup=setup, rounds=4, warmup_rounds=1) == GUEST_VCPUS
