"""A Prometheus exporter of every vCPU: one batched snapshot per scrape.

    from prometheus_client import CollectorRegistry, generate_latest
    registry = CollectorRegistry()
    registry.register(VcpuCollector(xenvcpu.connect()))
    print(generate_latest(registry).decode())

``xenvcpu exporter`` serves it over HTTP (:func:`serve`). It needs the ``prometheus_client``
package (``pip install 'xenvcpu[exporter]'``; Debian: ``python3-prometheus-client``), imported
only when a collector collects or a server starts.

Per scrape: one :meth:`Host.snapshot` (every vCPU of every domain in one batch: never a call
per vCPU), the cpupools, and each domain's guest type the first time the domain is seen.
The metrics are listed in docs/monitoring.md. Affinity is one info series per vCPU with the
hard and soft cpulists as labels, not a series per (vCPU, CPU): 8,000 vCPUs on a 4,096-CPU
host would make 65 million series.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from xenvcpu._impl import CpuMap
from xenvcpu.errors import NotSupported, XenvcpuError
from xenvcpu.metrics import cpu_times, domain_blocks, leaks_runstate_update

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from xenvcpu.host import Host

__all__ = [
    "DEFAULT_LISTEN",
    "STATES",
    "VcpuCollector",
    "parse_listen",
    "prometheus_client",
    "serve",
]

DEFAULT_LISTEN = "127.0.0.1:9825"
#: ``xen_vcpu_state``'s ``state`` label, by the snapshot's state code.
STATES = ("offline", "running", "blocked", "runnable")
VCPU_LABELS = ["domain", "domid", "uuid", "vcpu"]
DOMAIN_LABELS = ["domain", "domid", "uuid"]
#: Distinct affinity maps whose cpulist text is kept between scrapes.
MAX_CACHED_MAPS = 65536


def prometheus_client() -> ModuleType:
    """The ``prometheus_client`` package, or NotSupported saying how to get it."""
    try:
        import prometheus_client as pc
        import prometheus_client.core
        import prometheus_client.samples
    except ImportError as e:
        raise NotSupported(
            "the exporter needs the prometheus_client package: "
            "pip install 'xenvcpu[exporter]' (Debian: apt-get install python3-prometheus-client)"
            f" ({e})"
        ) from None
    return pc


class VcpuCollector:
    """A ``prometheus_client`` collector of one host's vCPUs, domains and CPUs.

    ``mask`` forces masking of bit 63 of CPU time on or off (default: where Xen < 4.13,
    :func:`xenvcpu.metrics.leaks_runstate_update`). Scrapes are serialised: a Host is one
    connection."""

    def __init__(self, host: Host, *, mask: bool | None = None) -> None:
        self.host = host
        self.mask = leaks_runstate_update(host.xen_version) if mask is None else mask
        self._cpulists: dict[bytes, str] = {}
        self._guest_types: dict[tuple[int, str], str] = {}
        self._lock = threading.Lock()
        self._pc = prometheus_client()

    def describe(self) -> Iterable[Metric]:
        # No scrape at registration; the names are fixed but cheap to skip checking.
        return ()

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            yield from self._collect()

    def _cpulist(self, data: memoryview, width: int) -> str:
        # a read-only memoryview hashes and compares as the bytes it shows: no copy per vCPU
        text: str | None = self._cpulists.get(data)  # type: ignore[call-overload]
        if text is None:
            if len(self._cpulists) >= MAX_CACHED_MAPS:
                self._cpulists.clear()
            text = CpuMap.from_bytes(data, width).to_cpulist()
            self._cpulists[bytes(data)] = text
        return text

    def _guest_type(self, snap: Any, index: int, domid: int, uuid: str) -> str:
        key = (domid, uuid)
        kind = self._guest_types.get(key)
        if kind is None:
            try:  # a domain keeps its type for life: asked once
                dom = snap.host._domain(snap.native.domain(index), snap.names)
                kind = dom.guest_type.value
            except XenvcpuError:
                kind = "unknown"
            self._guest_types[key] = kind
        return kind

    def _collect(self) -> Iterator[Metric]:
        core = self._pc.core
        gauge, counter, info = (
            core.GaugeMetricFamily,
            core.CounterMetricFamily,
            core.InfoMetricFamily,
        )
        started = time.perf_counter()
        up = gauge("xen_exporter_up", "1 if the hypervisor answered this scrape, else 0")
        try:
            snap = self.host.snapshot()
            pools = self.host.cpupools
            online_cpus = len(self.host.cpus)
            nodes = self.host.topology.nodes
        except XenvcpuError as e:
            print(f"xenvcpu exporter: scrape failed: {e}", file=sys.stderr, flush=True)
            up.add_metric([], 0)
            yield up
            yield self._duration(started)
            return
        up.add_metric([], 1)

        cpu_s = counter(
            "xen_vcpu_cpu_seconds",
            "CPU time a vCPU ran (RUNSTATE_running), seconds",
            labels=VCPU_LABELS,
        )
        online = gauge("xen_vcpu_online", "1 if the vCPU is online, else 0", labels=VCPU_LABELS)
        state = gauge(
            "xen_vcpu_state",
            "1 for the vCPU's run state (running, blocked, runnable, offline), 0 for the others",
            labels=[*VCPU_LABELS, "state"],
        )
        pcpu = gauge(
            "xen_vcpu_pcpu",
            "Physical CPU the vCPU runs or last ran on (online vCPUs only)",
            labels=VCPU_LABELS,
        )
        affinity = info(
            "xen_vcpu_affinity",
            "Hard and soft affinity of the vCPU as cpulists",
            labels=[*VCPU_LABELS, "hard", "soft"],
        )
        d_online = gauge(
            "xen_domain_vcpus_online", "Online vCPUs of the domain", labels=DOMAIN_LABELS
        )
        d_max = gauge(
            "xen_domain_vcpus_max", "vCPUs the domain has (max_vcpus)", labels=DOMAIN_LABELS
        )
        d_info = info(
            "xen_domain",
            "Guest type (pv, pvh, hvm) and cpupool of the domain",
            labels=[*DOMAIN_LABELS, "guest_type", "cpupool", "cpupool_id"],
        )
        d_err = gauge(
            "xen_domain_read_error",
            "1 if the domain's vCPUs could not be read in this scrape (it is vanishing), else 0",
            labels=DOMAIN_LABELS,
        )

        pool_names = {p.id: p.name for p in pools}
        times = cpu_times(snap, self.mask)
        domids = snap.column("domain")
        numbers = snap.column("number")
        states = snap.column("state")
        cpus = snap.column("cpu")
        hard = memoryview(snap.maps("hard"))
        soft = memoryview(snap.maps("soft"))
        native = snap.native
        width, maplen = native.width, native.maplen
        names = snap.names
        cpulist = self._cpulist
        live: set[tuple[int, str]] = set()
        sample = self._pc.samples.Sample
        add_cpu, add_online = cpu_s.samples.append, online.samples.append
        add_state, add_pcpu = state.samples.append, pcpu.samples.append
        add_affinity = affinity.samples.append
        for i, (start, stop) in enumerate(domain_blocks(snap, domids)):
            d = native.domain(i)
            domid, uuid = d.id, d.uuid
            live.add((domid, uuid))
            name = names.get(domid) or ("Domain-0" if domid == 0 else f"domain-{domid}")
            base = [name, str(domid), uuid]
            base_labels = dict(zip(DOMAIN_LABELS, base))
            err = native.error(i) is not None
            d_err.add_metric(base, 1 if err else 0)
            d_max.add_metric(base, d.max_vcpus)
            d_online.add_metric(base, d.online_vcpus)
            d_info.add_metric(
                [
                    *base,
                    self._guest_type(snap, i, domid, uuid),
                    pool_names.get(d.cpupool, f"Pool-{d.cpupool}"),
                    str(d.cpupool),
                ],
                {},
            )
            # Samples go straight into Metric.samples (what add_metric fills), a vCPU's
            # label dict shared by its series: add_metric would zip and build a dict per
            # call. The exposition is the same.
            for k in range(start, stop):
                labels = {**base_labels, "vcpu": str(numbers[k])}
                code = states[k]
                add_cpu(sample("xen_vcpu_cpu_seconds_total", labels, times[k] / 1e9))
                add_online(sample("xen_vcpu_online", labels, 1.0 if code else 0.0))
                for c, s in enumerate(STATES):
                    add_state(
                        sample("xen_vcpu_state", {**labels, "state": s}, 1.0 if c == code else 0.0)
                    )
                if cpus[k] >= 0:
                    add_pcpu(sample("xen_vcpu_pcpu", labels, float(cpus[k])))
                at = k * maplen
                add_affinity(
                    sample(
                        "xen_vcpu_affinity_info",
                        {
                            **labels,
                            "hard": cpulist(hard[at : at + maplen], width),
                            "soft": cpulist(soft[at : at + maplen], width),
                        },
                        1.0,
                    )
                )
        for key in [k for k in self._guest_types if k not in live]:
            del self._guest_types[key]
        yield from (cpu_s, online, state, pcpu, affinity, d_online, d_max, d_info, d_err)

        h_cpus = gauge("xen_host_pcpus", "Online physical CPUs of the host")
        h_cpus.add_metric([], online_cpus)
        h_nodes = gauge("xen_host_numa_nodes", "NUMA nodes with CPUs")
        h_nodes.add_metric([], len(nodes))
        h_pools = gauge("xen_host_cpupools", "cpupools of the host")
        h_pools.add_metric([], len(pools))
        p_cpus = gauge(
            "xen_cpupool_pcpus",
            "Physical CPUs of the cpupool",
            labels=["cpupool", "cpupool_id", "scheduler"],
        )
        for p in pools:
            p_cpus.add_metric([p.name, str(p.id), p.scheduler], len(p.cpus))
        h_info = info(
            "xen_host",
            "Xen version and the backend xenvcpu reads it through",
            labels=["xen_version", "backend"],
        )
        h_info.add_metric([], {"xen_version": self.host.xen_version, "backend": self.host.backend})
        yield from (h_cpus, h_nodes, h_pools, p_cpus, h_info, up, self._duration(started))

    def _duration(self, started: float) -> Metric:
        g = self._pc.core.GaugeMetricFamily(
            "xen_exporter_scrape_duration_seconds", "How long this scrape took, seconds"
        )
        g.add_metric([], time.perf_counter() - started)
        metric: Metric = g
        return metric


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9825`` for IPv6; ``:9825`` is every IPv4 address) → (host, port).

    Raises:
        ValueError: not HOST:PORT, or a port outside 0 to 65535 (0: any free port).
    """
    host, sep, port = text.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or len(port) > 5:
        raise ValueError(f"--listen {text!r}: expected HOST:PORT, e.g. {DEFAULT_LISTEN}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"--listen {text!r}: write an IPv6 address in brackets, e.g. [::1]:9825")
    number = int(port)
    if number > 65535:
        raise ValueError(f"--listen {text!r}: port {number} is above 65535")
    return host or "0.0.0.0", number


class _Quiet(WSGIRequestHandler):
    """No access log on stderr (one line per scrape)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(WSGIServer):
    timeout = 30  # a client that opens a connection and sends nothing is dropped

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(self.timeout)
        super().finish_request(request, client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


def _app(metrics: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    page = (
        b"<html><head><title>xenvcpu exporter</title></head><body>"
        b'<h1>xenvcpu exporter</h1><p><a href="/metrics">/metrics</a></p></body></html>'
    )

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == "/metrics":
            return metrics(environ, start_response)
        if path == "/":
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [page]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: the metrics are at /metrics\n"]

    return app


def serve(
    host: Host,
    listen: tuple[str, int],
    *,
    ready: Callable[[str, int], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Serve ``/metrics`` of ``host`` on ``listen`` until ``stop`` is set (or forever).
    ``ready(address, port)`` is called once the socket listens (port 0 picks a free one)."""
    pc = prometheus_client()
    registry = pc.CollectorRegistry(auto_describe=False)
    registry.register(VcpuCollector(host))
    addr, port = listen
    server_class = _Server6 if ":" in addr else _Server
    with make_server(addr, port, _app(pc.make_wsgi_app(registry)), server_class, _Quiet) as httpd:
        bound = httpd.server_address
        if ready is not None:
            ready(str(bound[0]), int(bound[1]))
        if stop is None:
            httpd.serve_forever()
            return

        def watch() -> None:
            stop.wait()
            httpd.shutdown()

        threading.Thread(target=watch, daemon=True).start()
        httpd.serve_forever(poll_interval=0.1)
