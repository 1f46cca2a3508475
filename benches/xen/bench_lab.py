"""xenvcpu on real Xen against libxenctrl and xl, in one run inside the lab's dom0.

Domains: Domain-0 (2 vCPUs) and "big", a PV guest created paused with 64 vCPUs on the 4
emulated pCPUs (`xl create -p`: a 64-vCPU guest booting under emulation would starve
dom0 and spoil every timing). Baselines:

* libxenctrl: benches/xen/xc_loop.c, one xc_vcpu_getinfo + one xc_vcpu_getaffinity per
  vCPU (or one xc_vcpu_setaffinity), run as a worker so start-up is paid once;
* xl: `xl vcpu-list` (whole host) and `xl vcpu-pin big all CPU`, as users run them.

xenvcpu runs both batched (multicall) and in single-call mode (one hypercall per domctl,
as libxenctrl does). Emulation inflates absolute times: compare ratios.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import xenvcpu
from xenvcpu import CpuMap, Host
from xenvcpu.daemon.vcpus import read_names

BIG_VCPUS = 64
ROUNDS = 10  # rounds per C-worker request: amortises the pipe round trip


def xl(*args: object) -> str:
    r = subprocess.run(["xl", *map(str, args)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (args, r.stderr)
    return r.stdout


@pytest.fixture(scope="module")
def host() -> Host:
    return xenvcpu.connect()


@pytest.fixture(scope="module")
def big(host: Host, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cfg = tmp_path_factory.mktemp("big") / "big.cfg"
    cfg.write_text(
        'name = "big"\ntype = "pv"\nkernel = "/xenvcpu-lab/vmlinuz"\n'
        'ramdisk = "/xenvcpu-lab/domu-initrd.cpio.gz"\nextra = "console=hvc0"\n'
        f"memory = 128\nvcpus = {BIG_VCPUS}\nmaxvcpus = {BIG_VCPUS}\n"
    )
    xl("create", "-p", cfg)
    try:
        assert host.domain("big").max_vcpus == BIG_VCPUS
        yield "big"
    finally:
        xl("destroy", "big")


class XcWorker:
    """benches/xen/xc_loop (compiled on the host against libxen-dev by the harness)."""

    def __init__(self, domid: int) -> None:
        binary = os.environ.get("XENVCPU_XC_LOOP", "/mnt/out/bin/xc_loop")
        assert Path(binary).exists(), (
            f"{binary} missing: the harness compiles benches/xen/xc_loop.c"
        )
        self.proc = subprocess.Popen(
            [binary, str(domid), "0", "1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline().split()
        assert ready and ready[0] == "ready", ready
        self.vcpus = int(ready[1].split("=")[1])

    def run(self, mode: str, rounds: int) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{mode} {rounds}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line.startswith("ok "), line
        return line

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)
        if self.proc.stdout:
            self.proc.stdout.close()


def record(benchmark: Any, group: str, impl: str, per: int) -> None:
    benchmark.group = f"lab {group}"
    benchmark.extra_info.update(suite="lab", op=group, impl=impl, per=per)


@pytest.fixture(params=["Domain-0", "big"])
def domain(request: pytest.FixtureRequest, host: Host, big: str) -> str:
    return str(request.param)


@pytest.mark.parametrize("mode", ["batched", "single"])
def test_xenvcpu_domain_snapshot(benchmark: Any, host: Host, domain: str, mode: str) -> None:
    d = host.domain(domain)
    record(benchmark, f"snapshot {domain}", f"xenvcpu-{mode}", d.max_vcpus)
    host._hv.multicall = mode == "batched"
    try:
        vcpus = benchmark(d.vcpus)
    finally:
        host._hv.multicall = True
    assert len(vcpus) == d.max_vcpus


def test_libxenctrl_domain_snapshot(benchmark: Any, host: Host, domain: str) -> None:
    d = host.domain(domain)
    w = XcWorker(d.id)
    try:
        assert w.vcpus == d.max_vcpus
        record(benchmark, f"snapshot {domain}", "libxenctrl-C", d.max_vcpus * ROUNDS)
        benchmark(w.run, "info", ROUNDS)
    finally:
        w.close()


@pytest.mark.parametrize("mode", ["batched", "single"])
def test_xenvcpu_pin_every_vcpu(benchmark: Any, host: Host, big: str, mode: str) -> None:
    d = host.domain(big)
    maps = [CpuMap.parse("0", host.max_cpus), CpuMap.parse("1", host.max_cpus)]
    turn = [0]
    record(benchmark, "pin every vCPU of big", f"xenvcpu-{mode}", d.max_vcpus)

    def pin() -> int:
        turn[0] ^= 1
        return len(d.pin_all(hard=maps[turn[0]]))

    host._hv.multicall = mode == "batched"
    try:
        assert benchmark(pin) == BIG_VCPUS
    finally:
        host._hv.multicall = True


def test_libxenctrl_pin_every_vcpu(benchmark: Any, host: Host, big: str) -> None:
    w = XcWorker(host.domain(big).id)
    try:
        record(benchmark, "pin every vCPU of big", "libxenctrl-C", w.vcpus * ROUNDS)
        benchmark(w.run, "pin", ROUNDS)
    finally:
        w.close()


def test_xl_pin_every_vcpu(benchmark: Any, big: str) -> None:
    turn = [0]
    record(benchmark, "pin every vCPU of big", "xl vcpu-pin", BIG_VCPUS)

    def pin() -> str:
        turn[0] ^= 1
        return xl("vcpu-pin", big, "all", turn[0])

    benchmark(pin)


def listing_rows(host: Host) -> int:
    """What a whole-host listing reads of every vCPU (xl vcpu-list's columns)."""
    return len(
        [
            (
                s.domain.name,
                v.number,
                v.cpu,
                v.hard_affinity.to_cpulist(),
                v.soft_affinity.to_cpulist(),
            )
            for s in host.snapshot()
            for v in s.vcpus
        ]
    )


def test_xenvcpu_host_listing(benchmark: Any, host: Host, big: str) -> None:
    """A Host that lists again and again (top, the exporter, a watcher): the names come
    from the toolstack's cache, kept by a xenstore watch."""
    n = sum(s.domain.max_vcpus for s in host.snapshot())
    record(benchmark, "host listing", "xenvcpu", n)
    assert benchmark(listing_rows, host) == n
    ts: Any = host.toolstack
    assert ts.names.watching


def test_xenvcpu_host_listing_new_host(benchmark: Any, host: Host, big: str) -> None:
    """A command that lists once (`xenvcpu list`): connect, one listing (its names in one
    batch of xenstore reads), close. The process start and import are not in it."""
    n = sum(s.domain.max_vcpus for s in host.snapshot())
    record(benchmark, "host listing", "xenvcpu: connect + first listing", n)

    def once() -> int:
        with xenvcpu.connect() as h:
            return listing_rows(h)

    assert benchmark(once) == n


@pytest.mark.parametrize(
    "part",
    [
        "names (xenstore), cached",
        "names (xenstore), one batch",
        "names (xenstore), transaction",
        "hypercalls (native snapshot)",
    ],
)
def test_xenvcpu_host_listing_parts(benchmark: Any, host: Host, big: str, part: str) -> None:
    """Where the listing's time goes: the domain names (from the cache the listing uses;
    read in one pipelined batch, as a first listing does; read in a transaction with the
    directory, as listings did before the cache), and the batched hypercalls of the
    snapshot without any Python record."""
    n = sum(s.domain.max_vcpus for s in host.snapshot())
    record(benchmark, "host listing", f"xenvcpu: {part} alone", n)
    ts: Any = host.toolstack
    infos = host._hv.domains()
    if part.endswith("cached"):
        got = benchmark(ts.names_with, lambda: infos)[1]
    elif part.endswith("one batch"):
        got = benchmark(read_names, ts.client(), [d.id for d in infos])
    elif part.endswith("transaction"):
        got = benchmark(ts.domain_names)
    else:
        assert len(benchmark(host._hv.snapshot)) == n
        return
    assert "big" in got.values()


def test_xl_host_listing(benchmark: Any, host: Host, big: str) -> None:
    n = sum(s.domain.max_vcpus for s in host.snapshot())
    record(benchmark, "host listing", "xl vcpu-list", n)
    out = benchmark(xl, "vcpu-list")
    assert len(out.splitlines()) == n + 1
