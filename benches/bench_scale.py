"""Bulk operations at scale on the simulated host, against their baselines in the same run.

Host: 4096 pCPUs in 4 NUMA nodes, 1000 domains x 8 vCPUs (8000 vCPUs; every map is 4096 CPUs,
512 bytes). Baselines:

* the pure-Rust loop over the same transport (``Hypervisor._bench_snapshot``): what the
  Python layer adds is the difference;
* libvirt-python's ``dom.vcpus()`` on libvirt's in-process test driver (32 vCPUs, 8-CPU
  maps), in Debian's ``/usr/bin/python3`` with ``python3-libvirt``: a worker process runs
  100 calls per request, so the pipe round trip is amortised.

Every case records ``per`` (how many vCPUs one call covers) so the report gives per-vCPU cost.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

import xenvcpu
from xenvcpu import CpuMap, Host, SimControl

SCALE_URI = "sim:///?cpus=4096&nodes=4&domains=1000&vcpus=8"
LIBVIRT_PYTHON = "/usr/bin/python3"
LIBVIRT_CALLS = 100


def sim(h: Host) -> SimControl:
    """The simulated host's controls (every host here is simulated)."""
    assert h.sim is not None, f"{h.uri} is not a simulated host"
    return h.sim


@pytest.fixture(scope="module")
def host() -> Host:
    h = xenvcpu.connect(SCALE_URI)
    sim(h).freeze_clock(True)
    return h


def record(benchmark: Any, group: str, impl: str, per: int) -> None:
    benchmark.group = f"scale {group}"
    benchmark.extra_info.update(suite="scale", op=group, impl=impl, per=per)


def test_snapshot_rust_loop(benchmark: Any, host: Host) -> None:
    n = host._hv._bench_snapshot(1)[0]
    record(benchmark, "snapshot", "rust-loop", n)
    assert benchmark(host._hv._bench_snapshot, 1)[0] == 8004


def test_snapshot_python(benchmark: Any, host: Host) -> None:
    record(benchmark, "snapshot", "python", 8004)
    snap = benchmark(host.snapshot)
    assert snap.vcpu_count == 8004 and len(snap.maps("hard")) == 8004 * 512


def test_snapshot_python_all_objects(benchmark: Any, host: Host) -> None:
    """The worst case: a VcpuInfo per vCPU and both maps as CpuMap objects."""
    record(benchmark, "snapshot", "python-objects", 8004)

    def everything() -> int:
        n = 0
        for s in host.snapshot():
            for v in s.vcpus:
                n += len(v.hard_affinity) > 0 and v.soft_affinity.width == 4096
        return n

    assert benchmark(everything) == 8004


def test_list_with_cpulists(benchmark: Any, host: Host) -> None:
    """What `xenvcpu list` computes: every vCPU with both maps as cpulist text."""
    record(benchmark, "list", "python", 8004)

    def rows() -> list[tuple[int, int, str, str]]:
        return [
            (s.domain.id, v.number, v.hard_affinity.to_cpulist(), v.soft_affinity.to_cpulist())
            for s in host.snapshot()
            for v in s.vcpus
        ]

    assert len(benchmark(rows)) == 8004


def test_pin_every_vcpu(benchmark: Any, host: Host) -> None:
    domains = host.domains()
    maps = [CpuMap.parse("0-1023", 4096), CpuMap.parse("1024-2047", 4096)]
    turn = [0]
    record(benchmark, "pin every vCPU", "python", sum(d.max_vcpus for d in domains))

    def pin_all() -> int:
        turn[0] ^= 1
        return sum(len(d.pin_all(hard=maps[turn[0]])) for d in domains)

    assert benchmark(pin_all) == 8004


WORKER = textwrap.dedent(
    """
    import sys, time, libvirt
    conn = libvirt.open("test:///default")
    xml = ("<domain type='test'><name>bench</name><memory>1048576</memory>"
           "<vcpu>32</vcpu><os><type>hvm</type></os></domain>")
    dom = conn.createXML(xml, 0)
    info, maps = dom.vcpus()
    print(len(info), len(maps[0]), flush=True)
    for line in sys.stdin:
        for _ in range(int(line)):
            dom.vcpus()
        print("ok", flush=True)
    """
)


class LibvirtWorker:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [LIBVIRT_PYTHON, "-c", WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline().split()
        if len(first) != 2:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"libvirt worker failed: {err.strip()[-300:]}")
        self.vcpus, self.maplen = int(first[0]), int(first[1])

    def run(self, calls: int) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{calls}\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)
        for f in (self.proc.stdout, self.proc.stderr):
            if f:
                f.close()


@pytest.fixture(scope="module")
def libvirt_worker() -> Iterator[LibvirtWorker]:
    probe = (
        subprocess.run(
            [LIBVIRT_PYTHON, "-c", "import libvirt"], capture_output=True, text=True, check=False
        )
        if shutil.which(LIBVIRT_PYTHON)
        else None
    )
    if probe is None or probe.returncode != 0:
        pytest.skip(
            "the libvirt baseline needs Debian's python3-libvirt in /usr/bin/python3 "
            "(apt-get install python3-libvirt; make deps installs it)"
        )
    w = LibvirtWorker()
    yield w
    w.close()


def test_libvirt_python_vcpus(benchmark: Any, libvirt_worker: LibvirtWorker) -> None:
    w = libvirt_worker
    assert (w.vcpus, w.maplen) == (32, 8)
    record(benchmark, "snapshot", "libvirt-python", w.vcpus * LIBVIRT_CALLS)
    benchmark.extra_info["note"] = json.dumps(
        {"calls_per_round": LIBVIRT_CALLS, "vcpus": w.vcpus, "map_cpus": w.maplen}
    )
    assert benchmark(w.run, LIBVIRT_CALLS) == "ok"
