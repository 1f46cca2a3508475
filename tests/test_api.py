"""The public API on simulated hosts, one suite over several backends.

Backends: the default simulated Xen 4.17 (multicall batches), the same host answering
only single calls (multicall refused), and hosts speaking older and newer interface
layouts (4.6, 4.10.1, 4.21: different getdomaininfo/physinfo sizes). Every test runs on
each, so results cannot depend on which path answered.
"""

from __future__ import annotations

import errno
import os
import warnings
from collections.abc import Iterator

import pytest
from daemon.conftest import xenstored_path  # noqa: F401  (the real oxenstored fixture)

import xenvcpu
from xenvcpu import CpuMap, Domain, Host, Pinning, SimControl, VcpuInfo, VcpuState
from xenvcpu.errors import (
    AffinityBusy,
    AffinityNarrowed,
    CpuListError,
    DomainDying,
    DomainNotFound,
    InterfaceMismatch,
    InvalidAffinity,
    NoHypervisor,
    NotSupported,
    VcpuCountError,
    VcpuNotFound,
    VcpuTimeout,
    XenvcpuError,
)

BACKENDS = {
    "sim-4.17-batched": "sim:///default",
    "sim-4.17-single": "sim:///default",
    "sim-4.6": "sim:///default?version=4.6",
    "sim-4.10.1": "sim:///default?version=4.10.1",
    "sim-4.21": "sim:///default?version=4.21",
}


def sim(h: Host) -> SimControl:
    """The simulated host's controls (every host here is simulated)."""
    assert h.sim is not None, f"{h.uri} is not a simulated host"
    return h.sim


@pytest.fixture(params=list(BACKENDS))
def host(request: pytest.FixtureRequest) -> Iterator[Host]:
    h = xenvcpu.connect(BACKENDS[request.param])
    if request.param.endswith("single"):
        sim(h).refuse_multicall(errno.ENOSYS)
    sim(h).freeze_clock(True)
    yield h


def affinity(dom: Domain) -> list[tuple[str, str]]:
    return [(str(v.hard_affinity), str(v.soft_affinity)) for v in dom.vcpus()]


def state_of(host: Host) -> list[tuple[int, int, list[tuple[str, str]]]]:
    """Everything a bad call must leave unchanged."""
    return [(d.id, d.online_vcpus, affinity(d)) for d in host.domains()]


# ---- contracts: the types every call returns ----------------------------------------------


def test_host_contract(host: Host) -> None:
    assert host.backend == "sim" and host.xen_version.count(".") == 1
    assert isinstance(host.max_cpus, int) and host.max_cpus == 64
    cpus = host.cpus
    assert isinstance(cpus, CpuMap) and cpus.width == host.max_cpus and str(cpus) == "0-63"
    info = host.info
    assert (info.nr_cpus, info.max_cpu_id, info.threads_per_core, info.cores_per_socket) == (
        64,
        63,
        2,
        16,
    )
    assert info.nr_nodes == 2 and info.cpu_mhz > 0 and info.total_memory_mib > 0
    topo = host.topology
    assert len(topo.cpus) == 64 and topo.nodes == [0, 1] and len(topo.sockets) == 2
    assert all(isinstance(c.core, int) for c in topo.cpus)
    assert CpuMap.parse("node:1", 64, topology=topo) == CpuMap.from_cpus(topo.node_cpus(1), 64)
    pools = host.cpupools
    assert [(p.id, p.name, p.scheduler) for p in pools] == [
        (0, "Pool-0", "credit2"),
        (1, "batch-pool", "credit"),
    ]
    assert str(pools[1].cpus) == "48-63" and (pools[0].cpus & pools[1].cpus) == CpuMap(64)


def test_domain_and_vcpu_contract(host: Host) -> None:
    doms = host.domains()
    assert [(d.id, d.name, d.max_vcpus) for d in doms] == [
        (0, "Domain-0", 4),
        (1, "web", 4),
        (2, "db", 8),
        (3, "batch", 16),
    ]
    for d in doms:
        assert isinstance(d, Domain) and len(d.uuid) == 36 and d.uuid.count("-") == 4
        vcpus = d.vcpus()
        assert [v.number for v in vcpus] == list(range(d.max_vcpus))
        assert d.online_vcpus == sum(v.online for v in vcpus)
        for v in vcpus:
            assert isinstance(v, VcpuInfo) and v.domain == d.id
            assert isinstance(v.state, VcpuState)
            assert isinstance(v.cpu_time_ns, int) and v.cpu_time_ns >= 0
            assert isinstance(v.hard_affinity, CpuMap) and v.hard_affinity.width == 64
            assert isinstance(v.soft_affinity, CpuMap) and v.soft_affinity.width == 64
            if v.state is VcpuState.OFFLINE:
                assert v.cpu is None and not v.online
            else:
                assert isinstance(v.cpu, int) and v.cpu in v.hard_affinity


def test_known_configuration(host: Host) -> None:
    web = host.domain("web")
    assert affinity(web)[:3] == [("2", "0-7"), ("3", "0-7"), ("0-63", "0-7")]
    db = host.domain(2)
    assert db.online_vcpus == 6 and {str(v.hard_affinity) for v in db.vcpus()} == {"16-31"}
    assert [v.state for v in db.vcpus()][6:] == [VcpuState.OFFLINE] * 2
    batch = host.domain("3")
    assert batch.cpupool == 1 and batch.online_vcpus == 12


def test_snapshot_matches_per_domain_reads(host: Host) -> None:
    snap = host.snapshot()
    assert [s.domain.name for s in snap] == ["Domain-0", "web", "db", "batch"]
    for s in snap:
        assert s.error is None
        assert [repr(v) for v in s.vcpus] == [repr(v) for v in s.domain.vcpus()]


def test_states_include_runnable(host: Host) -> None:
    sim(host).set_vcpu_state(1, 0, "runnable")
    sim(host).set_vcpu_state(1, 1, "running")
    sim(host).set_vcpu_state(1, 2, "blocked")
    states = [v.state for v in host.domain("web").vcpus()]
    assert states[:3] == [VcpuState.RUNNABLE, VcpuState.RUNNING, VcpuState.BLOCKED]
    assert VcpuState.RUNNABLE.letter == "-" and VcpuState.OFFLINE.letter == "p"


# ---- pinning ---------------------------------------------------------------------------------


def test_pin_hard_soft_both_read_back(host: Host) -> None:
    web = host.domain("web")
    p = web.pin_vcpu(2, hard="8-15")
    assert isinstance(p, Pinning) and str(p.hard) == "8-15" and p.soft is None
    assert not p.narrowed
    p = web.pin_vcpu(2, soft=[9, 10])
    assert p.hard is None and str(p.soft) == "9-10"
    p = web.pin_vcpu(3, hard=CpuMap.parse("0-3", 64), soft="2-3")
    assert (str(p.hard), str(p.soft)) == ("0-3", "2-3")
    assert affinity(web)[2:] == [("8-15", "9-10"), ("0-3", "2-3")]


def test_pin_narrowed_by_pool_and_hard(host: Host) -> None:
    batch = host.domain("batch")  # cpupool 1 = CPUs 48-63
    with pytest.warns(AffinityNarrowed, match=r"hard 40-55 -> 48-55"):
        p = batch.pin_vcpu(0, hard="40-55")
    assert p.narrowed and str(p.requested_hard) == "40-55" and str(p.hard) == "48-55"
    web = host.domain("web")
    with pytest.warns(AffinityNarrowed, match=r"soft 0-7 -> 2-3"):
        p = web.pin_vcpu(0, hard="2-3", soft="0-7")
    assert str(p.soft) == "2-3"
    # Disjoint soft: Xen accepts it; the effective soft map is empty, the configured one stays.
    with pytest.warns(AffinityNarrowed, match=r"soft 8-9 -> \(empty\)"):
        p = web.pin_vcpu(0, hard="2-3", soft="8-9")
    assert p.soft is not None and len(p.soft) == 0
    assert affinity(web)[0] == ("2-3", "8-9")


def test_pin_all(host: Host) -> None:
    web = host.domain("web")
    pins = web.pin_all(hard="nodes:0", soft="0-3")
    assert [p.vcpu for p in pins] == [0, 1, 2, 3]
    node0 = str(CpuMap.from_cpus(host.topology.node_cpus(0), 64))
    assert {a for a in affinity(web)} == {(node0, "0-3")}


class _WithoutFastPath:
    """A native backend seen without its `_pin_all_records`: the generic pin_all path."""

    def __init__(self, hv: object) -> None:
        self._hv = hv

    def __getattr__(self, name: str) -> object:
        if name == "_pin_all_records":
            raise AttributeError(name)
        return getattr(self._hv, name)


@pytest.mark.parametrize("path", ["native records", "generic"])
def test_pin_all_records_and_narrowing(
    host: Host, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if path == "generic":
        monkeypatch.setattr(host, "_backend", _WithoutFastPath(host._backend))
    web = host.domain("web")  # cpupool 0: CPUs 0-47
    asked = CpuMap.parse("0-7", 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing narrowed: no warning
        pins = web.pin_all(hard=asked, soft="2-3")
    assert [type(p) for p in pins] == [Pinning] * 4
    assert [(p.domain, p.vcpu) for p in pins] == [(1, v) for v in range(4)]
    for p in pins:
        assert p.requested_hard is asked and p.hard == asked and not p.narrowed
        assert str(p.requested_soft) == "2-3" and str(p.soft) == "2-3"
    if path == "native records":
        # a map applied unchanged comes back as the object asked for
        assert all(p.hard is asked for p in pins)
    with pytest.warns(AffinityNarrowed, match=r"hard 40-55 -> 40-47 \(and 3 more vCPU\(s\)\)"):
        pins = web.pin_all(hard="40-55")
    assert [str(p.hard) for p in pins] == ["40-47"] * 4
    assert all(p.narrowed and p.soft is None and p.requested_soft is None for p in pins)
    # a vCPU Xen refuses fails alone, on either path
    sim(host).set_pin_override(1, 2, True)
    with pytest.raises(AffinityBusy, match=r"vCPU 2 .*3 other vCPU\(s\) were pinned"):
        web.pin_all(hard="0-3")
    assert [a[0] for a in affinity(web)] == ["0-3", "0-3", "40-55", "0-3"]


def test_records_share_one_object_per_distinct_map(host: Host) -> None:
    vcpus = [v for s in host.snapshot() for v in s.vcpus]
    objects: dict[CpuMap, set[int]] = {}
    for v in vcpus:  # the records keep their maps alive, so ids are not reused
        for m in (v.hard_affinity, v.soft_affinity):
            objects.setdefault(m, set()).add(id(m))
        assert v.hard_affinity is v.hard_affinity
    # a handful of distinct maps (all CPUs, web's pins, db's 16-31, ...): one object each
    assert 3 <= len(objects) <= 8
    assert all(len(ids) == 1 for ids in objects.values()), objects
    db = host.domain("db").vcpus()
    assert len({id(v.hard_affinity) for v in db}) == 1 and str(db[0].hard_affinity) == "16-31"
    one = CpuMap.parse("1", 64)
    made = VcpuInfo(
        3,
        0,
        online=True,
        blocked=False,
        running=True,
        cpu_time_ns=1,
        cpu=1,
        hard_affinity=one,
        soft_affinity=one,
    )
    assert made.hard_affinity is one and made.soft_affinity is one


def test_pin_all_reports_each_failing_vcpu(host: Host) -> None:
    sim(host).set_pin_override(1, 2, True)
    with pytest.raises(AffinityBusy, match=r"vCPU 2 .*3 other vCPU\(s\) were pinned") as info:
        host.domain("web").pin_all(hard="4-5")
    assert info.value.vcpu == 2 and info.value.domain == 1
    assert [a[0] for a in affinity(host.domain("web"))] == ["4-5", "4-5", "0-63", "4-5"]


def test_busy_then_force(host: Host) -> None:
    web = host.domain("web")
    sim(host).set_pin_override(1, 1, True)
    before = state_of(host)
    with pytest.raises(AffinityBusy, match="force") as info:
        web.pin_vcpu(1, hard="5")
    assert (info.value.errno, info.value.domain, info.value.vcpu) == (errno.EBUSY, 1, 1)
    assert state_of(host) == before
    # XEN_VCPUAFFINITY_FORCE arrived in Xen 4.7 (xen-interfaces.md §3.6)
    if host.xen_version == "4.6":
        with pytest.raises(NotSupported, match=r"4\.7"):
            web.pin_vcpu(1, hard="5", force=True)
        return
    assert str(web.pin_vcpu(1, hard="5", force=True).hard) == "5"


# ---- bad input: typed error, nothing changed --------------------------------------------------

BAD_PINS: list[tuple[str, dict[str, object], type[Exception], str]] = [
    ("web", {"vcpu": -1, "hard": "0"}, VcpuNotFound, r"no vCPU -1: valid vCPUs are 0-3"),
    ("web", {"vcpu": 4, "hard": "0"}, VcpuNotFound, r"web \(id 1\) has no vCPU 4: .*0-3"),
    ("web", {"vcpu": 0, "hard": ""}, InvalidAffinity, r"hard affinity is empty.*0-63"),
    ("web", {"vcpu": 0, "hard": "all,^all"}, CpuListError, r"column 5"),
    ("web", {"vcpu": 0, "hard": "^3"}, InvalidAffinity, r"empty"),
    ("web", {"vcpu": 0, "hard": "0-99"}, CpuListError, r"valid CPUs are 0-63"),
    ("web", {"vcpu": 0, "hard": [70]}, CpuListError, r"CPU 70 is out of range"),
    ("web", {"vcpu": 0}, InvalidAffinity, r"give a hard or a soft"),
    ("web", {"vcpu": 0, "hard": CpuMap.from_cpus([100], 128)}, InvalidAffinity, r"wider"),
    ("batch", {"vcpu": 0, "hard": "0-3"}, InvalidAffinity, r"48-63"),
]


@pytest.mark.parametrize(("dom", "kwargs", "exc", "match"), BAD_PINS)
def test_bad_pin_changes_nothing(
    host: Host, dom: str, kwargs: dict[str, object], exc: type[Exception], match: str
) -> None:
    before = state_of(host)
    with pytest.raises(exc, match=match):
        host.domain(dom).pin_vcpu(**kwargs)  # type: ignore[arg-type]
    assert state_of(host) == before


def test_bad_pin_all_changes_nothing(host: Host) -> None:
    before = state_of(host)
    with pytest.raises(InvalidAffinity, match="48-63"):
        host.domain("batch").pin_all(hard="0-3")
    with pytest.raises(CpuListError):
        host.domain("web").pin_all(hard="0-3", soft="x")
    assert state_of(host) == before


@pytest.mark.parametrize("ref", ["nosuch", 42, "42", -1, 0x7FF0])
def test_unknown_domain(host: Host, ref: int | str) -> None:
    with pytest.raises(DomainNotFound, match=r"known domains: Domain-0 \(0\), web \(1\)"):
        host.domain(ref)


def test_domain_vanishing_between_calls(host: Host) -> None:
    web = host.domain("web")
    sim(host).remove_domain_at(1, 1)
    with pytest.raises(DomainNotFound):
        web.vcpus()
    assert [d.name for d in host.domains()] == ["Domain-0", "db", "batch"]


def test_domain_vanishing_mid_snapshot_is_reported_per_domain(host: Host) -> None:
    sim(host).remove_domain_at(4, 2)
    snap = host.snapshot()
    errors = {s.domain.name: s.error for s in snap if s.error is not None}
    assert set(errors) <= {"db"}
    for s in snap:
        if s.domain.name != "db":
            assert s.error is None and len(s.vcpus) == s.domain.max_vcpus


def test_dying_domain(host: Host) -> None:
    sim(host).set_dying(1, True)
    before = state_of(host)
    with pytest.raises(DomainDying):
        host.domain("web").pin_vcpu(0, hard="1")
    with pytest.raises(DomainDying, match="dying"):
        host.domain("web").set_vcpus(2)
    assert state_of(host) == before


@pytest.mark.parametrize("err", [errno.EFAULT, errno.ENOMEM, errno.EIO])
def test_unexpected_errno_is_typed(host: Host, err: int) -> None:
    web = host.domain("web")
    sim(host).fail_nth(1, err)
    with pytest.raises(XenvcpuError) as info:
        web.vcpus()
    assert info.value.errno == err and info.value.domain == 1


def test_permission_errno_is_permission_denied(host: Host) -> None:
    sim(host).fail_nth(1, errno.EPERM)
    with pytest.raises(xenvcpu.errors.PermissionDenied, match="root"):
        host.domain("web").vcpus()


@pytest.mark.parametrize("version", ["4.99", "5.0", "4.4"])
def test_unknown_xen_version(version: str) -> None:
    with pytest.raises(InterfaceMismatch, match=version.replace(".", r"\.")):
        xenvcpu.connect(f"sim:///default?version={version}")


def test_connect_without_uri_names_the_simulator() -> None:
    if any(os.path.exists(p) for p in ("/dev/xen/privcmd", "/proc/xen/privcmd")):
        pytest.skip("this machine is a Xen host: connect() would open it")
    with pytest.raises(NoHypervisor, match=r"sim:///default"):
        xenvcpu.connect()


def test_bad_uri() -> None:
    with pytest.raises(NotSupported, match="unknown hypervisor URI"):
        xenvcpu.connect("qemu:///system")


# ---- batching --------------------------------------------------------------------------------


def test_batched_and_single_calls_agree() -> None:
    batched = xenvcpu.connect("sim:///default")
    single = xenvcpu.connect("sim:///default")
    sim(single).refuse_multicall(errno.ENOSYS)
    for h in (batched, single):
        sim(h).freeze_clock(True)

    def view(h: Host) -> list[tuple[object, ...]]:
        # Two hosts started moments apart: everything but the running CPU time must agree.
        return [
            (s.domain.id, v.number, v.state, v.cpu, str(v.hard_affinity), str(v.soft_affinity))
            for s in h.snapshot()
            for v in s.vcpus
        ]

    assert view(batched) == view(single) and len(view(batched)) == 32
    assert batched._hv.multicall and not single._hv.multicall
    n0 = sim(batched).hypercalls()
    batched.domain("batch").vcpus()
    n_batched = sim(batched).hypercalls() - n0
    n0 = sim(single).hypercalls()
    single.domain("batch").vcpus()
    n_single = sim(single).hypercalls() - n0
    # 16 vCPUs x (getvcpuinfo + getvcpuaffinity) in few traps instead of 32+.
    assert n_single >= 32 and n_batched * 4 <= n_single


def test_pin_all_is_one_hypercall_batched() -> None:
    """Domain.pin_all reads the domain again inside the pins' own multicall (its first
    entry) instead of a getdomaininfo hypercall before it: one trap in all."""
    h = xenvcpu.connect("sim:///default")
    batch = h.domain("batch")
    cpus = CpuMap.parse("48-51", h.max_cpus)  # a map: a cpulist string reads the topology
    n0, ops0 = sim(h).hypercalls(), sim(h).ops()
    pins = batch.pin_all(hard=cpus)
    assert sim(h).hypercalls() - n0 == 1
    assert sim(h).ops() - ops0 == batch.max_vcpus + 1  # the pins and the getdomaininfo
    assert [p.vcpu for p in pins] == list(range(batch.max_vcpus))
    assert {str(p.hard) for p in pins} == {"48-51"}


def test_pin_all_of_a_domain_gone_or_dying(host: Host) -> None:
    web = host.domain("web")
    sim(host).set_dying(1, True)
    with pytest.raises(DomainDying, match="being destroyed"):
        web.pin_all(hard="1")
    sim(host).set_dying(1, False)
    sim(host).remove_domain_at(1, 1)
    with pytest.raises(DomainNotFound, match="no domain with id 1"):
        web.pin_all(hard="1")


def test_pin_all_names_the_cpupool_its_batch_found(host: Host) -> None:
    """Moved to another cpupool after the Domain object was made: the EINVAL message
    names the pool the batch's own getdomaininfo found, with that pool's CPUs."""
    web = host.domain("web")
    assert web.cpupool == 0
    sim(host).cpupool_migrate("web", 1)
    with pytest.raises(InvalidAffinity, match="cpupool 1, whose CPUs are 48-63"):
        web.pin_all(hard="0-3")


def test_one_failing_entry_does_not_hide_the_others() -> None:
    h = xenvcpu.connect("sim:///default")
    web = h.domain("web")
    sim(h).set_pin_override(1, 0, True)
    with pytest.raises(AffinityBusy, match=r"vCPU 0 .*3 other"):
        web.pin_all(hard="6")
    assert [a[0] for a in affinity(web)] == ["2", "6", "6", "6"]


# ---- online vCPUs (toolstack path on the simulator) ----------------------------------------


def test_set_vcpus_wait(host: Host) -> None:
    sim(host).freeze_clock(False)
    web = host.domain("web")
    web.set_vcpus(2, wait=True, timeout=5)
    assert [v.online for v in web.vcpus()] == [True, True, False, False]
    web.set_online("0,2-3", wait=True, timeout=5)
    assert [v.number for v in web.vcpus() if v.online] == [0, 2, 3]
    assert web.online_vcpus == 3


def test_set_vcpus_guest_never_follows(host: Host) -> None:
    sim(host).set_follow(None)
    web = host.domain("web")
    with pytest.raises(VcpuTimeout) as info:
        web.set_vcpus(1, wait=True, timeout=0.3)
    assert info.value.pending == (1, 2, 3)
    assert "1-3" in str(info.value) or "1, 2, 3" in str(info.value)


@pytest.mark.parametrize("n", [0, -1, 5])
def test_set_vcpus_out_of_range(host: Host, n: int) -> None:
    before = state_of(host)
    with pytest.raises(VcpuCountError, match=r"1\.\.4"):
        host.domain("web").set_vcpus(n)
    assert state_of(host) == before


def test_set_online_bad_sets(host: Host) -> None:
    with pytest.raises(VcpuCountError):
        host.domain("web").set_online([0, 7])
    with pytest.raises(VcpuCountError):
        host.domain("web").set_online([])


def test_set_vcpus_hvm_not_supported(host: Host) -> None:
    with pytest.raises(NotSupported, match="QMP"):
        host.domain("db").set_vcpus(2)


# ---- the 2006 proposal's functions ---------------------------------------------------------


def test_seed_functions(host: Host) -> None:
    web = host.domain("web")
    info = xenvcpu.get_vcpus(web, 2)
    assert [v.number for v in info] == [0, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AffinityNarrowed)
        xenvcpu.pin_vcpu(web, 1, b"\x0f\x00\x00\x00\x00\x00\x00\x00", 8)
    assert str(web.vcpu(1).hard_affinity) == "0-3"
    with pytest.raises(InvalidAffinity, match="wider"):
        xenvcpu.pin_vcpu(web, 1, b"\x00" * 16 + b"\x01", 17)
    with pytest.raises(ValueError, match="maplen"):
        xenvcpu.pin_vcpu(web, 1, b"\x01", 2)
    with pytest.raises(VcpuNotFound):
        xenvcpu.pin_vcpu(web, 9, b"\x01", 1)
    sim(host).freeze_clock(False)
    xenvcpu.set_vcpus(web, 3)
    with pytest.raises(VcpuCountError):
        xenvcpu.set_vcpus(web, 0)


def test_host_is_a_context_manager() -> None:
    with xenvcpu.connect("sim:///default") as h:
        assert h.domain("web").max_vcpus == 4
    assert h.domain("web").max_vcpus == 4  # a closed toolstack reopens on use


def test_xenstore_toolstack_closes_when_collected(xenstored_path: str) -> None:  # noqa: F811
    import gc

    from xenvcpu.toolstack import XenstoreToolstack

    ts = XenstoreToolstack(xenstored_path)
    ts.client().write("/xenvcpu-close-test", "1")
    del ts
    gc.collect()  # filterwarnings=error: an unclosed socket's ResourceWarning would fail here
