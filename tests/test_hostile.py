"""Hostile input, case by case: each class of failure an adversarial user found, each case
asserting the typed error it must raise and that nothing changed. No case may crash,
abort, hang or leak an untyped exception (tests/daemon covers the protocol clients).

The classes: panics from unchecked arithmetic or slicing; allocations sized by the input;
numbers silently truncated and parameters silently ignored; waits without an end; Python
exceptions leaking past the typed ones; lookups that resolve what they should not.
"""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import xenvcpu
from xenvcpu import CpuMap, Host
from xenvcpu._pycpumap import CpuMap as PyCpuMap
from xenvcpu.errors import CpuListError, DomainNotFound, InvalidUri, VcpuCountError, XenvcpuError

IMPLS = [pytest.param(CpuMap, id="native"), pytest.param(PyCpuMap, id="pure")]


@pytest.fixture
def host() -> Iterator[Host]:
    h = xenvcpu.connect("sim:///default")
    assert h.sim is not None
    h.sim.freeze_clock()
    yield h


def state(h: Host) -> list[tuple[int, int, list[tuple[str, str]]]]:
    """Everything a refused call must leave as it was."""
    return [
        (
            d.id,
            d.online_vcpus,
            [(str(v.hard_affinity), str(v.soft_affinity)) for v in d.vcpus()],
        )
        for d in h.domains()
    ]


# ---- panics: unchecked arithmetic, slicing, non-finite floats ------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "sim:///?sockets=65536&threads=65536",
        "sim:///?cpus=65536&sockets=65536&threads=65536",
        "sim:///?cpus=4294967296&sockets=1",
        "sim:///?cpus=64&nodes=0",
        "sim:///?cpus=64&threads=0",
        "sim:///default?version=4.99999999999999999999",
        "sim:///default?delay_ms=18446744073709551616",
    ],
)
def test_sim_parameters_that_overflowed_are_typed_errors(uri: str) -> None:
    with pytest.raises(XenvcpuError, match="sim host"):
        xenvcpu.connect(uri)


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ('[[domain]]\nuuid = "é0112233-4455-6677-8899-aabbccddeeff"\n', "not hex"),
        ("[host]\nsockets = 65536\nthreads = 65536\n", "is not a host"),
        ("[host]\ncpus = 8\ncores = 2\n", 'unknown key "cores"'),
        ("x = " + "[" * 5000 + "]" * 5000 + "\n", "not valid TOML"),
        ("[[domain]]\npool = 7\n", "no cpupool 7"),
        ("[[domain]]\nid = 1\n[[domain]]\nid = 1\n", "given twice"),
    ],
)
def test_sim_files_that_panicked_are_typed_errors(tmp_path: Path, toml: str, needle: str) -> None:
    f = tmp_path / "host.toml"
    f.write_text(toml)
    with pytest.raises(XenvcpuError, match=needle) as e:
        xenvcpu.connect(f"sim://{f}")
    assert len(str(e.value)) < 1000, "messages show an excerpt, not the input"


def test_non_finite_clock_moves_are_refused(host: Host) -> None:
    assert host.sim is not None
    before = host.domain("web").vcpu(0).cpu_time_ns
    for bad in (math.nan, math.inf, -1.0, 1e300):
        with pytest.raises(ValueError):
            host.sim.advance(bad)
        with pytest.raises(ValueError):
            host.sim.set_follow(bad)
    assert host.domain("web").vcpu(0).cpu_time_ns == before


# ---- allocations sized by the input ---------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_endless_iterators_end_in_errors(impl: type[CpuMap]) -> None:
    with pytest.raises(CpuListError) as e:
        impl.from_bools(itertools.repeat(True))
    assert e.value.kind == "bad_width"
    with pytest.raises(CpuListError) as e:
        impl.from_cpus(itertools.repeat(1), 8)
    assert e.value.kind == "too_many_cpus"
    # a topology is read only as far as the width
    assert impl.parse("node:1", 4, topology=itertools.cycle([0, 1])).to_list() == [1, 3]


@pytest.mark.parametrize("impl", IMPLS)
def test_sizes_named_by_the_caller_are_capped(impl: type[CpuMap]) -> None:
    for maplen in (1 << 40, 10**30):
        with pytest.raises(CpuListError) as e:
            impl.full(8).to_bytes(maplen)
        assert e.value.kind == "maplen_too_long" and e.value.maplen == maplen
    for width in (0, -3, 1 << 40, 10**30):
        with pytest.raises(CpuListError) as e:
            impl(width)
        assert e.value.kind == "bad_width" and e.value.width == width


@pytest.mark.parametrize(
    "uri",
    [
        "sim:///default?offline=0-4294967295",
        "sim:///?cpus=64&domains=32000&vcpus=8192",
        "sim:///?cpus=65536&domains=20000&vcpus=64",
        "sim:///?vcpus=100000",
        "sim:///?domains=40000",
    ],
)
def test_host_sizes_are_capped_before_allocation(uri: str) -> None:
    with pytest.raises(XenvcpuError, match=r"sim host: .*(valid ones|at most|from 0 to|MiB)"):
        xenvcpu.connect(uri)


@pytest.mark.parametrize(
    "toml",
    [
        "[[domain]]\nvcpus = 100000\n",
        '[[domain]]\nonline = "0-4294967295"\n',
        '[[domain]]\nhard = "0-4294967295"\n',
        '[[pool]]\nid = 1\ncpus = "0-4294967295"\n',
        "".join(f"[[domain]]\nid = {i}\nvcpus = 8192\n" for i in range(200)),
    ],
)
def test_host_file_sizes_are_capped(tmp_path: Path, toml: str) -> None:
    f = tmp_path / "host.toml"
    f.write_text(toml)
    with pytest.raises(XenvcpuError, match="sim host"):
        xenvcpu.connect(f"sim://{f}")


def test_host_file_size_is_capped(tmp_path: Path) -> None:
    f = tmp_path / "huge.toml"
    with f.open("w") as out:
        out.write("[host]\n" + "# padding\n" * (500_000))
    with pytest.raises(XenvcpuError, match="larger than"):
        xenvcpu.connect(f"sim://{f}")


def test_online_sets_are_read_boundedly(host: Host) -> None:
    before = state(host)
    with pytest.raises(VcpuCountError, match="more than"):
        host.domain("web").set_online(itertools.repeat(0))
    with pytest.raises(VcpuCountError, match="has no vCPU"):
        host.domain("web").set_online([10**18])
    assert state(host) == before


# ---- silent truncation, ignored parameters ---------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "needle"),
    [
        ("sim:///?cpus=4294967360", "is not a number from 0 to"),
        ("sim:///default?cpus=8", "scale host"),
        ("sim:///default?bogus=1", 'unknown sim host parameter "bogus"'),
        ("xen:///system?run_dir=/tmp&x=1", "unknown parameter 'x'"),
        ("xen:///system?run_dir=tmp", "not an absolute path"),
        ("xenstore:///?x=1", "unknown parameter 'x'"),
        ("xend+unix:///x?run_dir=/tmp", "takes no parameters"),
    ],
)
def test_nothing_is_truncated_or_ignored(uri: str, needle: str) -> None:
    with pytest.raises(XenvcpuError, match=needle):
        xenvcpu.connect(uri)


# ---- waits without an end ----------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [math.nan, math.inf, -1.0, 1e12, True, "5"])
def test_every_wait_is_finite(host: Host, timeout: object) -> None:
    before = state(host)
    web = host.domain("web")
    with pytest.raises((ValueError, TypeError)):
        web.set_vcpus(2, wait=True, timeout=timeout)  # type: ignore[arg-type]
    with pytest.raises((ValueError, TypeError)):
        web.set_online("0-1", wait=True, timeout=timeout)  # type: ignore[arg-type]
    assert state(host) == before


# ---- Python exceptions leaking past the typed ones ------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_huge_ints_and_surrogates_are_typed(impl: type[CpuMap]) -> None:
    with pytest.raises(CpuListError) as e:
        impl.from_cpus([10**30], 8)
    assert (e.value.kind, e.value.cpu) == ("cpu_out_of_range", 10**30)
    with pytest.raises(CpuListError) as e:
        impl.from_cpus([-(10**30)], 8)
    assert e.value.kind == "negative_cpu"
    with pytest.raises(CpuListError) as e:
        impl.parse("0,\ud800-3", 8)
    assert (e.value.kind, e.value.column, e.value.reason) == ("parse", 3, "not a CPU number")


def test_cli_reports_hostile_arguments_in_one_line() -> None:
    for argv, needle in [
        (["cpumap", "0-3", "--width", "99999999999999999999"], "invalid CPU map width"),
        (["cpumap", "0,\udcff", "--width", "8"], "not a CPU number"),
        (
            ["--connect", "sim:///default", "set", "web", "2", "--wait", "--timeout", "nan"],
            "--timeout",
        ),
        (["--connect", "sim:///default?cpus=8", "host"], "scale host"),
    ]:
        proc = subprocess.run(
            [sys.executable, "-m", "xenvcpu", *argv],
            capture_output=True,
            text=True,
            errors="surrogateescape",
            timeout=60,
        )
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode in (1, 2), proc.stderr
        assert len(lines) == 1 and lines[0].startswith("xenvcpu: error: "), proc.stderr
        assert needle in lines[0], lines[0]
        assert "Traceback" not in proc.stderr


# ---- lookups ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ref", ["\u0663", "\uff13", "+3", " 3", "3 ", "0x3", "3_0", "1e3", "99999"]
)
def test_domain_ids_are_ascii_decimal(host: Host, ref: str) -> None:
    with pytest.raises(DomainNotFound):
        host.domain(ref)
    assert host.domain("3").name == "batch"


def test_bytes_are_the_seeds_byte_map(host: Host) -> None:
    """b"\\x01" is CPU 0 (the 2006 proposal's format), never "CPU 1" read as a number."""
    web = host.domain("web")
    assert web.pin_vcpu(2, hard=b"\x01").hard == CpuMap.parse("0", 64)
    assert web.pin_vcpu(2, hard=bytearray(b"\x00\x81")).hard == CpuMap.parse("8,15", 64)
    assert host.cpumap(memoryview(b"\x0f")) == CpuMap.parse("0-3", 64)
    before = state(host)
    with pytest.raises(CpuListError, match="out of range"):
        web.pin_vcpu(2, hard=b"\x00" * 8 + b"\x01")  # CPU 64 on a 64-CPU host
    assert state(host) == before
    web.set_online(b"\x05")  # vCPUs 0 and 2
    assert host.toolstack.availability(web.id) == {0: True, 1: False, 2: True, 3: False}


def test_uri_garbage_is_refused_before_any_backend(host: Host) -> None:
    bad: list[tuple[str, type[Exception]]] = [
        ("sim:///default\x00", InvalidUri),
        ("sim:///" + "a" * 10_000, InvalidUri),
        ("sim://default", InvalidUri),
        ("xend+http://h:99999999", InvalidUri),
    ]
    for uri, exc in bad:
        with pytest.raises(exc):
            xenvcpu.connect(uri)


def test_no_case_here_hangs() -> None:
    """The cases above each finish at once; this one guards the suite itself: a wait on a
    guest that never follows ends at its timeout."""
    h = xenvcpu.connect("sim:///default?follow=never")
    call: Callable[[], None] = lambda: h.domain("web").set_vcpus(2, wait=True, timeout=0.05)  # noqa: E731
    with pytest.raises(xenvcpu.errors.VcpuTimeout):
        call()
