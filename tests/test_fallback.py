"""xenvcpu without its native module, and the xenstore:/// backend.

* In a subprocess where ``xenvcpu._native`` cannot be imported (``sys.modules`` entry set
  to None = "not installed"; or a meta-path finder raising ImportError = "a broken
  build"): importing works with ONE RuntimeWarning naming what is missing and what still
  works; ``sim:`` and ``xen:`` URIs raise typed errors naming the missing module; xend
  URIs (against the protocol double) and ``xenstore:///`` (against the real oxenstored of
  tests/daemon) work and return the pure-Python types; ``xenvcpu doctor`` reports it; the
  CpuMap suite (tests/test_cpumap.py) passes on the pure-Python CpuMap.
* In process: the pure-Python CpuMap/VcpuInfo/DomainInfo against the native ones on the
  same inputs (hypothesis): same results, same error classes and fields.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from daemon.conftest import xenstored_path  # noqa: F401  (the shared fixture)
from daemon.xend_double import XendDouble
from hypothesis import given
from hypothesis import strategies as st

import xenvcpu
from xenvcpu import _impl, _pycpumap, _pytypes
from xenvcpu.daemon.xenstore import Op, XenstoreClient
from xenvcpu.errors import NotSupported, VcpuCountError
from xenvcpu.toolstack import XenstoreToolstack

TESTS = Path(__file__).resolve().parent

# ----------------------------------------------------------------------- the subprocess

BLOCKERS = {
    # the extension is not installed (no wheel for this platform, a source tree)
    "missing": "sys.modules['xenvcpu._native'] = None\n",
    # the extension is there but cannot load (wrong libc, undefined symbol, ...)
    "broken": textwrap.dedent(
        """
        class _Broken:
            def find_spec(self, name, path=None, target=None):
                if name == "xenvcpu._native":
                    raise ImportError("_native.abi3.so: undefined symbol: PyFake_Init")
                return None
        sys.meta_path.insert(0, _Broken())
        """
    ),
}

PRELUDE = """
import json, sys, warnings
{blocker}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import xenvcpu
    import xenvcpu.cli, xenvcpu.backends.native, xenvcpu.backends.xend, xenvcpu.backends.xenstore
    from xenvcpu import _impl
WARNINGS = [(w.category.__name__, str(w.message)) for w in caught]
def out(**kw):
    print("RESULT " + json.dumps(kw))
def error_of(fn, *args):
    try:
        fn(*args)
    except Exception as e:
        return [type(e).__name__, str(e)]
    return None
"""


def run_without_native(
    script: str, blocker: str = "missing", args: list[str] | None = None
) -> dict[str, Any]:
    """Run ``script`` in a fresh Python where xenvcpu._native cannot be imported."""
    code = PRELUDE.format(blocker=BLOCKERS[blocker]) + textwrap.dedent(script)
    proc = subprocess.run(
        [sys.executable, "-c", code, *(args or [])],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=TESTS.parent,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    results = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and results, (
        f"rc {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    result: dict[str, Any] = json.loads(results[-1][len("RESULT ") :])
    return result


@pytest.mark.parametrize("blocker", list(BLOCKERS))
def test_import_warns_once_and_says_what_works(blocker: str) -> None:
    r = run_without_native(
        """
        import xenvcpu.host, xenvcpu.types, xenvcpu.compat, xenvcpu.toolstack
        out(warnings=WARNINGS, have=_impl.HAVE_NATIVE, error=_impl.NATIVE_ERROR,
            classes=[c.__module__ + "." + c.__name__
                     for c in (xenvcpu.CpuMap, xenvcpu.VcpuInfo, xenvcpu.DomainInfo)],
            width=xenvcpu.MAX_WIDTH, cpumap=str(xenvcpu.CpuMap.parse("0-3,^1", 8)))
        """,
        blocker,
    )
    assert len(r["warnings"]) == 1
    category, message = r["warnings"][0]
    assert category == "RuntimeWarning"
    for needle in ("xenvcpu._native", "xen:///system", "sim:///", "xend+unix://", "xenstore:///"):
        assert needle in message
    assert r["have"] is False
    if blocker == "broken":
        assert "undefined symbol" in r["error"] and "undefined symbol" in message
    else:
        assert r["error"].startswith("ModuleNotFoundError")
    assert r["classes"] == [
        "xenvcpu._pycpumap.CpuMap",
        "xenvcpu._pytypes.VcpuInfo",
        "xenvcpu._pytypes.DomainInfo",
    ]
    assert r["width"] == 1 << 22 and r["cpumap"] == "0,2-3"


def test_no_warning_with_the_native_module() -> None:
    """pyproject's filterwarnings=error would already fail the suite; say it explicitly."""
    assert _impl.HAVE_NATIVE and _impl.NATIVE_ERROR is None
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", "import xenvcpu, xenvcpu.cli"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stderr == ""


def test_native_uris_raise_typed_errors_naming_the_module() -> None:
    r = run_without_native(
        """
        out(sim=error_of(xenvcpu.connect, "sim:///default"),
            xen=error_of(xenvcpu.connect, "xen:///system"),
            other=error_of(xenvcpu.connect, "qemu:///system"))
        """
    )
    assert r["sim"][0] == "NotSupported" and "xenvcpu._native cannot be loaded" in r["sim"][1]
    assert r["xen"][0] == "NoHypervisor" and "native module" in r["xen"][1]
    assert "xenstore:///" in r["xen"][1]
    assert r["other"][0] == "NotSupported" and "unknown hypervisor URI" in r["other"][1]


def test_xend_uri_works_without_native(tmp_path: Path) -> None:
    double = XendDouble(nr_cpus=8)
    double.serve_unix(str(tmp_path / "xend-socket"))
    try:
        r = run_without_native(
            f"""
            h = xenvcpu.connect("xend+unix://{tmp_path}/xend-socket")
            g = h.domain("guest1")
            v = g.vcpus()
            p = g.pin_vcpu(1, hard="2-3")
            g.set_vcpus(3, wait=True, timeout=5)
            snap = h.snapshot()
            out(host=repr(h), names=[d.name for d in h.domains()],
                types=sorted({{type(x).__module__ + "." + type(x).__name__
                              for x in (v[0], g.info(), v[0].hard_affinity, p.hard, h.cpus)}}),
                first=repr(v[0]), pinned=str(p.hard), online=g.online_vcpus,
                snap=[len(snap), snap.vcpu_count], states=[x.state.name for x in g.vcpus()],
                soft=error_of(g.pin_vcpu, 0, None, "1"))
            """
        )
    finally:
        double.shutdown()
    assert r["host"].startswith("<Host xend+unix://") and "Xen 4.4 via xend" in r["host"]
    assert r["names"] == ["Domain-0", "guest1"]
    assert r["types"] == [
        "xenvcpu._pycpumap.CpuMap",
        "xenvcpu._pytypes.DomainInfo",
        "xenvcpu._pytypes.VcpuInfo",
    ]
    assert r["first"] == (
        "VcpuInfo(domain=7, number=0, state=RUNNING, cpu=0, cpu_time_ns=12345678901, "
        "hard_affinity='0-7', soft_affinity='0-7')"
    )
    assert r["pinned"] == "2-3" and r["online"] == 3 and r["snap"] == [2, 6]
    assert r["states"] == ["RUNNING", "BLOCKED", "RUNNING", "OFFLINE"]
    assert r["soft"][0] == "NotSupported" and "no soft affinity" in r["soft"][1]
    assert double.domains["guest1"].cpumaps[1] == [2, 3]
    assert double.domains["guest1"].online == 3


# ------------------------------------------------------------------ xenstore:/// backend


def make_domain(
    xs: XenstoreClient, domid: int, max_vcpus: int, online: int, hvm: bool = False
) -> None:
    """What libxl writes at build time (xen-interfaces.md §5.4)."""
    xs.write(f"/local/domain/{domid}/name", f"fallback{domid}")
    xs.write(f"/local/domain/{domid}/vm", f"/vm/5158e7c0-0000-4000-8000-{domid:012d}")
    for n in range(max_vcpus):
        xs.write(f"/local/domain/{domid}/cpu/{n}/availability", "online" if n < online else "off")
    if hvm:
        xs.write(f"/libxl/{domid}/type", "hvm")


@pytest.fixture
def xs_domains(xenstored_path: str) -> Iterator[tuple[XenstoreClient, int, int]]:  # noqa: F811
    """Two fresh domains in the shared oxenstored: a PV one (4 vCPUs) and an HVM one."""
    with XenstoreClient(xenstored_path, timeout=5) as xs:
        pv, hvm = 900 + os.getpid() % 500 * 2, 901 + os.getpid() % 500 * 2
        for d in (pv, hvm):
            if xs.exists(f"/local/domain/{d}"):
                xs.rm(f"/local/domain/{d}")
        make_domain(xs, pv, max_vcpus=4, online=1)
        make_domain(xs, hvm, max_vcpus=2, online=2, hvm=True)
        try:
            yield xs, pv, hvm
        finally:
            for d in (pv, hvm):
                xs.rm(f"/local/domain/{d}")
            xs.rm(f"/libxl/{hvm}")


def availability(xs: XenstoreClient, domid: int, n: int) -> list[str]:
    return [xs.read_text(f"/local/domain/{domid}/cpu/{v}/availability") for v in range(n)]


XENSTORE_SCRIPT = """
from xenvcpu.daemon.xenstore import Op, XenstoreClient
log = []
original = XenstoreClient._request
def recording(self, op, payload, tx=0, *, what=""):
    log.append((int(op), tx))
    return original(self, op, payload, tx, what=what)
XenstoreClient._request = recording
h = xenvcpu.connect("xenstore://" + sys.argv[1])
pv, hvm = int(sys.argv[2]), int(sys.argv[3])
doms = {d.id: (d.name, d.max_vcpus, d.online_vcpus, d.uuid) for d in h.domains()}
dom = h.domain("fallback%d" % pv)
del log[:]
dom.set_vcpus(3)
ops = list(log)
errors = dict(
    wait=error_of(dom.set_vcpus, 2, True, 1.0),
    vcpus=error_of(dom.vcpus),
    pin=error_of(dom.pin_vcpu, 0, "1"),
    snapshot=error_of(h.snapshot),
    hvm=error_of(h.domain(hvm).set_vcpus, 1),
    count=error_of(dom.set_vcpus, 5),
)
after_errors = dom.online_vcpus
dom.set_online("0,3")
out(backend=h.backend, version=h.xen_version,
    doms={str(k): v for k, v in doms.items() if k in (pv, hvm)},
    ops=ops, start=int(Op.TRANSACTION_START), end=int(Op.TRANSACTION_END),
    write=int(Op.WRITE), errors=errors, after_errors=after_errors,
    types=sorted({type(x).__module__ for x in (dom.info(),)}))
"""


def check_xenstore_result(r: dict[str, Any], xs: XenstoreClient, pv: int, hvm: int) -> None:
    assert r["backend"] == "xenstore" and r["version"] == "unknown"
    uuid = f"5158e7c0-0000-4000-8000-{pv:012d}"
    assert r["doms"] == {
        str(pv): [f"fallback{pv}", 4, 1, uuid],
        str(hvm): [f"fallback{hvm}", 2, 2, f"5158e7c0-0000-4000-8000-{hvm:012d}"],
    }
    # set_vcpus(3): the availability of every vCPU 0..3 written inside ONE transaction
    # (the reads of Domain.info() before it are transactions of their own)
    ops = [tuple(x) for x in r["ops"]]
    writes = [tx for op, tx in ops if op == r["write"]]
    assert len(writes) == 4 and len(set(writes)) == 1 and writes[0] != 0
    assert [op for op, _ in ops].count(r["start"]) == [op for op, _ in ops].count(r["end"])
    e = r["errors"]
    assert e["wait"][0] == "NotSupported" and "wait=True" in e["wait"][1]
    assert "nothing was changed" in e["wait"][1]
    for key in ("vcpus", "pin", "snapshot"):
        assert e[key][0] == "NotSupported" and "privcmd" in e[key][1], key
    # an HVM guest takes the QMP path, and this host has no QEMU for it
    assert e["hvm"][0] == "QmpError" and "no QMP socket" in e["hvm"][1]
    assert e["count"][0] == "VcpuCountError" and "1..4" in e["count"][1]
    assert r["after_errors"] == 3  # the failed calls changed nothing
    assert availability(xs, pv, 4) == ["online", "offline", "offline", "online"]


def test_xenstore_backend_without_native(
    xs_domains: tuple[XenstoreClient, int, int],
    xenstored_path: str,  # noqa: F811
) -> None:
    xs, pv, hvm = xs_domains
    r = run_without_native(XENSTORE_SCRIPT, args=[xenstored_path, str(pv), str(hvm)])
    check_xenstore_result(r, xs, pv, hvm)
    assert r["types"] == ["xenvcpu._pytypes"]


def test_xenstore_backend_with_native(
    xs_domains: tuple[XenstoreClient, int, int],
    xenstored_path: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same path in process, where the native module is present (privcmd is not)."""
    xs, pv, _ = xs_domains
    log: list[tuple[int, int]] = []
    original = XenstoreClient._request

    def recording(
        self: XenstoreClient, op: Op, payload: bytes, tx: int = 0, *, what: str = ""
    ) -> bytes:
        log.append((int(op), tx))
        return original(self, op, payload, tx, what=what)

    monkeypatch.setattr(XenstoreClient, "_request", recording)
    h = xenvcpu.connect(f"xenstore://{xenstored_path}")
    dom = h.domain(pv)
    assert type(dom.info()) is _impl.DomainInfo and dom.name == f"fallback{pv}"
    assert repr(h).startswith("<Host xenstore://") and "Xen unknown via xenstore" in repr(h)
    log.clear()
    dom.set_vcpus(2)
    writes = [tx for op, tx in log if op == int(Op.WRITE)]
    assert len(writes) == 4 and len(set(writes)) == 1 and writes[0] != 0
    assert availability(xs, pv, 4) == ["online", "online", "offline", "offline"]
    with pytest.raises(NotSupported, match=r"wait=True .*nothing was changed"):
        dom.set_online("0-3", wait=True)
    with pytest.raises(NotSupported, match="privcmd"):
        h.cpus  # noqa: B018
    with pytest.raises(VcpuCountError):
        dom.set_online([0, 4])
    assert isinstance(h.toolstack, XenstoreToolstack)
    h.toolstack.close()  # the Host's own connection; the next call reopens it
    assert dom.online_vcpus == 2 and h.toolstack.availability(pv) == {
        0: True,
        1: True,
        2: False,
        3: False,
    }
    h.toolstack.close()


def test_privcmd_errors_point_to_the_xenstore_path() -> None:
    from xenvcpu.errors import NoHypervisor, PermissionDenied

    if any(os.path.exists(p) for p in ("/dev/xen/privcmd", "/proc/xen/privcmd")):
        pytest.skip("this machine has privcmd")
    with pytest.raises((NoHypervisor, PermissionDenied), match=r"privcmd.*xenstore:///") as info:
        xenvcpu.connect("xen:///system")
    assert info.value.errno is not None


def test_xenstore_uri_without_daemon(tmp_path: Path) -> None:
    from xenvcpu.errors import XenstoreError

    with pytest.raises(XenstoreError):
        xenvcpu.connect(f"xenstore://{tmp_path}/no-socket")
    with pytest.raises(ValueError, match="no host"):
        xenvcpu.connect("xenstore://somehost/x")


# ---------------------------------------------------------------- doctor, CpuMap suite


def test_doctor_reports_the_missing_module() -> None:
    r = run_without_native(
        """
        import contextlib, io
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
            rc = xenvcpu.cli.main(["doctor", "--json"])
        out(rc=rc, doc=json.loads(buf.getvalue()))
        """
    )
    checks = {c["name"]: c for c in r["doc"]["checks"]}
    native = checks["native module"]
    assert native["ok"] is False and "xenvcpu._native" in native["detail"]
    ops = {o["operation"]: o for o in r["doc"]["operations"]}
    why_not = " ".join(a["why"] for a in ops["vCPU info"]["not_used"])
    assert "native module unavailable" in why_not


def test_cpumap_suite_passes_on_the_pure_python_cpumap() -> None:
    r = run_without_native(
        """
        import pytest
        assert xenvcpu.CpuMap is _impl.CpuMap and _impl.CpuMap.__module__ == "xenvcpu._pycpumap"
        rc = pytest.main(["-q", "-p", "no:cacheprovider", "-x", "tests/test_cpumap.py"])
        out(rc=int(rc))
        """
    )
    assert r["rc"] == 0


# ------------------------------------------------- pure Python against native, in process

native: Any = importlib.import_module("xenvcpu._native") if _impl.HAVE_NATIVE else None
N: Any = native.CpuMap if native is not None else None
P = _pycpumap.CpuMap
pytestmark_native = pytest.mark.skipif(native is None, reason="compares with xenvcpu._native")


ERROR_FIELDS = (
    "kind text token column reason width cpu maplen needed other_width errno domain vcpu"
).split()


def error_view(e: Exception) -> tuple[object, ...]:
    """An error as the parity tests compare it: its class and its fields, not its text
    (each implementation words and quotes its messages its own way)."""
    return (type(e).__name__, *(getattr(e, f, None) for f in ERROR_FIELDS))


def same(fn: Callable[[Any], Any]) -> None:
    """``fn(CpuMap)`` gives the same value, or the same error, for both implementations."""
    results: list[tuple[object, ...]] = []
    for cls in (N, P):
        try:
            value = fn(cls)
            results.append(("ok", view(value) if isinstance(value, (N, P)) else value))
        except Exception as e:
            results.append(error_view(e))
    assert results[0] == results[1]


def view(m: Any) -> tuple[object, ...]:
    return (m.width, m.to_cpulist(), m.to_bytes(), len(m), bool(m), repr(m), m.is_full())


WIDTHS = st.sampled_from([1, 7, 8, 9, 63, 64, 65, 256, 4096])
TERM = st.one_of(
    st.integers(0, 70).map(str),
    st.tuples(st.integers(0, 70), st.integers(0, 70)).map(lambda t: f"{t[0]}-{t[1]}"),
    st.sampled_from(["all", "r", "node:0", "nodes:0-1", "node:7", "", " ", "-", "3-", "a"]),
    st.sampled_from(["socket:0", "sockets:0-1", "socket:9", "siblings:3", "siblings:99"]),
    st.sampled_from(["pool:p0", "pool:big", "pool:nope", "pool:", "siblings:", "socket:x"]),
).flatmap(lambda t: st.sampled_from([t, "^" + t, " " + t + " "]))


class TopologyFacts:
    """Every fact topology terms read, for a map of ``width`` CPUs."""

    def __init__(self, width: int) -> None:
        self.cpu_to_node = [cpu * 2 // width for cpu in range(width)]
        self.cpu_to_socket = [cpu * 2 // width for cpu in range(width)]
        self.cpu_to_core = [(cpu // 2) if cpu % 7 else None for cpu in range(width)]
        self.pools = {"p0": [c for c in range(width) if c % 3 == 0], "big": range(width + 4)}


@pytestmark_native
@given(WIDTHS, st.lists(st.integers(-2, 4100), max_size=40))
def test_from_cpus_and_views_agree(width: int, cpus: list[int]) -> None:
    same(lambda c: view(c.from_cpus(cpus, width)))
    same(lambda c: c.from_cpus(cpus, width).to_bools() if width <= 256 else None)
    same(lambda c: list(~c.from_cpus(cpus, width)) if width <= 256 else None)
    same(lambda c: view(c.from_cpus(cpus, width).resized(64)))
    same(lambda c: c.from_cpus(cpus, width).to_bytes(2))
    same(lambda c: [x in c.from_cpus(cpus, width) for x in (-1, 0, 5, 64, "x", 2.0, True)])


@pytestmark_native
@given(st.lists(TERM, min_size=1, max_size=6).map(",".join), WIDTHS)
def test_parse_agrees(text: str, width: int) -> None:
    nodes = [cpu * 2 // width for cpu in range(width)]
    same(lambda c: view(c.parse(text, width, topology=nodes)))
    same(lambda c: view(c.parse(text, width)))
    same(lambda c: view(c.parse(text, width, topology=TopologyFacts(width))))


@pytestmark_native
@given(st.text(max_size=20), st.sampled_from([8, 64]))
def test_parse_of_any_text_agrees(text: str, width: int) -> None:
    """Any text: the same map, or the same error with the same token, column and reason."""
    same(lambda c: view(c.parse(text, width, topology={0: 0, 1: 1})))


@given(st.binary(max_size=20), st.one_of(st.none(), st.integers(-1, 200)))
def test_from_bytes_agrees(data: bytes, width: int | None) -> None:
    same(lambda c: view(c.from_bytes(data, width)))


@pytestmark_native
@given(st.lists(st.booleans(), max_size=100), st.integers(1, 100), st.integers(1, 100))
def test_algebra_and_bools_agree(bools: list[bool], w1: int, w2: int) -> None:
    same(lambda c: view(c.from_bools(bools)))

    def algebra(c: Any) -> object:
        a = c.from_bools(bools) if bools else c.full(w1)
        b = c.full(w2)
        return [view(f(a, b)) for f in (c.__and__, c.__or__, c.__sub__, c.__xor__)]

    same(algebra)


@pytestmark_native
@pytest.mark.parametrize(
    "call",
    [
        lambda c: c(0),
        lambda c: c(1 << 40),
        lambda c: c(-3),
        lambda c: c.full(True),
        lambda c: c("8"),
        lambda c: c.from_cpus([1.0], 8),
        lambda c: c.from_cpus(["1"], 8),
        lambda c: c.from_bytes("00"),
        lambda c: c.from_bytes(memoryview(b"\x03"), 2).to_list(),
        lambda c: c.from_bools([]),
        lambda c: c.full(8).to_bytes(-1),
        lambda c: c.full(8).to_bytes(1 << 40),
        lambda c: c.from_bools(iter([True] * ((1 << 22) + 1))),
        lambda c: c.full(8).issubset(c.full(9)),
        lambda c: c.parse("0-3", 8) == c.parse("0-3", 8),
        lambda c: c.parse("0-3", 8) == "0-3",
        lambda c: hash(c.parse("0-3", 8)) == hash(c.from_cpus(range(4), 8)),
        lambda c: c.parse("node:1", 8, topology=type("T", (), {"cpu_to_node": (1, None)})()),
        lambda c: c.parse("node:1", 4, topology={5: 1, 3: 1}).to_list(),
        lambda c: c.parse('1,"\\\t\n\x00é\u0301', 8),
        lambda c: c.parse("99999999999999999999999", 8),
        lambda c: view(c.parse("0-3", 8).__reduce__()[0](*c.parse("0-3", 8).__reduce__()[1])),
    ],
)
def test_edge_cases_agree(call: Callable[[Any], Any]) -> None:
    same(call)


def test_pickle_of_pure_cpumap() -> None:
    import copy
    import pickle

    m = P.parse("1,5-300", 4096)
    for clone in (pickle.loads(pickle.dumps(m)), copy.copy(m), copy.deepcopy(m)):
        assert clone == m and type(clone) is P and hash(clone) == hash(m)
    with pytest.raises(AttributeError):
        m.width = 3  # type: ignore[misc]


VCPU_ARGS: dict[str, Any] = dict(online=True, blocked=False, running=True, cpu_time_ns=12, cpu=3)


@pytestmark_native
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"online": False},
        {"running": False, "blocked": True},
        {"running": False},
        {"cpu": None},
    ],
)
def test_vcpuinfo_agrees(kwargs: dict[str, Any]) -> None:
    def make(mod: Any, cpumap: Any) -> Any:
        args = {**VCPU_ARGS, **kwargs}
        return mod.VcpuInfo(
            7,
            2,
            hard_affinity=cpumap.parse("0-3", 8),
            soft_affinity=cpumap.full(8),
            **args,
        )

    n, p = make(native, N), make(_pytypes, P)
    assert repr(n) == repr(p)
    for attr in ("domain", "number", "state", "online", "blocked", "running", "cpu_time_ns", "cpu"):
        assert getattr(n, attr) == getattr(p, attr), attr
    assert str(n.hard_affinity) == str(p.hard_affinity) and p.soft_affinity.is_full()


@pytestmark_native
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"dying": True, "hvm": True, "paused": True},
        {"shutdown_code": 3, "running": True, "blocked": True, "cpupool": 2},
        {"cpu_time_ns": 10**15, "tot_pages": 5, "max_pages": 9},
    ],
)
@pytest.mark.parametrize(
    "uuid", ["5158e7c0-0000-4000-8000-000000000001", "5158E7C000004000800000000000000A"]
)
def test_domaininfo_agrees(kwargs: dict[str, Any], uuid: str) -> None:
    n = native.DomainInfo(3, uuid, 8, 6, **kwargs)
    p = _pytypes.DomainInfo(3, uuid, 8, 6, **kwargs)
    assert repr(n) == repr(p)
    for attr in (
        "id uuid flags dying hvm shutdown shutdown_code paused running blocked max_vcpus "
        "online_vcpus cpu_time_ns cpupool tot_pages max_pages"
    ).split():
        assert getattr(n, attr) == getattr(p, attr), attr


@pytestmark_native
@pytest.mark.parametrize("uuid", ["nope", "5158e7c0", "g" * 32, "é" * 16])
def test_domaininfo_bad_uuid_agrees(uuid: str) -> None:
    for mod in (native, _pytypes):
        with pytest.raises(ValueError, match="expected 32 hex digits"):
            mod.DomainInfo(1, uuid, 1, 1)
