"""The public API over xend (Xen <= 4.4 hosts): ``connect("xend+unix://...")`` and
``connect("xend+http://...")`` against the xend protocol double (tests/daemon/
xend_double.py) on a real unix socket and on TCP.

The double is configured like ``sim:///default`` (64 CPUs; Domain-0, web, db (HVM),
batch with the same vCPU counts and uuids), so the same expectations as tests/test_api.py
apply where xend can meet them; where it cannot (soft affinity, force, choosing which
vCPUs are online) the tests check the typed NotSupported error and that nothing changed.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon.xend_double import DomainState, Value, XendDouble

import xenvcpu
from xenvcpu import CpuMap, Domain, Host, Pinning, VcpuInfo, VcpuState
from xenvcpu._impl import HAVE_NATIVE
from xenvcpu.errors import (
    AffinityNarrowed,
    CpuListError,
    DaemonError,
    DomainNotFound,
    InvalidAffinity,
    NotSupported,
    VcpuCountError,
    VcpuNotFound,
    XendError,
)

SIM_UUID = "5158e7c0-0000-4000-8000-00000000000{}"


class HvmDomain(DomainState):
    """A domain whose record has an ``(image (hvm ...))``, as xend writes for HVM guests."""

    def record(self) -> Value:
        rec = super().record()
        assert isinstance(rec, list)
        rec.append(["image", ["hvm", ["kernel", ""], ["device_model", "qemu-dm"]]])
        return rec


def sim_like_double() -> XendDouble:
    double = XendDouble(nr_cpus=64)
    double.domains.clear()
    double.add_domain(DomainState("Domain-0", 0, max_vcpus=4, online=4, nr_cpus=64, uuid="0" * 32))
    for domid, name, cls, maximum, online in [
        (1, "web", DomainState, 4, 4),
        (2, "db", HvmDomain, 8, 6),
        (3, "batch", DomainState, 16, 12),
    ]:
        double.add_domain(
            cls(
                name,
                domid,
                max_vcpus=maximum,
                online=online,
                nr_cpus=64,
                uuid=SIM_UUID.format(domid),
                cpu_time={0: 1.25, 1: 0.5},
            )
        )
    double.add_domain(DomainState("stopped vm", None, max_vcpus=2, online=1, nr_cpus=64))
    return double


@pytest.fixture
def xend(tmp_path: Path) -> Iterator[XendDouble]:
    double = sim_like_double()
    double.serve_unix(str(tmp_path / "xend-socket"))
    try:
        yield double
    finally:
        double.shutdown()


@pytest.fixture(params=["unix", "tcp"])
def host(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Host]:
    double = sim_like_double()
    if request.param == "unix":
        double.serve_unix(str(tmp_path / "xend-socket"))
        uri = f"xend+unix://{tmp_path}/xend-socket"
    else:
        host_, port = double.serve_tcp()
        uri = f"xend+http://{host_}:{port}"
    try:
        h = xenvcpu.connect(uri)
        h.double = double  # type: ignore[attr-defined]
        yield h
    finally:
        double.shutdown()


def double_of(host: Host) -> XendDouble:
    d = host.double  # type: ignore[attr-defined]
    assert isinstance(d, XendDouble)
    return d


def posts(host: Host) -> list[bytes]:
    return [r.body for r in double_of(host).requests if r.method == "POST"]


def affinity(dom: Domain) -> list[tuple[str, str]]:
    return [(str(v.hard_affinity), str(v.soft_affinity)) for v in dom.vcpus()]


def state_of(host: Host) -> list[tuple[int, int, list[tuple[str, str]]]]:
    return [(d.id, d.online_vcpus, affinity(d)) for d in host.domains()]


# ---- contracts ------------------------------------------------------------------------------


def test_host_contract(host: Host) -> None:
    assert host.backend == "xend" and host.xen_version == "4.4"
    assert host.max_cpus == 64 and str(host.cpus) == "0-63" and isinstance(host.cpus, CpuMap)
    info = host.info
    assert (info.nr_cpus, info.max_cpu_id, info.threads_per_core, info.cores_per_socket) == (
        64,
        63,
        2,
        32,
    )
    assert info.nr_nodes == 1 and info.cpu_mhz == 2394
    assert host.topology.nodes == [0] and len(host.topology.cpus) == 64
    assert CpuMap.parse("node:0", 64, topology=host.topology) == CpuMap.full(64)
    pools = host.cpupools
    assert [(p.id, p.name, p.scheduler, str(p.cpus), p.n_domains) for p in pools] == [
        (0, "Pool-0", "credit", "0-63", 4)
    ]
    assert repr(host).startswith("<Host xend+") and "via xend" in repr(host)


def test_domains_match_the_simulated_host(host: Host) -> None:
    sim = xenvcpu.connect("sim:///default") if HAVE_NATIVE else None

    def view(h: Host) -> list[tuple[object, ...]]:
        # xend (Xen <= 4.4) knows PV and HVM guests; the simulator's PVH batch is PV there
        return [
            (d.id, d.name, d.max_vcpus, d.online_vcpus, d.uuid, d.guest_type == "hvm")
            for d in h.domains()
        ]

    assert [v[:4] for v in view(host)] == [
        (0, "Domain-0", 4, 4),
        (1, "web", 4, 4),
        (2, "db", 8, 6),
        (3, "batch", 16, 12),
    ]
    if sim is not None:
        assert view(host) == view(sim)
    # xend predates cpupools (sim's batch is in pool 1): every domain is in Pool-0.
    assert {d.cpupool for d in host.domains()} == {0}


def test_domain_and_vcpu_contract(host: Host) -> None:
    for d in host.domains():
        assert isinstance(d, Domain) and len(d.uuid) == 36
        vcpus = d.vcpus()
        assert [v.number for v in vcpus] == list(range(d.max_vcpus))
        assert d.online_vcpus == sum(v.online for v in vcpus)
        for v in vcpus:
            assert isinstance(v, VcpuInfo) and v.domain == d.id
            assert isinstance(v.state, VcpuState) and isinstance(v.cpu_time_ns, int)
            assert v.hard_affinity.width == 64 and v.soft_affinity.is_full()
            if v.state is VcpuState.OFFLINE:
                assert v.cpu is None and not v.online
            else:
                assert isinstance(v.cpu, int) and v.cpu in v.hard_affinity
    web = host.domain("web")
    assert web.vcpu(0).cpu_time_ns == 1_250_000_000
    assert [v.state for v in web.vcpus()][:2] == [VcpuState.RUNNING, VcpuState.BLOCKED]
    assert [v.state for v in host.domain("db").vcpus()][6:] == [VcpuState.OFFLINE] * 2


def test_results_are_the_hypercall_path_types(host: Host) -> None:
    """Same classes as xen:///system and sim:/// return (native when it loads)."""
    from xenvcpu import _impl

    web = host.domain("web")
    assert type(web.vcpus()[0]) is _impl.VcpuInfo
    assert type(web.info()) is _impl.DomainInfo
    assert type(web.vcpus()[0].hard_affinity) is _impl.CpuMap is xenvcpu.CpuMap
    if HAVE_NATIVE:
        from xenvcpu import _native

        assert type(web.vcpus()[0]) is _native.VcpuInfo and type(host.cpus) is _native.CpuMap


def test_snapshot_matches_per_domain_reads(host: Host) -> None:
    snap = host.snapshot()
    assert [s.domain.name for s in snap] == ["Domain-0", "web", "db", "batch"]
    for s in snap:
        assert s.error is None
        assert [repr(v) for v in s.vcpus] == [repr(v) for v in s.domain.vcpus()]
    assert snap.vcpu_count == 32 == len(snap.column("cpu"))
    assert list(snap.column("domain"))[:5] == [0, 0, 0, 0, 1]
    assert list(snap.column("state")).count(0) == 32 - (4 + 4 + 6 + 12)
    assert snap.maps("hard") == CpuMap.full(64).to_bytes() * 32
    with pytest.raises(ValueError, match="unknown column"):
        snap.column("nope")


def test_snapshot_reports_a_failing_domain_alone(host: Host) -> None:
    double_of(host).canned["/xend/domain/2?op=vcpuinfo"] = (
        500,
        "application/sxp",
        b"(xend.err 'Domain is being destroyed')",
    )
    snap = host.snapshot()
    errors = {s.domain.name: s.error for s in snap if s.error is not None}
    assert list(errors) == ["db"] and isinstance(errors["db"], XendError)
    assert "being destroyed" in str(errors["db"])
    assert all(len(s.vcpus) == s.domain.max_vcpus for s in snap if s.domain.name != "db")


# ---- pinning ----------------------------------------------------------------------------------


def test_pin_hard_read_back(host: Host) -> None:
    web = host.domain("web")
    p = web.pin_vcpu(2, hard="8-15")
    assert isinstance(p, Pinning) and str(p.hard) == "8-15" and p.soft is None
    assert not p.narrowed
    assert affinity(web)[2] == ("8-15", "0-63")
    assert posts(host)[-1] == b"op=pincpu&vcpu=2&cpumap=8%2C9%2C10%2C11%2C12%2C13%2C14%2C15"


def test_effective_map_is_what_xend_reports(host: Host) -> None:
    """The Pinning carries the map read back, so a narrowing by xend is reported."""
    double = double_of(host)
    original = double.op_pincpu

    def narrowing(dom: DomainState, form: dict[str, list[str]]) -> Value | None:
        result = original(dom, form)
        dom.cpumaps[int(form["vcpu"][0])] = [4]
        return result

    double.op_pincpu = narrowing  # type: ignore[method-assign]
    with pytest.warns(AffinityNarrowed, match=r"hard 4-5 -> 4"):
        p = host.domain("web").pin_vcpu(0, hard="4-5")
    assert p.narrowed and str(p.hard) == "4"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"soft": "0-3"}, r"xend has no soft affinity \(Xen <= 4\.4\)"),
        ({"hard": "0-3", "soft": "0-3"}, r"no soft affinity"),
        ({"hard": "5", "force": True}, r"4\.7"),
    ],
)
def test_what_xend_cannot_do_changes_nothing(
    host: Host, kwargs: dict[str, object], match: str
) -> None:
    before = state_of(host)
    with pytest.raises(NotSupported, match=match):
        host.domain("web").pin_vcpu(1, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(NotSupported, match=match):
        host.domain("web").pin_all(**kwargs)  # type: ignore[arg-type]
    assert state_of(host) == before and posts(host) == []


def test_pin_all(host: Host) -> None:
    batch = host.domain("batch")
    pins = batch.pin_all(hard="nodes:0,^0-31")
    assert [p.vcpu for p in pins] == list(range(16))
    assert {a for a in affinity(batch)} == {("32-63", "0-63")}


def test_pin_all_reports_each_failing_vcpu(host: Host) -> None:
    double = double_of(host)
    original = double.op_pincpu

    def refuse_vcpu_2(dom: DomainState, form: dict[str, list[str]]) -> Value | None:
        if form["vcpu"] == ["2"]:
            from daemon.xend_double import OpFailed

            raise OpFailed("Device or resource busy")
        return original(dom, form)

    double.op_pincpu = refuse_vcpu_2  # type: ignore[method-assign]
    with pytest.raises(XendError, match=r"vCPU 2 .*3 other vCPU\(s\) were pinned") as info:
        host.domain("web").pin_all(hard="4-5")
    assert info.value.vcpu == 2 and info.value.domain == 1
    assert [a[0] for a in affinity(host.domain("web"))] == ["4-5", "4-5", "0-63", "4-5"]


BAD_PINS: list[tuple[dict[str, object], type[Exception], str]] = [
    ({"vcpu": -1, "hard": "0"}, VcpuNotFound, r"no vCPU -1: valid vCPUs are 0-3"),
    ({"vcpu": 4, "hard": "0"}, VcpuNotFound, r"web \(id 1\) has no vCPU 4: .*0-3"),
    ({"vcpu": 0, "hard": ""}, InvalidAffinity, r"hard affinity is empty.*0-63"),
    ({"vcpu": 0, "hard": "all,^all"}, CpuListError, r"column 5"),
    ({"vcpu": 0, "hard": "0-99"}, CpuListError, r"valid CPUs are 0-63"),
    ({"vcpu": 0, "hard": [70]}, CpuListError, r"CPU 70 is out of range"),
    ({"vcpu": 0}, InvalidAffinity, r"give a hard or a soft"),
    ({"vcpu": 0, "hard": CpuMap.from_cpus([100], 128)}, InvalidAffinity, r"wider"),
]


@pytest.mark.parametrize(("kwargs", "exc", "match"), BAD_PINS)
def test_bad_pin_changes_nothing(
    host: Host, kwargs: dict[str, object], exc: type[Exception], match: str
) -> None:
    before = state_of(host)
    with pytest.raises(exc, match=match):
        host.domain("web").pin_vcpu(**kwargs)  # type: ignore[arg-type]
    assert state_of(host) == before and posts(host) == []


# ---- domains ----------------------------------------------------------------------------------


@pytest.mark.parametrize("ref", ["nosuch", 42, "42", -1, "stopped vm"])
def test_unknown_domain(host: Host, ref: int | str) -> None:
    with pytest.raises(DomainNotFound, match=r"known domains: Domain-0 \(0\), web \(1\)"):
        host.domain(ref)


def test_domain_vanishing_between_calls(host: Host) -> None:
    web = host.domain("web")
    del double_of(host).domains["web"]
    with pytest.raises(DomainNotFound):
        web.vcpus()
    with pytest.raises(DomainNotFound):
        web.pin_vcpu(0, hard="1")
    assert [d.name for d in host.domains()] == ["Domain-0", "db", "batch"]


def test_unreachable_xend(tmp_path: Path) -> None:
    with pytest.raises(XendError, match=r"cannot talk to xend .*xend-unix-server") as info:
        xenvcpu.connect(f"xend+unix://{tmp_path}/no-such-socket")
    assert isinstance(info.value, DaemonError)


def test_version_and_width_from_node_info(xend: XendDouble, tmp_path: Path) -> None:
    xend.canned["/xend/node/"] = (
        200,
        "application/sxp",
        b"(node (host old) (release 2.6.32) (nr_cpus 6) (nr_nodes 2) (cores_per_socket 3)"
        b" (threads_per_core 1) (cpu_mhz 2000.5) (total_memory 4095) (free_memory 1024)"
        b" (max_cpu_id 7) (xen_major 4) (xen_minor 1) (xen_extra .2)"
        b" (xen_scheduler credit2))",
    )
    h = xenvcpu.connect(f"xend+unix://{tmp_path}/xend-socket")
    assert h._backend.version == (4, 1, 2, 0) and h.xen_version == "4.1"
    assert h.max_cpus == 8 and str(h.cpus) == "0-5"
    assert (h.info.total_memory_mib, h.info.free_memory_mib, h.info.cpu_mhz) == (4095, 1024, 2000)
    assert h.topology.cpus == () and h.cpupools[0].scheduler == "credit2"


def test_hostile_node_info_fields(xend: XendDouble, tmp_path: Path) -> None:
    """Informational fields out of any sensible range read as unknown, at once: no
    int(Decimal('1e999999999')), no CPU map as wide as max_cpu_id says."""
    xend.canned["/xend/node/"] = (
        200,
        "application/sxp",
        b"(node (nr_cpus 6) (max_cpu_id 1e30) (total_memory 1e999999999)"
        b" (free_memory -5) (xen_major 99999999999) (xen_minor 1) (cpu_mhz 2000))",
    )
    start = time.monotonic()
    h = xenvcpu.connect(f"xend+unix://{tmp_path}/xend-socket")
    assert h.max_cpus == 6 and h._backend.version == (4, 4, 0, 0)
    assert (h.info.total_memory_mib, h.info.free_memory_mib) == (0, 0)
    assert time.monotonic() - start < 1


def test_hostile_domain_records(xend: XendDouble, tmp_path: Path) -> None:
    h = xenvcpu.connect(f"xend+unix://{tmp_path}/xend-socket")
    xend.canned["/xend/domain/?detail=1"] = (
        200,
        "application/sxp",
        b"((domain (domid 1) (name a) (vcpus 2) (online_vcpus 9) (memory 1e30)"
        b" (cpu_time 1e300) (state r-----)))",
    )
    [a] = h._backend.domains()  # values beyond what the native types hold read as unknown
    assert (a.max_vcpus, a.online_vcpus, a.tot_pages, a.cpu_time_ns) == (2, 2, 0, 0)
    xend.canned["/xend/domain/?detail=1"] = (
        200,
        "application/sxp",
        b"((domain (domid 99999999999999999999) (name a)))",
    )
    with pytest.raises(XendError, match=r"outside 0\.\.32751"):  # was an OverflowError
        h.domains()


# ---- online vCPUs -----------------------------------------------------------------------------


def test_set_vcpus_wait(host: Host) -> None:
    web = host.domain("web")
    web.set_vcpus(2, wait=True, timeout=5)
    assert [v.online for v in web.vcpus()] == [True, True, False, False]
    assert posts(host) == [b"op=set_vcpus&vcpus=2"]
    assert host.toolstack.availability(1) == {0: True, 1: True, 2: False, 3: False}
    web.set_online("0-2", wait=True, timeout=5)
    assert web.online_vcpus == 3


def test_set_online_only_as_a_count(host: Host) -> None:
    web = host.domain("web")
    with pytest.raises(NotSupported, match=r"xend can only set a count .*0,2-3"):
        web.set_online("0,2-3")
    assert posts(host) == [] and web.online_vcpus == 4


@pytest.mark.parametrize("n", [0, -1, 5])
def test_set_vcpus_out_of_range(host: Host, n: int) -> None:
    with pytest.raises(VcpuCountError, match=r"1\.\.4"):
        host.domain("web").set_vcpus(n)
    assert posts(host) == []


def test_set_vcpus_hvm_not_supported(host: Host) -> None:
    with pytest.raises(NotSupported, match="QMP"):
        host.domain("db").set_vcpus(2)
    assert posts(host) == []


def test_seed_functions(host: Host) -> None:
    web = host.domain("web")
    assert [v.number for v in xenvcpu.get_vcpus(web, 2)] == [0, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        xenvcpu.pin_vcpu(web, 1, b"\x0f\x00\x00\x00\x00\x00\x00\x00", 8)
    assert str(web.vcpu(1).hard_affinity) == "0-3"
    xenvcpu.set_vcpus(web, 3)
    assert web.online_vcpus == 3
    with pytest.raises(VcpuCountError):
        xenvcpu.set_vcpus(web, 0)
