"""Utilisation sampling (xenvcpu.metrics) against the simulated host with a frozen clock:
exact figures, vCPUs going offline and online, domains appearing, vanishing, coming back
under a new domid or unreadable for one snapshot, and bit 63 leaked by Xen < 4.13."""

from __future__ import annotations

import doctest
import math
from array import array
from types import SimpleNamespace
from typing import Any

import pytest

import xenvcpu
import xenvcpu.metrics
from xenvcpu import Host, SimControl
from xenvcpu.errors import DomainNotFound
from xenvcpu.metrics import (
    RUNSTATE_UPDATE,
    Sampler,
    cpu_times,
    domain_blocks,
    leaks_runstate_update,
    node_loads,
)

# What a simulated vCPU runs, by state (docs/simulator.md): running, runnable, blocked.
RUNNING, RUNNABLE, BLOCKED = 0.9, 0.15, 0.02


def connect(uri: str = "sim:///default") -> Host:
    h = xenvcpu.connect(uri)
    ctl(h).freeze_clock()
    return h


def ctl(h: Host) -> SimControl:
    assert h.sim is not None
    return h.sim


def nan(x: float) -> bool:
    return math.isnan(x)


def test_module_example_runs() -> None:
    failed, tried = doctest.testmod(xenvcpu.metrics, raise_on_error=False)
    assert tried >= 5 and failed == 0


def test_first_sample_is_a_reference_then_utilisation_is_exact() -> None:
    host = connect()
    s = Sampler(host)
    first = s.sample()
    assert first.interval_s is None and len(first) == 32
    assert all(nan(u) for u in first.util)
    assert [d.status for d in first] == ["first"] * 4
    ctl(host).advance(2.0)
    second = s.sample()
    assert second.interval_s == 2.0 and s.previous is second
    web = second.domain("web")
    assert web.status == "ok" and web.interval_s == 2.0
    # web's vCPUs: runnable, blocked, blocked, running (xl shows ---, -b-, -b-, r--)
    assert list(web.vcpu_util) == pytest.approx([RUNNABLE, BLOCKED, BLOCKED, RUNNING])
    assert web.util == pytest.approx(RUNNABLE + 2 * BLOCKED + RUNNING)
    assert list(web.numbers) == [0, 1, 2, 3] and list(web.cpus) == [2, 3, 2, 3]
    assert list(web.states) == [3, 2, 2, 1]
    db = second.domain(2)
    assert list(db.vcpu_util)[6:] == [0.0, 0.0]  # offline all along
    assert (db.max_vcpus, db.online_vcpus, db.cpupool) == (8, 6, 0)
    assert second.util_total() == pytest.approx(sum(d.util for d in second))
    assert host.domain(second.domain("batch").id).guest_type.value == "pvh"
    with pytest.raises(DomainNotFound, match="known: Domain-0 \\(0\\), web \\(1\\)"):
        second.domain("nobody")


def test_per_pcpu_load_shows_where_vcpus_pile_up() -> None:
    host = connect()
    s = Sampler(host)
    s.sample()
    ctl(host).advance(1.0)
    sample = s.sample()
    assert len(sample.pcpu_load) == host.max_cpus == 64
    # Domain-0's vCPU 2 and web's vCPUs 0 and 2 share pCPU 2
    on2 = sample.vcpus_on(2)
    assert [(sample.domid[k], sample.number[k]) for k in on2] == [(0, 2), (1, 0), (1, 2)]
    assert sample.pcpu_vcpus[2] == 3
    assert sample.pcpu_load[2] == pytest.approx(BLOCKED + RUNNABLE + BLOCKED)
    assert sample.pcpu_load[3] == pytest.approx(BLOCKED + BLOCKED + RUNNING)
    assert sample.pcpu_vcpus[10] == 0 and sample.pcpu_load[10] == 0.0
    nodes = node_loads(sample)
    assert [(n.node, len(n.cpus)) for n in nodes] == [(0, 32), (1, 32)]
    assert math.fsum(nodes[0].load) + math.fsum(nodes[1].load) == pytest.approx(sample.util_total())


def test_vcpus_going_offline_and_online() -> None:
    host = connect()
    ctl(host).set_follow(0)
    s = Sampler(host)
    s.sample()
    host.domain("web").set_vcpus(2)  # vCPUs 2 and 3 go offline at once
    ctl(host).advance(2.0)
    a = s.sample().domain("web")
    assert list(a.vcpu_util) == pytest.approx([RUNNABLE, BLOCKED, 0.0, 0.0])
    assert list(a.cpus)[2:] == [-1, -1] and a.online_vcpus == 2
    ctl(host).advance(1.0)
    host.domain("web").set_vcpus(4)  # back online for the last half of the interval
    ctl(host).advance(1.0)
    b = s.sample().domain("web")
    assert b.interval_s == 2.0
    assert list(b.vcpu_util) == pytest.approx([RUNNABLE, BLOCKED, BLOCKED / 2, RUNNING / 2])


def test_domains_appearing_vanishing_and_returning_under_a_new_domid() -> None:
    host = connect()
    s = Sampler(host)
    s.sample()
    db_uuid = host.domain("db").uuid
    ctl(host).restart_domain("db")  # xl reboot: db comes back as domain 4, same UUID
    new_uuid = "00112233-4455-6677-8899-aabbccddeeff"
    ctl(host).restart_domain("batch", uuid=new_uuid)  # batch goes, a new guest (5) comes
    ctl(host).advance(1.0)
    a = s.sample()
    assert [(d.name, d.id, d.status, d.previous_id) for d in a] == [
        ("Domain-0", 0, "ok", None),
        ("web", 1, "ok", None),
        ("db", 4, "returned", 2),
        ("batch", 5, "first", None),
    ]
    assert a.domain("db").uuid == db_uuid and nan(a.domain("db").util)
    assert all(nan(u) for u in a.domain(5).vcpu_util)
    assert [(g.name, g.id) for g in a.vanished] == [("batch", 3)]
    ctl(host).remove_domain_at(1, "web")  # web vanishes before the next snapshot
    ctl(host).advance(1.0)
    b = s.sample()
    assert [d.name for d in b] == ["Domain-0", "db", "batch"] and b.vanished[0].id == 1
    assert b.domain("db").status == "ok"
    assert b.domain("db").util == pytest.approx(BLOCKED * 4 + RUNNING + RUNNABLE)
    assert b.pcpu_vcpus[2] == 1  # web's vCPUs left pCPU 2


def test_a_domain_unreadable_in_one_snapshot_does_not_break_the_sample() -> None:
    host = connect()
    s = Sampler(host)
    s.sample()
    ctl(host).advance(1.0)
    ctl(host).fail_nth(18, "EIO")  # db's first vCPU read in the next snapshot
    a = s.sample()
    db = a.domain("db")
    assert db.status == "error" and db.error is not None and len(db) == 0
    assert nan(db.util) and [d.status for d in a if d.name != "db"] == ["ok"] * 3
    assert a.domain("batch").util == pytest.approx(3 * (RUNNING + RUNNABLE + 2 * BLOCKED))
    assert len(a) == 32 - 8 and not a.vanished
    ctl(host).advance(1.0)
    b = s.sample()
    # measured from its last good reading, two seconds back
    assert b.domain("db").status == "ok" and b.domain("db").interval_s == 2.0
    assert b.domain("db").util == pytest.approx(BLOCKED * 4 + RUNNING + RUNNABLE)


def test_bit_63_is_masked_on_xen_before_4_13() -> None:
    host = connect("sim:///default?version=4.12")
    ctl(host).leak_runstate_update()
    s = Sampler(host)
    assert s.mask
    samples = []
    for _ in range(4):
        raw = host.snapshot().column("cpu_time_ns")
        assert any(t & RUNSTATE_UPDATE for t in raw)  # the hypervisor leaks it
        samples.append(s.sample())
        ctl(host).advance(1.0)
    for sample in samples[1:]:
        assert max(sample.cpu_time_ns) < RUNSTATE_UPDATE and not sample.resets
        assert list(sample.domain("web").vcpu_util) == pytest.approx(
            [RUNNABLE, BLOCKED, BLOCKED, RUNNING]
        )
    # without the mask the counters jump back and forth
    unmasked = Sampler(host, mask=False)
    unmasked.sample()
    ctl(host).advance(1.0)
    jumpy = unmasked.sample()
    assert jumpy.resets or max(u for u in jumpy.util if u == u) > 1e6


def test_which_releases_leak() -> None:
    assert leaks_runstate_update("4.12") and leaks_runstate_update("4.6")
    assert not leaks_runstate_update("4.13") and not leaks_runstate_update("5.0")
    assert leaks_runstate_update("unknown")  # masking is harmless where no one can tell
    host = connect()
    assert not Sampler(host).mask
    ctl(host).leak_runstate_update()
    assert max(cpu_times(host.snapshot(), mask=False)) >= RUNSTATE_UPDATE
    assert max(cpu_times(host.snapshot(), mask=True)) < RUNSTATE_UPDATE


def test_host_sample_sleeps_the_interval() -> None:
    host = xenvcpu.connect("sim:///default")  # the real clock
    s = host.sample(0.05)
    assert s.interval_s is not None and s.interval_s >= 0.05
    assert s.domain("web").util == pytest.approx(RUNNABLE + 2 * BLOCKED + RUNNING, rel=0.01)
    with pytest.raises(ValueError):
        host.sample(-1)


def test_domain_blocks_walks_when_domains_are_not_in_id_order() -> None:
    def snap(domids: list[int], errors: list[bool]) -> Any:
        native = SimpleNamespace(
            domain_count=len(errors), error=lambda i: "gone" if errors[i] else None
        )
        return SimpleNamespace(column=lambda name: array("I", domids), native=native)

    assert domain_blocks(snap([5, 5, 2, 2, 2, 9], [False, False, False])) == [
        (0, 2),
        (2, 5),
        (5, 6),
    ]
    assert domain_blocks(snap([1, 1, 3], [False, True, False])) == [(0, 2), (2, 2), (2, 3)]
