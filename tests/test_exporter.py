"""The Prometheus exporter (xenvcpu.exporter, ``xenvcpu exporter``) against the simulated
host: the series and their values, one batched snapshot per scrape (counted in hypercalls),
a scrape over HTTP parsed with prometheus_client's own parser, ``promtool check metrics``, and
a real Prometheus server scraping it on loopback and answering a PromQL query."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

prometheus_client = pytest.importorskip(
    "prometheus_client", reason="the exporter needs prometheus_client (pip install .[exporter])"
)
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

import xenvcpu  # noqa: E402
from xenvcpu import Host, SimControl  # noqa: E402
from xenvcpu.errors import XenvcpuError  # noqa: E402
from xenvcpu.exporter import STATES, VcpuCollector, parse_listen, serve  # noqa: E402
from xenvcpu.metrics import RUNSTATE_UPDATE  # noqa: E402

DEFAULT = "sim:///default"
# Bounds on every wait here: a broken server fails the test instead of hanging it.
HTTP_TIMEOUT = 30.0
PROMETHEUS_WAIT = 90.0


def ctl(h: Host) -> SimControl:
    assert h.sim is not None
    return h.sim


def connect(uri: str = DEFAULT) -> Host:
    h = xenvcpu.connect(uri)
    ctl(h).freeze_clock()
    return h


def exposition(collector: VcpuCollector) -> str:
    registry = prometheus_client.CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text: str = prometheus_client.generate_latest(registry).decode()
    return text


Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Series:
    """Every sample of the exposition: (name, labels) -> value."""
    out: Series = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in out, f"duplicate series {key}"
            out[key] = s.value
    return out


def pick(series: Series, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    want = set(labels.items())
    return [(dict(lb), v) for (n, lb), v in series.items() if n == name and want <= lb]


def one(series: Series, name: str, **labels: str) -> float:
    found = pick(series, name, **labels)
    assert len(found) == 1, f"{name}{labels}: {found}"
    return found[0][1]


def test_series_and_values_of_the_default_host() -> None:
    host = connect()
    series = parse(exposition(VcpuCollector(host)))
    snap = host.snapshot()
    web = host.domain("web")
    wl = {"domain": "web", "domid": "1", "uuid": web.uuid}
    # web: vCPU 0 runnable on pCPU 2 pinned to 2, soft 0-7 (docs/simulator.md)
    assert one(series, "xen_vcpu_online", **wl, vcpu="0") == 1
    assert one(series, "xen_vcpu_pcpu", **wl, vcpu="0") == 2
    states = {lb["state"]: v for lb, v in pick(series, "xen_vcpu_state", **wl, vcpu="0")}
    assert states == {"offline": 0, "running": 0, "blocked": 0, "runnable": 1}
    assert one(series, "xen_vcpu_affinity_info", **wl, vcpu="0", hard="2", soft="0-7") == 1
    assert one(series, "xen_vcpu_affinity_info", **wl, vcpu="3", hard="0-63", soft="0-7") == 1
    # db's vCPUs 6 and 7 are offline: online 0, state offline, no pCPU series
    assert one(series, "xen_vcpu_online", domain="db", vcpu="7") == 0
    assert one(series, "xen_vcpu_state", domain="db", vcpu="7", state="offline") == 1
    assert pick(series, "xen_vcpu_pcpu", domain="db", vcpu="7") == []
    # CPU time is the snapshot's (the clock is frozen), in seconds
    times = {
        (d, n): t
        for d, n, t in zip(snap.column("domain"), snap.column("number"), snap.column("cpu_time_ns"))
    }
    for lb, v in pick(series, "xen_vcpu_cpu_seconds_total"):
        assert v == pytest.approx(times[int(lb["domid"]), int(lb["vcpu"])] / 1e9)
    # one series per vCPU per metric; one per state
    assert len(pick(series, "xen_vcpu_cpu_seconds_total")) == 32
    assert len(pick(series, "xen_vcpu_online")) == 32
    assert len(pick(series, "xen_vcpu_state")) == 32 * len(STATES)
    assert sum(v for _, v in pick(series, "xen_vcpu_state")) == 32
    assert len(pick(series, "xen_vcpu_pcpu")) == 26
    assert len(pick(series, "xen_vcpu_affinity_info")) == 32
    # per domain
    assert one(series, "xen_domain_vcpus_online", domain="db") == 6
    assert one(series, "xen_domain_vcpus_max", domain="db") == 8
    info = pick(series, "xen_domain_info", domain="batch")
    assert [lb["guest_type"] for lb, _ in info] == ["pvh"] and info[0][0]["cpupool"] == "batch-pool"
    assert {lb["domain"] for lb, _ in pick(series, "xen_domain_read_error")} == {
        "Domain-0", "web", "db", "batch",
    }  # fmt: skip
    # per host
    assert one(series, "xen_host_pcpus") == 64
    assert one(series, "xen_host_numa_nodes") == 2
    assert one(series, "xen_host_cpupools") == len(host.cpupools)
    assert one(series, "xen_host_info", xen_version="4.17", backend=host.backend) == 1
    assert one(series, "xen_exporter_up") == 1
    assert 0 <= one(series, "xen_exporter_scrape_duration_seconds") < 60
    # every vCPU series carries exactly the four labels (and state / hard, soft)
    for (name, labels), _ in series.items():
        if name.startswith("xen_vcpu_"):
            keys = {k for k, _ in labels} - {"state", "hard", "soft"}
            assert keys == {"domain", "domid", "uuid", "vcpu"}, name


def test_one_batched_snapshot_per_scrape_whatever_the_vcpu_count() -> None:
    """Hypercalls per scrape do not grow with the number of vCPUs: never one per vCPU."""
    counts = {}
    for uri, vcpus in [(DEFAULT, 32), ("sim:///?cpus=256&nodes=4&domains=200&vcpus=8", 1604)]:
        host = connect(uri)
        collector = VcpuCollector(host)
        exposition(collector)  # the first scrape also asks each domain's guest type, once
        ctl(host).advance(1.0)
        before = ctl(host).hypercalls()
        text = exposition(collector)
        used = ctl(host).hypercalls() - before
        assert len(pick(parse(text), "xen_vcpu_online")) == vcpus
        # what a bare snapshot, the cpupools and the online pCPUs cost: nothing per vCPU
        parts = []
        for attr in ("snapshot", "cpupools", "cpus"):
            before = ctl(host).hypercalls()
            got = getattr(host, attr)
            if callable(got):
                got()
            parts.append(ctl(host).hypercalls() - before)
        assert used == sum(parts), (uri, used, parts)
        counts[vcpus] = used
    assert counts[1604] < 1604 / 8  # 8 vCPUs per domain: not even one per domain
    # a per-vCPU loop (what the collector never does) costs at least one per vCPU
    host = connect()
    before = ctl(host).hypercalls()
    for d in host.domains():
        d.vcpus()
    assert ctl(host).hypercalls() - before >= 4 > counts[32] / 8


def test_bit_63_is_masked_where_xen_leaks_it() -> None:
    host = connect("sim:///default?version=4.12")
    ctl(host).leak_runstate_update()
    assert any(t & RUNSTATE_UPDATE for t in host.snapshot().column("cpu_time_ns"))
    series = parse(exposition(VcpuCollector(host)))
    values = [v for _, v in pick(series, "xen_vcpu_cpu_seconds_total")]
    assert len(values) == 32 and max(values) < 1e6  # no 2^63 ns = 292 years


def test_a_domain_unreadable_in_a_scrape_is_flagged_not_fatal() -> None:
    host = connect()
    collector = VcpuCollector(host)
    exposition(collector)
    ctl(host).fail_nth(18, "EIO")  # db's first vCPU read in the next snapshot
    series = parse(exposition(collector))
    assert one(series, "xen_domain_read_error", domain="db") == 1
    assert one(series, "xen_domain_read_error", domain="web") == 0
    assert pick(series, "xen_vcpu_online", domain="db") == []
    assert len(pick(series, "xen_vcpu_online")) == 24 and one(series, "xen_exporter_up") == 1


def test_a_failed_scrape_says_up_0_and_the_next_one_recovers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    host = connect()
    collector = VcpuCollector(host)

    def broken() -> Any:
        raise XenvcpuError("simulated failure", errno=5)

    host.snapshot = broken  # type: ignore[method-assign]
    series = parse(exposition(collector))
    assert one(series, "xen_exporter_up") == 0
    assert {n for n, _ in series} == {"xen_exporter_up", "xen_exporter_scrape_duration_seconds"}
    assert "scrape failed: simulated failure" in capsys.readouterr().err
    del host.snapshot
    assert one(parse(exposition(collector)), "xen_exporter_up") == 1


def test_domains_coming_and_going_between_scrapes() -> None:
    host = connect()
    collector = VcpuCollector(host)
    exposition(collector)
    new = ctl(host).restart_domain("db")
    series = parse(exposition(collector))
    assert pick(series, "xen_vcpu_online", domid="2") == []
    assert len(pick(series, "xen_vcpu_online", domain="db", domid=str(new))) == 8
    # the series restart from zero: a counter reset Prometheus's rate() handles
    assert max(v for _, v in pick(series, "xen_vcpu_cpu_seconds_total", domain="db")) == 0


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("127.0.0.1:9825", ("127.0.0.1", 9825)),
        (":9825", ("0.0.0.0", 9825)),
        ("[::1]:0", ("::1", 0)),
        ("localhost:65535", ("localhost", 65535)),
    ],
)
def test_parse_listen(text: str, want: tuple[str, int]) -> None:
    assert parse_listen(text) == want


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("9825", "expected HOST:PORT"),
        ("127.0.0.1:", "expected HOST:PORT"),
        ("127.0.0.1:http", "expected HOST:PORT"),
        ("127.0.0.1:65536", "above 65535"),
        ("127.0.0.1:123456", "expected HOST:PORT"),
        ("::1:9825", "in brackets"),
        ("127.0.0.1:٣", "expected HOST:PORT"),
    ],
)
def test_parse_listen_rejects(text: str, needle: str) -> None:
    with pytest.raises(ValueError, match=re.escape(needle)):
        parse_listen(text)


# ------------------------------------------------------------------------------ over HTTP


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


@pytest.fixture
def server() -> Iterator[tuple[Host, str]]:
    """The exporter of a frozen default host on a free loopback port, in a thread."""
    host = connect()
    stop = threading.Event()
    bound: list[tuple[str, int]] = []
    ready = threading.Event()

    def on_ready(addr: str, port: int) -> None:
        bound.append((addr, port))
        ready.set()

    t = threading.Thread(
        target=serve, args=(host, ("127.0.0.1", 0)), kwargs={"ready": on_ready, "stop": stop}
    )
    t.start()
    try:
        assert ready.wait(HTTP_TIMEOUT), "the exporter did not start listening"
        addr, port = bound[0]
        yield host, f"http://{addr}:{port}"
    finally:
        stop.set()
        t.join(HTTP_TIMEOUT)
    assert not t.is_alive(), "the exporter did not stop"


def test_scrape_over_http(server: tuple[Host, str]) -> None:
    host, base = server
    status, ctype, body = get(base + "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    series = parse(body)
    assert len(pick(series, "xen_vcpu_online")) == 32
    assert one(series, "xen_vcpu_pcpu", domain="web", vcpu="0") == 2
    before = ctl(host).hypercalls()
    get(base + "/metrics")
    assert ctl(host).hypercalls() - before < 32  # batched over HTTP too
    status, _, body = get(base + "/")
    assert status == 200 and 'href="/metrics"' in body
    status, _, body = get(base + "/nothing")
    assert status == 404 and "/metrics" in body


def test_concurrent_scrapes_are_serialised(server: tuple[Host, str]) -> None:
    _, base = server
    results: list[int] = []

    def scrape() -> None:
        results.append(len(pick(parse(get(base + "/metrics")[2]), "xen_vcpu_online")))

    threads = [threading.Thread(target=scrape) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(HTTP_TIMEOUT)
    assert results == [32] * 4


def test_promtool_check_metrics_is_clean(server: tuple[Host, str]) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("needs promtool (apt-get install prometheus; make deps)")
    _, base = server
    body = get(base + "/metrics")[2]
    p = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.strip() == "" and p.stderr.strip() == ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def promql(web: str, query: str) -> list[Any]:
    doc = json.loads(
        get(f"http://{web}/api/v1/query?" + urllib.parse.urlencode({"query": query}))[2]
    )
    assert doc.get("status") == "success", doc
    result: list[Any] = doc["data"]["result"]
    return result


def test_a_real_prometheus_server_scrapes_it(server: tuple[Host, str], tmp_path: Path) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("needs Prometheus (apt-get install prometheus; make deps)")
    host, base = server
    target = base.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: xenvcpu\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    web = f"127.0.0.1:{free_port()}"
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address={web}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    try:
        query = 'sum by (domain) (xen_vcpu_online{job="xenvcpu"})'
        url = f"http://{web}/api/v1/query?" + urllib.parse.urlencode({"query": query})
        deadline = time.monotonic() + PROMETHEUS_WAIT
        result: list[Any] = []
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                doc = json.loads(get(url)[2])
                result = doc.get("data", {}).get("result", [])
            except (OSError, ValueError):
                result = []
            if len(result) == 4:
                break
            time.sleep(0.5)
        log.flush()
        assert len(result) == 4, (tmp_path / "prometheus.log").read_text()[-3000:]
        online = {r["metric"]["domain"]: float(r["value"][1]) for r in result}
        assert online == {"Domain-0": 4.0, "web": 4.0, "db": 6.0, "batch": 12.0}
        # docs/monitoring.md's queries: running or runnable vCPUs per pCPU ...
        piled = {
            r["metric"]["pcpu"]: float(r["value"][1])
            for r in promql(
                web,
                'count_values("pcpu", xen_vcpu_pcpu and on (domid, vcpu) '
                '(xen_vcpu_state{state=~"running|runnable"} == 1))',
            )
        }
        snap = host.snapshot()
        want: dict[str, float] = {}
        for cpu, st in zip(snap.column("cpu"), snap.column("state")):
            if st in (1, 3):
                want[str(cpu)] = want.get(str(cpu), 0) + 1
        assert piled == want and len(want) == 12
        # ... and vCPUs pinned narrower than the host: web's 0 and 1, db's eight
        narrow = promql(web, 'xen_vcpu_affinity_info{hard!="0-63"}')
        assert sorted((r["metric"]["domain"], r["metric"]["hard"]) for r in narrow) == [
            *[("db", "16-31")] * 8,
            ("web", "2"),
            ("web", "3"),
        ]
        # and the per-vCPU affinity info, as a Grafana table would ask for it
        q2 = 'xen_vcpu_affinity_info{domain="web",vcpu="0"}'
        doc = json.loads(
            get(f"http://{web}/api/v1/query?" + urllib.parse.urlencode({"query": q2}))[2]
        )
        (row,) = doc["data"]["result"]
        assert (row["metric"]["hard"], row["metric"]["soft"]) == ("2", "0-7")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
        log.close()


# ------------------------------------------------------------------------------ the command


def test_exporter_command_serves_and_stops_on_sigterm() -> None:
    env = {k: v for k, v in os.environ.items() if k != "XENVCPU_URI"}
    argv = [sys.executable, "-m", "xenvcpu", "exporter", "-l", "127.0.0.1:0", "-c", DEFAULT]
    with subprocess.Popen(
        argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env
    ) as proc:
        try:
            box: list[str] = []
            stderr = proc.stderr
            assert stderr is not None
            reader = threading.Thread(target=lambda: box.append(stderr.readline()), daemon=True)
            reader.start()
            reader.join(HTTP_TIMEOUT)  # bounded: a silent exporter fails, never hangs
            line = box[0] if box else ""
            m = re.search(r"serving (http://127\.0\.0\.1:\d+/metrics) for sim:///default", line)
            assert m, line
            series = parse(get(m.group(1))[2])
            assert len(pick(series, "xen_vcpu_online")) == 32
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(HTTP_TIMEOUT) == 0
            assert stderr.read() == ""  # no access log, no traceback
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(HTTP_TIMEOUT)


@pytest.mark.parametrize(
    ("argv", "needle", "code"),
    [
        (["exporter", "-l", "nowhere"], "expected HOST:PORT", 2),
        (["exporter", "-l", "127.0.0.1:99999"], "above 65535", 2),
        (["exporter", "-l", "192.0.2.1:0"], "cannot listen on 192.0.2.1:0", 1),
    ],
)
def test_exporter_command_errors(argv: list[str], needle: str, code: int) -> None:
    env = {k: v for k, v in os.environ.items() if k != "XENVCPU_URI"}
    p = subprocess.run(
        [sys.executable, "-m", "xenvcpu", "-c", DEFAULT, *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert (p.returncode, p.stdout) == (code, "")
    assert p.stderr.startswith("xenvcpu: error: ") and needle in p.stderr, p.stderr


def test_names_with_quotes_and_backslashes_survive_the_exposition(tmp_path: Path) -> None:
    toml = tmp_path / "host.toml"
    # TOML escapes: the name is  we"ird\n} name ü  (a quote, a backslash, a brace)
    toml.write_text(
        '[host]\ncpus = 4\n\n[[domain]]\nid = 1\nname = "we\\"ird\\\\n} name ü"\nvcpus = 2\n'
    )
    host = connect(f"sim://{toml}")
    raw = host.domain(1).name
    assert '"' in raw and "\\" in raw
    text = exposition(VcpuCollector(host))
    series = parse(text)
    assert len(pick(series, "xen_vcpu_online", domain=raw)) == 2
    promtool = shutil.which("promtool")
    if promtool is not None:
        p = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
        )
        assert p.returncode == 0, p.stdout + p.stderr


def test_without_prometheus_client_the_exporter_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from xenvcpu import cli
    from xenvcpu.errors import NotSupported

    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails
    with pytest.raises(NotSupported, match=re.escape("pip install 'xenvcpu[exporter]'")):
        VcpuCollector(connect())
    monkeypatch.delenv(cli.URI_ENV, raising=False)
    assert cli.main(["-c", DEFAULT, "exporter", "-l", "127.0.0.1:0"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "xenvcpu[exporter]" in err and err.count("\n") == 1
