"""How cost grows on the simulated host: a whole-host snapshot and pinning every vCPU,
per vCPU, along three axes (the others fixed):

* domains: 10 to 10,000 domains of 8 vCPUs, 4096-CPU maps;
* vCPUs per domain: 1 to 512, 100 domains, 4096-CPU maps;
* map width: 64 to 65,536 CPUs, 100 domains of 8 vCPUs.

Baselines where one exists: the pure-Rust snapshot loop (what Python adds), copying both
maps of every vCPU (width axis: what the bytes alone cost), and libvirt-python's
``dom.vcpus()`` on its test driver with as many vCPUs per domain (vCPU axis; 8-CPU maps).
`make bench` (benches/report.py) draws them into docs/benchmarks.md. Every case records
``axis``, ``x`` and ``per`` (vCPUs per call), so the report plots cost per vCPU: a flat
line is cost linear in vCPUs.
"""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

import xenvcpu
from xenvcpu import CpuMap, Host

LIBVIRT_PYTHON = "/usr/bin/python3"

AXES: dict[str, list[tuple[int, str]]] = {
    "domains": [
        (n, f"sim:///?cpus=4096&nodes=4&domains={n}&vcpus=8") for n in (10, 100, 1000, 10000)
    ],
    "vcpus": [(v, f"sim:///?cpus=4096&nodes=4&domains=100&vcpus={v}") for v in (1, 8, 64, 512)],
    "width": [(w, f"sim:///?cpus={w}&nodes=4&domains=100&vcpus=8") for w in (64, 512, 4096, 65536)],
}
POINTS = [(axis, x, uri) for axis, points in AXES.items() for x, uri in points]
IDS = [f"{axis}={x}" for axis, x, _ in POINTS]

_hosts: dict[str, Host] = {}


def host_for(uri: str) -> Host:
    """One connection per host for the whole run (the 10,000-domain host takes a while)."""
    if uri not in _hosts:
        h = xenvcpu.connect(uri)
        assert h.sim is not None
        h.sim.freeze_clock(True)
        _hosts[uri] = h
    return _hosts[uri]


def record(benchmark: Any, axis: str, x: int, impl: str, per: int) -> None:
    benchmark.group = f"scaling {axis}={x}"
    benchmark.extra_info.update(suite="scaling", axis=axis, x=x, impl=impl, per=per)


QUICK = pytest.mark.benchmark(max_time=0.2, min_rounds=3)


@QUICK
@pytest.mark.parametrize(("axis", "x", "uri"), POINTS, ids=IDS)
def test_snapshot_rust_loop(benchmark: Any, axis: str, x: int, uri: str) -> None:
    h = host_for(uri)
    n = h._hv._bench_snapshot(1)[0]
    record(benchmark, axis, x, "snapshot, pure-Rust loop", n)
    assert benchmark(h._hv._bench_snapshot, 1)[0] == n


@QUICK
@pytest.mark.parametrize(("axis", "x", "uri"), POINTS, ids=IDS)
def test_snapshot_python(benchmark: Any, axis: str, x: int, uri: str) -> None:
    h = host_for(uri)
    n = h.snapshot().vcpu_count
    record(benchmark, axis, x, "snapshot, Python", n)
    assert benchmark(h.snapshot).vcpu_count == n


@QUICK
@pytest.mark.parametrize(("axis", "x", "uri"), POINTS, ids=IDS)
def test_pin_every_vcpu(benchmark: Any, axis: str, x: int, uri: str) -> None:
    h = host_for(uri)
    domains = h.domains()
    w = h.max_cpus
    maps = [CpuMap.parse(f"0-{w // 4 - 1}", w), CpuMap.parse(f"{w // 4}-{w // 2 - 1}", w)]
    n = sum(d.max_vcpus for d in domains)
    record(benchmark, axis, x, "pin every vCPU, Python", n)
    turn = [0]

    def pin_all() -> int:
        turn[0] ^= 1
        return sum(len(d.pin_all(hard=maps[turn[0]])) for d in domains)

    assert benchmark(pin_all) == n


@QUICK
@pytest.mark.parametrize(("x", "uri"), AXES["width"], ids=[f"width={x}" for x, _ in AXES["width"]])
def test_memcpy_of_the_maps(benchmark: Any, x: int, uri: str) -> None:
    """Copying both maps of every vCPU once (into a buffer made beforehand)."""
    snap = host_for(uri).snapshot()
    maps = snap.maps("hard") * 2
    dst = memoryview(bytearray(len(maps)))
    record(benchmark, "width", x, "memcpy of both maps", snap.vcpu_count)

    def copy() -> int:
        dst[:] = maps
        return len(dst)

    assert benchmark(copy) == 2 * snap.maplen * snap.vcpu_count


WORKER = textwrap.dedent(
    """
    import sys, libvirt
    conn = libvirt.open("test:///default")
    doms = {}
    for n in map(int, sys.argv[1:]):
        xml = ("<domain type='test'><name>b%d</name><memory>1048576</memory>"
               "<vcpu>%d</vcpu><os><type>hvm</type></os></domain>" % (n, n))
        doms[n] = conn.createXML(xml, 0)
        assert len(doms[n].vcpus()[0]) == n
    print("ready", flush=True)
    for line in sys.stdin:
        n, calls = map(int, line.split())
        for _ in range(calls):
            doms[n].vcpus()
        print("ok", flush=True)
    """
)


@pytest.fixture(scope="module")
def libvirt_worker() -> Iterator[subprocess.Popen[str]]:
    ok = shutil.which(LIBVIRT_PYTHON) and (
        subprocess.run([LIBVIRT_PYTHON, "-c", "import libvirt"], capture_output=True).returncode
        == 0
    )
    if not ok:
        pytest.skip("the libvirt baseline needs Debian's python3-libvirt in /usr/bin/python3")
    counts = [str(v) for v, _ in AXES["vcpus"]]
    p = subprocess.Popen(
        [LIBVIRT_PYTHON, "-c", WORKER, *counts],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None and p.stdin is not None
    first = p.stdout.readline().strip()
    if first != "ready":
        err = p.stderr.read() if p.stderr else ""
        p.kill()
        raise RuntimeError(f"libvirt worker failed: {err.strip()[-300:]}")
    yield p
    p.stdin.close()
    p.wait(timeout=30)
    for f in (p.stdout, p.stderr):
        if f:
            f.close()


@QUICK
@pytest.mark.parametrize("x", [v for v, _ in AXES["vcpus"]], ids=lambda v: f"vcpus={v}")
def test_libvirt_python_vcpus(
    benchmark: Any, x: int, libvirt_worker: subprocess.Popen[str]
) -> None:
    """libvirt-python's dom.vcpus() on a test-driver domain of x vCPUs (8-CPU maps)."""
    calls = max(1, 3200 // x)
    record(benchmark, "vcpus", x, "libvirt-python dom.vcpus() (8-CPU maps)", x * calls)
    stdin, stdout = libvirt_worker.stdin, libvirt_worker.stdout
    assert stdin is not None and stdout is not None

    def run() -> str:
        stdin.write(f"{x} {calls}\n")
        stdin.flush()
        return stdout.readline().strip()

    assert benchmark(run) == "ok"
