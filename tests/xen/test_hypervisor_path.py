"""The hypervisor path on real Xen: privcmd hypercalls compared with what `xl` reports.

Runs only inside the lab's dom0 (tests/xen/conftest.py). Every comparison reads `xl` and
xenvcpu close together; fields that move on their own (running/blocked, the pCPU a busy
vCPU is on, CPU time) are compared with retries or tolerances, never skipped.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
import xl

import xenvcpu
from xenvcpu import Host, VcpuState
from xenvcpu.errors import (
    AffinityNarrowed,
    DomainNotFound,
    InvalidAffinity,
    VcpuNotFound,
)

T = TypeVar("T")


@pytest.fixture(scope="module")
def host() -> Iterator[Host]:
    with xenvcpu.connect() as h:  # the default on a Xen host: xen:///system
        assert h.uri == "xen:///system" and h.backend == "privcmd"
        yield h


def eventually(check: Callable[[], T], attempts: int = 8, pause: float = 0.25) -> T:
    """Run ``check`` until it stops raising AssertionError (state that moves on its own)."""
    for _ in range(attempts - 1):
        try:
            return check()
        except AssertionError:
            time.sleep(pause)
    return check()


def xl_state(v: xenvcpu.VcpuInfo) -> str:
    return {
        VcpuState.RUNNING: "r--",
        VcpuState.BLOCKED: "-b-",
        VcpuState.RUNNABLE: "---",
        VcpuState.OFFLINE: "--p",
    }[v.state]


def test_host_info_matches_xl_info(host: Host) -> None:
    info: dict[str, Any] = xl.info()
    hi = host.info
    assert host.xen_version == f"{info['xen_major']}.{info['xen_minor']}"
    assert hi.nr_cpus == info["nr_cpus"] == len(host.cpus)
    assert hi.max_cpu_id == info["max_cpu_id"] and host.max_cpus == info["max_cpu_id"] + 1
    assert hi.threads_per_core == info["threads_per_core"]
    assert hi.cores_per_socket == info["cores_per_socket"]
    assert hi.nr_nodes == info["nr_nodes"]
    assert hi.total_memory_mib == info["total_memory"]
    assert abs(hi.free_memory_mib - int(info["free_memory"])) <= 16
    assert len(host.topology.cpus) == info["nr_cpus"]
    assert [p.name for p in host.cpupools] == ["Pool-0"]
    assert host.cpupools[0].cpus == host.cpus


def test_domain_list_matches_xl_list(host: Host, guest: str) -> None:
    ours = {d.name: d for d in host.domains()}
    theirs = {d.name: d for d in xl.domains()}
    assert set(ours) == set(theirs) and {"Domain-0", guest} <= set(ours)
    for name, d in theirs.items():
        assert ours[name].id == d.domid
        assert ours[name].online_vcpus == d.vcpus
    assert host.domain(guest).max_vcpus == 4 and host.domain(guest).online_vcpus == 2
    assert host.domain(0).name == "Domain-0"


@pytest.mark.parametrize("dom", ["Domain-0", "guest"])
def test_every_vcpu_matches_xl_vcpu_list(host: Host, guest: str, dom: str) -> None:
    name = guest if dom == "guest" else dom
    d = host.domain(name)

    def compare() -> None:
        t0 = time.monotonic()
        ours = d.vcpus()
        theirs = xl.vcpus(name)
        elapsed = time.monotonic() - t0
        assert [v.number for v in ours] == [v.vcpu for v in theirs]
        for a, b in zip(ours, theirs):
            assert a.online == b.online, (a, b)
            assert set(a.hard_affinity) == b.hard, (a, b)
            assert set(a.soft_affinity) == b.soft, (a, b)
            # xl prints seconds with one decimal; both reads happen within `elapsed`.
            assert abs(a.cpu_time_ns / 1e9 - b.time_s) <= 0.1 + elapsed + 0.05, (a, b)
            if not a.online:
                assert a.cpu is None and b.cpu is None and xl_state(a) == b.state == "--p"
            elif name == "Domain-0":
                # This test runs on Domain-0's vCPUs: which of them is running, and where,
                # changes between any two reads. Both must still show an online vCPU on a
                # pCPU of its hard affinity.
                assert b.state != "--p" and a.cpu in a.hard_affinity and b.cpu in b.hard, (a, b)
            else:
                assert a.cpu == b.cpu and xl_state(a) == b.state, (a, b)

    eventually(compare)


def test_snapshot_covers_every_domain(host: Host, guest: str) -> None:
    snap = {s.domain.name: s for s in host.snapshot()}
    assert {"Domain-0", guest} <= set(snap)
    for s in snap.values():
        assert s.error is None and len(s.vcpus) == s.domain.max_vcpus


@pytest.mark.parametrize(
    ("hard", "soft"), [("1-2", None), (None, "2-3"), ("0-1", "1"), ("3", "3"), ("all", "all")]
)
def test_pin_reads_back_like_xl(
    host: Host, guest: str, restore_affinity: Any, hard: str | None, soft: str | None
) -> None:
    restore_affinity.save(guest, 1)
    d = host.domain(guest)
    before = d.vcpu(1)
    p = d.pin_vcpu(1, hard=hard, soft=soft)
    want_hard = host.cpumap(hard) if hard else before.hard_affinity
    want_soft = host.cpumap(soft) if soft else before.soft_affinity
    assert (p.hard is None) == (hard is None) and (p.soft is None) == (soft is None)
    after = d.vcpu(1)
    assert after.hard_affinity == want_hard and after.soft_affinity == want_soft
    x = xl.vcpu(guest, 1)
    assert x.hard == set(want_hard) and x.soft == set(want_soft)


def test_effective_soft_is_narrowed_configured_is_kept(
    host: Host, guest: str, restore_affinity: Any
) -> None:
    # Reference §11: hard 0-1, soft 1-2 -> effective soft 1, configured soft 1-2.
    restore_affinity.save(guest, 0)
    d = host.domain(guest)
    with pytest.warns(AffinityNarrowed, match=r"soft 1-2 -> 1"):
        p = d.pin_vcpu(0, hard="0-1", soft="1-2")
    assert (str(p.hard), str(p.soft)) == ("0-1", "1")
    assert str(d.vcpu(0).soft_affinity) == "1-2"
    assert xl.vcpu(guest, 0).soft == {1, 2}


def test_pin_all_like_xl_all(host: Host, guest: str, restore_affinity: Any) -> None:
    for v in range(4):
        restore_affinity.save(guest, v)
    pins = host.domain(guest).pin_all(hard="2-3")
    assert [p.vcpu for p in pins] == [0, 1, 2, 3]
    assert all(x.hard == {2, 3} for x in xl.vcpus(guest))


def test_empty_intersection_with_the_cpupool_is_einval(
    host: Host, guest: str, restore_affinity: Any
) -> None:
    """Take CPU 3 out of Pool-0: a hard map of only CPU 3 has nothing in the guest's pool."""
    for v in range(4):
        restore_affinity.save(guest, v)
    d = host.domain(guest)
    d.pin_all(hard="0-2", soft="0-2")
    xl.xl("cpupool-cpu-remove", "Pool-0", 3)
    try:
        before = [(str(v.hard_affinity), str(v.soft_affinity)) for v in d.vcpus()]
        with pytest.raises(InvalidAffinity, match=r"0-2") as info:
            d.pin_vcpu(1, hard="3")
        assert info.value.errno == errno.EINVAL and info.value.vcpu == 1
        assert [(str(v.hard_affinity), str(v.soft_affinity)) for v in d.vcpus()] == before
        assert str(host.cpupools[0].cpus) == "0-2"
    finally:
        xl.xl("cpupool-cpu-add", "Pool-0", 3)
    assert str(host.cpupools[0].cpus) == "0-3"


def test_unknown_domain_and_vcpu(host: Host, guest: str) -> None:
    with pytest.raises(DomainNotFound, match="Domain-0"):
        host.domain("no-such-domain")
    with pytest.raises(DomainNotFound):
        host.domain(999)
    with pytest.raises(VcpuNotFound, match="valid vCPUs are 0-3"):
        host.domain(guest).pin_vcpu(4, hard="0")
    with pytest.raises(VcpuNotFound):
        host.domain(guest).vcpu(-1)


def test_non_root_gets_permission_denied() -> None:
    code = (
        "import xenvcpu, sys\n"
        "try:\n    xenvcpu.connect('xen:///system')\n"
        "except xenvcpu.errors.PermissionDenied as e:\n    print('DENIED', e); sys.exit(0)\n"
        "sys.exit(3)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    r = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "DENIED" in r.stdout and "root" in r.stdout


def test_batched_and_single_calls_agree(host: Host, guest: str) -> None:
    """Reference §10: a multicall batch gives the same answers as single calls."""
    assert host._hv.multicall
    d = host.domain(guest)

    def view() -> list[tuple[object, ...]]:
        return [(v.number, v.online, str(v.hard_affinity), str(v.soft_affinity)) for v in d.vcpus()]

    batched = view()
    host._hv.multicall = False
    try:
        single = view()
    finally:
        host._hv.multicall = True
    assert batched == single and len(batched) == 4
