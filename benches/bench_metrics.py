"""Monitoring at scale on the simulated host, against baselines in the same run.

Host: 4096 pCPUs in 4 NUMA nodes, 1000 domains x 8 vCPUs (8004 vCPUs with Domain-0).

* ``exporter scrape``: one Prometheus scrape, every metric of docs/monitoring.md rendered to
  the text exposition (``VcpuCollector`` + ``generate_latest``), against the same metric
  families fed by a per-vCPU loop (``Domain.vcpus()`` per domain, a ``VcpuInfo`` and two
  cpulists per vCPU): what an exporter written on the object API would cost.
* ``sample``: one utilisation sample (``Sampler.sample``: snapshot, deltas, per-domain and
  per-pCPU sums), against the same figures computed from ``Domain.vcpus()`` per domain.

Every case records ``per`` (vCPUs covered by one call) so the report gives per-vCPU cost.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest

import xenvcpu
from xenvcpu import Host, SimControl
from xenvcpu.metrics import Sampler

pc = pytest.importorskip("prometheus_client", reason="the exporter cases need prometheus_client")
from prometheus_client.core import (  # noqa: E402
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
)

from xenvcpu.exporter import STATES, VcpuCollector  # noqa: E402

SCALE_URI = "sim:///?cpus=4096&nodes=4&domains=1000&vcpus=8"
VCPUS = 8004
LABELS = ["domain", "domid", "uuid", "vcpu"]


def sim(h: Host) -> SimControl:
    assert h.sim is not None, f"{h.uri} is not a simulated host"
    return h.sim


@pytest.fixture(scope="module")
def host() -> Iterator[Host]:
    h = xenvcpu.connect(SCALE_URI)
    sim(h).freeze_clock(True)
    yield h


def record(benchmark: Any, group: str, impl: str, per: int) -> None:
    benchmark.group = f"metrics {group}"
    benchmark.extra_info.update(suite="metrics", op=group, impl=impl, per=per)


def registry_of(collector: Any) -> Any:
    registry = pc.CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


class PerVcpuLoop:
    """The baseline exporter: the same vCPU families from one ``Domain.vcpus()`` per domain."""

    def __init__(self, host: Host) -> None:
        self.host = host

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        cpu_s = CounterMetricFamily("xen_vcpu_cpu_seconds", "cpu", labels=LABELS)
        online = GaugeMetricFamily("xen_vcpu_online", "online", labels=LABELS)
        state = GaugeMetricFamily("xen_vcpu_state", "state", labels=[*LABELS, "state"])
        pcpu = GaugeMetricFamily("xen_vcpu_pcpu", "pcpu", labels=LABELS)
        aff = InfoMetricFamily("xen_vcpu_affinity", "aff", labels=[*LABELS, "hard", "soft"])
        d_online = GaugeMetricFamily("xen_domain_vcpus_online", "on", labels=LABELS[:3])
        d_max = GaugeMetricFamily("xen_domain_vcpus_max", "max", labels=LABELS[:3])
        for d in self.host.domains():
            base = [d.name, str(d.id), d.uuid]
            d_online.add_metric(base, d.online_vcpus)
            d_max.add_metric(base, d.max_vcpus)
            for v in d.vcpus():
                labels = [*base, str(v.number)]
                cpu_s.add_metric(labels, v.cpu_time_ns / 1e9)
                online.add_metric(labels, 1 if v.online else 0)
                code = int(v.state)
                for c, s in enumerate(STATES):
                    state.add_metric([*labels, s], 1 if c == code else 0)
                if v.cpu is not None and v.cpu >= 0:
                    pcpu.add_metric(labels, v.cpu)
                aff.add_metric(
                    labels,
                    {
                        "hard": v.hard_affinity.to_cpulist(),
                        "soft": v.soft_affinity.to_cpulist(),
                    },
                )
        yield from (cpu_s, online, state, pcpu, aff, d_online, d_max)


def hypercalls(host: Host, fn: Any) -> int:
    before = sim(host).hypercalls()
    fn()
    return sim(host).hypercalls() - before


def series_count(text: bytes, name: bytes) -> int:
    return sum(1 for line in text.splitlines() if line.startswith(name + b"{"))


def test_collect_xenvcpu(benchmark: Any, host: Host) -> None:
    """The collection alone: the metric families built, not yet rendered as text."""
    record(benchmark, "exporter collect", "xenvcpu", VCPUS)
    collector = VcpuCollector(host)
    list(collector.collect())  # guest types are asked once per domain, the first time
    benchmark.extra_info["hypercalls"] = hypercalls(host, lambda: list(collector.collect()))
    families = benchmark(lambda: list(collector.collect()))
    assert sum(len(f.samples) for f in families) > VCPUS * 8


def test_collect_per_vcpu_loop(benchmark: Any, host: Host) -> None:
    record(benchmark, "exporter collect", "per-vCPU loop", VCPUS)
    collector = PerVcpuLoop(host)
    benchmark.extra_info["hypercalls"] = hypercalls(host, lambda: list(collector.collect()))
    families = benchmark(lambda: list(collector.collect()))
    assert sum(len(f.samples) for f in families) > VCPUS * 8


def test_scrape_xenvcpu(benchmark: Any, host: Host) -> None:
    record(benchmark, "exporter scrape", "xenvcpu", VCPUS)
    registry = registry_of(VcpuCollector(host))
    pc.generate_latest(registry)
    benchmark.extra_info["hypercalls"] = hypercalls(host, lambda: pc.generate_latest(registry))
    text = benchmark(pc.generate_latest, registry)
    assert series_count(text, b"xen_vcpu_online") == VCPUS
    assert series_count(text, b"xen_vcpu_state") == VCPUS * len(STATES)


def test_scrape_per_vcpu_loop(benchmark: Any, host: Host) -> None:
    record(benchmark, "exporter scrape", "per-vCPU loop", VCPUS)
    registry = registry_of(PerVcpuLoop(host))
    benchmark.extra_info["hypercalls"] = hypercalls(host, lambda: pc.generate_latest(registry))
    text = benchmark(pc.generate_latest, registry)
    assert series_count(text, b"xen_vcpu_online") == VCPUS
    # the same vCPU series as xenvcpu's collector
    ours = pc.generate_latest(registry_of(VcpuCollector(host)))
    for name in (b"xen_vcpu_online", b"xen_vcpu_pcpu", b"xen_vcpu_affinity_info"):
        want = {ln for ln in ours.splitlines() if ln.startswith(name + b"{")}
        got = {ln for ln in text.splitlines() if ln.startswith(name + b"{")}
        assert got == want, name


def test_sample_xenvcpu(benchmark: Any, host: Host) -> None:
    record(benchmark, "sample", "xenvcpu", VCPUS)
    sampler = Sampler(host)
    sampler.sample()

    def step() -> float:
        sim(host).advance(1.0)
        return sampler.sample().util_total()

    assert benchmark(step) > 0


def test_sample_per_vcpu_loop(benchmark: Any, host: Host) -> None:
    """The same figures (per-vCPU, per-domain and per-pCPU utilisation and vCPU counts, a
    domain back under a new domid not measured) from the object API."""
    record(benchmark, "sample", "per-vCPU loop", VCPUS)
    clock = sim(host).clock_ns
    width = host.max_cpus
    last: dict[str, tuple[int, int, dict[int, int]]] = {}

    def step() -> float:
        sim(host).advance(1.0)
        now = clock()
        util: list[float] = []
        by_domain: dict[int, float] = {}
        load = [0.0] * width
        count = [0] * width
        for d in host.domains():
            vs = d.vcpus()
            times = {v.number: v.cpu_time_ns for v in vs}
            before = last.get(d.uuid)
            last[d.uuid] = (now, d.id, times)
            ok = before is not None and before[1] == d.id
            total = 0.0
            for v in vs:
                u = math.nan
                if ok and before is not None:
                    p = before[2].get(v.number)
                    if p is not None and v.cpu_time_ns >= p:
                        u = (v.cpu_time_ns - p) / (now - before[0])
                        total += u
                util.append(u)
                if v.cpu is not None and v.cpu >= 0:
                    count[v.cpu] += 1
                    if u == u:
                        load[v.cpu] += u
            by_domain[d.id] = total if ok else math.nan
        return math.fsum(x for x in by_domain.values() if x == x)

    step()
    result = benchmark(step)
    sampler = Sampler(host)
    sampler.sample()
    sim(host).advance(1.0)
    assert result == pytest.approx(sampler.sample().util_total())
