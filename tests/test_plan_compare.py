"""The columnar side of planning: the snapshot calls a plan is made of
(``domain_columns``, ``differences``, ranged ``maps``), the same on the native snapshot and
on the pure-Python one, and a plan whose core-side comparison agrees with its records."""

from __future__ import annotations

import random
import warnings

import pytest

import xenvcpu
from xenvcpu import CpuMap
from xenvcpu._backend import ListSnapshot
from xenvcpu.errors import AffinityNarrowed, XenvcpuError

MIXED = "sim:///?cpus=64&nodes=2&domains=12&vcpus=4&delay_ms=0"


def twins(host: xenvcpu.Host) -> tuple[object, ListSnapshot]:
    """The native snapshot and a pure-Python one holding the same records."""
    native = host.snapshot().native
    entries: list[tuple[object, object]] = []
    for i in range(native.domain_count):
        err = native.error(i)
        entries.append((native.domain(i), err if err is not None else native.vcpus(i)))
    return native, ListSnapshot(native.width, entries)  # type: ignore[arg-type]


def scrambled(host: xenvcpu.Host, seed: int) -> None:
    """Pins and online states that differ from domain to domain and vCPU to vCPU."""
    rnd = random.Random(seed)
    with warnings.catch_warnings():  # a soft map Xen narrows to the hard one is variety too
        warnings.simplefilter("ignore", AffinityNarrowed)
        _scramble(host, rnd)


def _scramble(host: xenvcpu.Host, rnd: random.Random) -> None:
    for d in host.domains():
        if d.id == 0:
            continue
        for v in range(d.max_vcpus):
            lo = rnd.randrange(0, 60)
            hi = lo + rnd.randrange(0, 4)
            if rnd.random() < 0.5:
                d.pin_vcpu(v, hard=f"{lo}-{hi}", soft=str(rnd.randrange(lo, hi + 1)))
            elif rnd.random() < 0.3:
                d.pin_vcpu(v, soft="0-63")


def test_domain_columns_and_ranged_maps_agree_with_the_python_snapshot() -> None:
    host = xenvcpu.connect(MIXED)
    scrambled(host, 1)
    native, py = twins(host)
    assert native.domain_columns() == py.domain_columns()  # type: ignore[attr-defined]
    ids, maxv, pools, shapes = py.domain_columns()
    assert ids == [d.id for d in host.domains()]
    assert shapes == [d.max_vcpus for d in host.domains()] == maxv
    assert pools == [d.cpupool for d in host.domains()]
    full = py.maps("hard")
    L = py.maplen
    for start, stop in [(0, None), (3, 9), (0, 0), (40, 10_000), (10_000, None), (5, 2)]:
        want = full[start * L : None if stop is None else stop * L]
        for snap in (native, py):
            assert snap.maps("hard", start, stop) == want  # type: ignore[attr-defined]
    assert native.maps("soft", 4, 8) == py.maps("soft")[4 * L : 8 * L]  # type: ignore[attr-defined]


@pytest.mark.parametrize("seed", range(6))
def test_differences_agree_with_the_python_snapshot_and_with_bytes(seed: int) -> None:
    host = xenvcpu.connect(MIXED)
    scrambled(host, seed)
    native, py = twins(host)
    rnd = random.Random(seed)
    width = py.width
    choices = [CpuMap.parse(t, width) for t in ("0-31", "32-63", "0-63", "5", "60-61")]
    # what some domains have now, so that some compare equal
    choices += [py.vcpu(k).hard_affinity for k in range(0, len(py), 7)]
    doms = list(range(py.domain_count))
    for _ in range(20):
        n = 4
        hard = [rnd.choice([*choices, None]) for _ in range(n)] if rnd.random() < 0.8 else None
        soft = [rnd.choice([*choices, None]) for _ in range(n)] if rnd.random() < 0.5 else None
        online = sorted(rnd.sample(range(5), rnd.randrange(1, 4))) if rnd.random() < 0.4 else None
        got = native.differences(doms, hard, soft, online)  # type: ignore[attr-defined]
        assert got == py.differences(doms, hard, soft, online)
        # and what the bytes say, vCPU by vCPU
        offsets = py.offsets()
        expect = []
        for i in doms:
            vs = py.vcpus(i)
            nh = sum(1 for v, w in zip(vs, hard or []) if w is not None and v.hard_affinity != w)
            ns = sum(1 for v, w in zip(vs, soft or []) if w is not None and v.soft_affinity != w)
            od = online is not None and {v.number for v in vs if v.online} != set(online)
            assert offsets[i + 1] - offsets[i] == len(vs)
            if nh or ns or od:
                expect.append((i, nh, ns, od))
        assert got == expect
        # positions are in the list given, whatever order it is in
        sub = doms[::-2]
        by_index = {row[0]: row[1:] for row in expect}
        assert native.differences(sub, hard, soft, online) == [  # type: ignore[attr-defined]
            (k, *by_index[i]) for k, i in enumerate(sub) if i in by_index
        ]


def test_differences_refuse_what_does_not_fit() -> None:
    host = xenvcpu.connect(MIXED)
    native, py = twins(host)
    m = CpuMap.parse("0-3", py.width)
    for snap in (native, py):
        with pytest.raises(ValueError, match="has 4 vCPUs, 3 hard maps were given"):
            snap.differences([1], [m, m, m])  # type: ignore[attr-defined]
        with pytest.raises(IndexError, match="out of range"):
            snap.differences([99], [m] * 4)  # type: ignore[attr-defined]


def test_a_domain_whose_vcpus_cannot_be_read_is_refused_by_name() -> None:
    host = xenvcpu.connect(MIXED)
    sim = host.sim
    assert sim is not None
    victim = host.domain("guest-3")
    sim.remove_domain_at(2, victim.id)  # vanishes midway through the next snapshot's reads
    snap = host.snapshot()
    native = snap.native
    bad = [i for i in range(native.domain_count) if native.error(i) is not None]
    if not bad:
        pytest.fail("the simulator did not fail the domain's read as asked")
    ids, _, _, shapes = native.domain_columns()
    assert [shapes[i] for i in bad] == [-1] * len(bad)
    with pytest.raises(ValueError, match=f"id {ids[bad[0]]}"):
        native.differences(bad, [CpuMap.full(native.width)] * 4)


@pytest.mark.parametrize("seed", range(4))
def test_plan_core_comparison_agrees_with_its_records(seed: int) -> None:
    """Which domains a plan finds changed (in the core, without records) is exactly which
    of its records have changes, on a host where every domain differs in its own way."""
    host = xenvcpu.connect(MIXED)
    scrambled(host, seed)
    rnd = random.Random(seed)
    # some domains already where the spec wants them
    for d in host.domains():
        if d.name.startswith("guest-") and rnd.random() < 0.4:
            d.pin_all(hard="0-47", soft="16-31")
    spec = {
        "domain": [
            {"match": "guest-*", "hard": "0-47", "soft": "16-31"},
            {"match": "guest-1*", "vcpu": {"2": {"hard": "20"}}},
            {"match": "guest-5", "hard": "8-23", "layout": "spread"},
            {"match": "guest-7", "vcpu": {"1": {"soft": "3"}}},
        ]
    }
    plan = host.plan(spec)
    by_records = [d.name for d in plan.domains if d]
    assert [d.name for d in plan.changed_domains()] == by_records
    assert bool(plan) == bool(by_records)
    for dp in plan.domains:  # the records themselves, against the host
        now = host.domain(dp.id).vcpus()
        for k, v in enumerate(now):
            assert dp.map_at(dp.hard_now, k) == v.hard_affinity
            assert dp.map_at(dp.soft_now, k) == v.soft_affinity
    plan.apply()
    again = host.plan(spec)
    assert not again and again.changed_domains() == [] and not any(again.domains)


def test_a_plan_makes_records_only_when_asked() -> None:
    host = xenvcpu.connect(MIXED)
    spec = {"domain": [{"match": "guest-*", "hard": "0-31"}]}
    host.plan(spec).apply()
    plan = host.plan(spec)
    assert not plan and len(plan.domains) == 12
    made = plan.domains._made  # type: ignore[attr-defined]
    assert made == [None] * 12  # nothing differs: no record was needed
    first = plan.domains[0]
    assert plan.domains[0] is first  # made once, kept (a caller may annotate it)
    assert plan.domains[-1].name == plan.domains[11].name
    assert [d.name for d in plan.domains[2:4]] == [plan.domains[2].name, plan.domains[3].name]
    with pytest.raises(IndexError):
        plan.domains[12]


def test_errors_from_the_snapshot_side_stay_typed() -> None:
    host = xenvcpu.connect(MIXED)
    snap = host.snapshot()
    with pytest.raises(ValueError, match="expected 'hard' or 'soft'"):
        snap.maps("both")
    assert isinstance(snap.native.error(0), (type(None), XenvcpuError))


def test_domains_with_numbered_gaps_are_grouped_by_their_numbers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """vCPU numbers with gaps (shape -2) make a group of their own, keyed by the numbers
    read from the snapshot; the plan is the one a regular numbering gives."""
    host = xenvcpu.connect(MIXED)
    spec = {"domain": [{"match": "guest-*", "hard": "0-47", "vcpu": {"1": {"hard": "3"}}}]}
    regular = host.plan(spec)
    real = host.snapshot

    def gappy() -> xenvcpu.Snapshot:
        snap = real()
        cols = snap.native.domain_columns()
        shapes = [-2 if k % 3 == 1 else s for k, s in enumerate(cols[3])]
        monkeypatch.setattr(snap, "domain_columns", lambda: (*cols[:3], shapes))
        return snap

    monkeypatch.setattr(host, "snapshot", gappy)
    plan = host.plan(spec)
    assert plan.diff() == regular.diff() != ""
    assert [d.numbers for d in plan.domains] == [d.numbers for d in regular.domains]
