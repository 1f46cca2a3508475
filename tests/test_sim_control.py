"""Host.sim, the simulated host's public controls, used as a tool author would use them:
to make the failures their own code must survive happen on demand."""

from __future__ import annotations

import errno
import math

import pytest

import xenvcpu
from xenvcpu import Host, SimControl, VcpuState
from xenvcpu.errors import (
    AffinityBusy,
    DomainDying,
    DomainNotFound,
    InvalidAffinity,
    VcpuNotFound,
    VcpuTimeout,
    XenvcpuError,
)


@pytest.fixture
def host() -> Host:
    h = xenvcpu.connect("sim:///default")
    assert h.sim is not None
    h.sim.freeze_clock()
    return h


def ctl(h: Host) -> SimControl:
    assert h.sim is not None
    return h.sim


def test_only_simulated_hosts_have_controls(host: Host) -> None:
    assert isinstance(host.sim, SimControl)
    assert "4 domains" in repr(host.sim)
    # a second connection to another simulated host has its own controls and state
    other = xenvcpu.connect("sim:///default")
    ctl(other).set_dying("web")
    assert not host.domain("web").info().dying and other.domain("web").info().dying


def test_fail_nth_takes_numbers_and_names(host: Host) -> None:
    web = host.domain("web")
    hard = xenvcpu.CpuMap.parse("0-3", host.max_cpus)
    ctl(host).fail_nth(2, "EINVAL")  # a pin: the domain lookup, then the set itself
    with pytest.raises(InvalidAffinity) as e:
        web.pin_vcpu(0, hard=hard)
    assert (e.value.errno, e.value.domain, e.value.vcpu) == (errno.EINVAL, 1, 0)
    ctl(host).fail_nth(1, errno.ESRCH)
    with pytest.raises(DomainNotFound):
        web.info()
    assert web.vcpu(0).hard_affinity == host.cpumap("2")  # nothing changed


def test_remove_domain_midway(host: Host) -> None:
    """A domain destroyed while a snapshot runs: the others are still read."""
    ctl(host).remove_domain_at(2, "db")  # after the domain list, before db's vCPUs
    snap = host.snapshot()
    by_name = {d.domain.name: d for d in snap}
    assert isinstance(by_name["db"].error, DomainNotFound)
    assert by_name["web"].error is None and len(by_name["web"].vcpus) == 4
    assert [d.name for d in host.domains()] == ["Domain-0", "web", "batch"]


def test_dying_and_pin_override(host: Host) -> None:
    ctl(host).set_pin_override(host.domain("web"), 1)
    with pytest.raises(AffinityBusy):
        host.domain("web").pin_vcpu(1, hard="4")
    assert host.domain("web").pin_vcpu(1, hard="4", force=True).hard == host.cpumap("4")
    ctl(host).set_dying(2)
    with pytest.raises(DomainDying):
        host.domain("db").pin_vcpu(0, hard="16")


def test_refuse_multicall_falls_back_to_single_calls(host: Host) -> None:
    d = host.domain("batch")
    n0 = ctl(host).hypercalls()
    d.vcpus()
    batched = ctl(host).hypercalls() - n0
    ctl(host).refuse_multicall()
    n0 = ctl(host).hypercalls()
    d.vcpus()
    single = ctl(host).hypercalls() - n0
    # one lookup + one batch, against one lookup + a refused batch + 2 calls per vCPU
    assert (batched, single) == (2, 2 + 2 * d.max_vcpus)
    assert ctl(host).ops() > 0


def test_vcpu_states_and_the_clock(host: Host) -> None:
    ctl(host).set_vcpu_state("web", 0, VcpuState.RUNNABLE)
    ctl(host).set_vcpu_state("web", 1, "blocked")
    states = [v.state for v in host.domain("web").vcpus()[:2]]
    assert states == [VcpuState.RUNNABLE, VcpuState.BLOCKED]
    t0 = host.domain("web").vcpu(0).cpu_time_ns
    assert host.domain("web").vcpu(0).cpu_time_ns == t0  # frozen
    ctl(host).advance(2.0)
    assert host.domain("web").vcpu(0).cpu_time_ns > t0


def test_guests_that_never_follow(host: Host) -> None:
    ctl(host).set_follow(None)
    with pytest.raises(VcpuTimeout) as e:
        host.domain("web").set_vcpus(2, wait=True, timeout=0)
    assert e.value.pending == (2, 3)
    ctl(host).set_follow(0)
    host.domain("web").set_vcpus(2, wait=True, timeout=0)
    assert host.domain("web").online_vcpus == 2


def test_set_release_changes_the_interface(host: Host) -> None:
    ctl(host).set_release("4.99")
    with pytest.raises(XenvcpuError, match="EACCES"):
        host.domain("web").vcpus()
    ctl(host).set_release("4.17.5")
    assert len(host.domain("web").vcpus()) == 4


@pytest.mark.parametrize(
    ("call", "exc"),
    [
        (lambda s: s.fail_nth(0, "EINVAL"), ValueError),
        (lambda s: s.fail_nth(True, "EINVAL"), TypeError),
        (lambda s: s.fail_nth(1, "EWHATEVER"), ValueError),
        (lambda s: s.fail_nth(1, "path"), ValueError),
        (lambda s: s.fail_nth(1, 0), ValueError),
        (lambda s: s.remove_domain_at(1, "nobody"), DomainNotFound),
        (lambda s: s.remove_domain_at(1, 70000), DomainNotFound),
        (lambda s: s.set_vcpu_state("web", 0, "sleeping"), ValueError),
        (lambda s: s.set_vcpu_state("web", 0, VcpuState.OFFLINE), ValueError),
        (lambda s: s.set_vcpu_state("web", 9, "running"), VcpuNotFound),
        (lambda s: s.set_pin_override("web", 9), VcpuNotFound),
        (lambda s: s.set_follow(math.nan), ValueError),
        (lambda s: s.set_follow(-1), ValueError),
        (lambda s: s.advance(math.inf), ValueError),
        (lambda s: s.set_release("four"), ValueError),
        (lambda s: s.set_release("4.99999"), ValueError),
        (lambda s: s.set_dying(3.5), TypeError),
    ],
)
def test_bad_arguments_are_typed_errors_and_change_nothing(
    host: Host, call: object, exc: type[Exception]
) -> None:
    before = [(d.id, d.info().dying, d.online_vcpus) for d in host.domains()]
    with pytest.raises(exc):
        call(ctl(host))  # type: ignore[operator]
    assert [(d.id, d.info().dying, d.online_vcpus) for d in host.domains()] == before
    assert host.domain("web").pin_vcpu(0, hard="2").hard == host.cpumap("2")  # no fault left


def test_other_backends_have_none() -> None:
    from xenvcpu._backend import Parts
    from xenvcpu.backends.xenstore import XenstoreHypervisor
    from xenvcpu.toolstack import XenstoreToolstack

    ts = XenstoreToolstack("/nonexistent")
    parts = Parts(XenstoreHypervisor(ts), ts)
    assert parts.sim is None
