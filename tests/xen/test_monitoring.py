"""Monitoring on real Xen: the exporter, `xenvcpu top --once` and `--json` against dom0 and the
PV guest, compared with `xl vcpu-list` and `xl list`.

vCPUs move between pCPUs and accrue CPU time between two readings, so the comparisons are of
what holds still (which vCPUs exist, online or not, affinity, guest type, pool) and of CPU time
bracketed by an `xl vcpu-list` before and one after.
"""

import json
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from typing import Any

import pytest
import xl
from xl import AffinitySaver

import xenvcpu
from xenvcpu.metrics import Sampler

prometheus_client = pytest.importorskip(
    "prometheus_client", reason="the lab's rootfs has python3-prometheus-client (harness.py)"
)
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from xenvcpu.exporter import VcpuCollector  # noqa: E402

WAIT = 120.0  # s: every wait here is bounded (TCG is slow)
Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Series:
    out: Series = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, frozenset(s.labels.items())] = s.value
    return out


def by_vcpu(series: Series, name: str) -> dict[tuple[str, int], tuple[dict[str, str], float]]:
    out = {}
    for (n, labels), value in series.items():
        if n == name:
            lb = dict(labels)
            out[lb["domain"], int(lb["vcpu"])] = (lb, value)
    return out


def scrape_between_xl(collector: Any) -> tuple[list[xl.Vcpu], Series, list[xl.Vcpu]]:
    registry = prometheus_client.CollectorRegistry(auto_describe=False)
    registry.register(collector)
    before = xl.vcpus()
    series = parse(prometheus_client.generate_latest(registry).decode())
    after = xl.vcpus()
    return before, series, after


def test_exporter_matches_xl_vcpu_list(
    guest: str, nr_cpus: int, restore_affinity: AffinitySaver
) -> None:
    restore_affinity.save(guest, 1)
    xl.vcpu_pin(guest, 1, "0-1,3", "1-2")  # something other than "all" to compare
    host = xenvcpu.connect()
    before, series, after = scrape_between_xl(VcpuCollector(host))
    assert series["xen_exporter_up", frozenset()] == 1
    online = by_vcpu(series, "xen_vcpu_online")
    assert set(online) == {(v.name, v.vcpu) for v in before}
    affinity = by_vcpu(series, "xen_vcpu_affinity_info")
    pcpu = by_vcpu(series, "xen_vcpu_pcpu")
    cpu_s = by_vcpu(series, "xen_vcpu_cpu_seconds_total")
    states = {
        (dict(lb)["domain"], int(dict(lb)["vcpu"])): dict(lb)["state"]
        for (n, lb), v in series.items()
        if n == "xen_vcpu_state" and v == 1
    }
    later = {(v.name, v.vcpu): v for v in after}
    for v in before:
        key = (v.name, v.vcpu)
        labels, value = online[key]
        assert labels["domid"] == str(v.domid)
        assert value == (1 if v.online else 0), v
        assert (states[key] == "offline") == (not v.online), (v, states[key])
        hard = affinity[key][0]["hard"]
        soft = affinity[key][0]["soft"]
        assert xl.parse_cpulist(hard, nr_cpus) == v.hard, (v, hard)
        assert xl.parse_cpulist(soft, nr_cpus) == v.soft, (v, soft)
        if v.online:
            assert 0 <= pcpu[key][1] < nr_cpus
        else:
            assert key not in pcpu
        # xl prints CPU time rounded to 0.1 s: ours lies between its two readings
        assert v.time_s - 0.1 <= cpu_s[key][1] <= later[key].time_s + 0.1, (v, cpu_s[key])
    assert affinity[guest, 1][0]["hard"] == "0-1,3" and affinity[guest, 1][0]["soft"] == "1-2"
    doms = {d.name: d for d in xl.domains()}

    def dom_value(name: str, domain: str) -> float:
        (value,) = [v for (n, lb), v in series.items() if n == name and ("domain", domain) in lb]
        return value

    for name, d in doms.items():
        assert dom_value("xen_domain_vcpus_online", name) == d.vcpus  # xl list: online vCPUs
        assert dom_value("xen_domain_read_error", name) == 0
    assert dom_value("xen_domain_vcpus_max", guest) == 4  # maxvcpus=4 in lab/domu.cfg
    (info,) = [dict(lb) for (n, lb) in series if n == "xen_domain_info" and ("domain", guest) in lb]
    assert info["guest_type"] == "pv" and info["cpupool"] == "Pool-0"
    assert series["xen_host_pcpus", frozenset()] == nr_cpus
    assert series["xen_host_info", frozenset({("xen_version", "4.17"), ("backend", "privcmd")})]


def test_exporter_command_over_http(guest: str) -> None:
    cmd = [sys.executable, "-m", "xenvcpu", "exporter", "--listen", "127.0.0.1:0"]
    with subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as p:
        try:
            stderr = p.stderr
            assert stderr is not None
            box: list[str] = []
            reader = threading.Thread(target=lambda: box.append(stderr.readline()), daemon=True)
            reader.start()
            reader.join(WAIT)
            m = re.search(r"serving (http://\S+/metrics) for xen:///system", box[0] if box else "")
            assert m, box
            with urllib.request.urlopen(m.group(1), timeout=WAIT) as r:
                series = parse(r.read().decode())
            expected = {(v.name, v.vcpu) for v in xl.vcpus()}
            assert set(by_vcpu(series, "xen_vcpu_online")) == expected
            p.send_signal(signal.SIGTERM)
            assert p.wait(WAIT) == 0
        finally:
            if p.poll() is None:
                p.kill()
                p.wait(WAIT)


def run_top(*args: str) -> str:
    p = subprocess.run(
        [sys.executable, "-m", "xenvcpu", "top", "--once", "--interval", "1", *args],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env={"COLUMNS": "120", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    assert p.returncode == 0 and p.stderr == "", p.stderr
    return p.stdout


def test_top_json_matches_xl(guest: str, nr_cpus: int) -> None:
    before = {(v.name, v.vcpu): v for v in xl.vcpus()}
    (line,) = run_top("--json").splitlines()
    doc = json.loads(line)
    assert (doc["command"], doc["uri"], doc["masked"]) == ("top", "xen:///system", False)
    assert 0.9 <= doc["interval_s"] <= 30
    seen = set()
    for d in doc["domains"]:
        assert d["status"] == "ok" and d["error"] is None, d
        for v in d["vcpus"]:
            ref = before[d["name"], v["vcpu"]]
            seen.add((d["name"], v["vcpu"]))
            assert (v["state"] == "offline") == (not ref.online), (v, ref)
            assert xl.parse_cpulist(v["hard_affinity"], nr_cpus) == ref.hard
            assert xl.parse_cpulist(v["soft_affinity"], nr_cpus) == ref.soft
            # one vCPU uses at most one pCPU's worth (a little over: the two reads of a
            # sample are not at the same instant)
            assert v["util"] is not None and 0.0 <= v["util"] <= 1.2, v
            if v["state"] == "offline":
                assert v["cpu"] is None
    assert seen == set(before)
    pcpus = [p["cpu"] for p in doc["pcpus"]]
    assert pcpus == list(range(nr_cpus))
    assert sum(p["vcpus"] for p in doc["pcpus"]) == sum(v.online for v in before.values())


def test_top_once_text_shows_every_vcpu(guest: str, nr_cpus: int) -> None:
    out = run_top()
    lines = out.splitlines()
    assert lines[0].startswith("xenvcpu top - xen:///system - Xen 4.17 - ")
    assert f"{nr_cpus} pCPUs" in lines[0]
    assert any(re.match(r"node \d+ +pCPUs ", ln) for ln in lines)
    rows = {m.group(1): m for ln in lines if (m := re.match(r"^ [-+] (\S+) +(\d+) ", ln))}
    vcpus = xl.vcpus()
    assert set(rows) == {v.name for v in vcpus}
    assert int(rows[guest].group(2)) == xl.domid(guest)
    # every vCPU has a row (domains start expanded when they fit, and --once has no window)
    vcpu_rows = [ln for ln in lines if re.match(r"^ {30,}\d+ +(r--|-b-|---|--p) ", ln)]
    assert len(vcpu_rows) == len(vcpus)


def test_sampler_against_xl_cpu_time(guest: str) -> None:
    """Utilisation is CPU time over wall time: a sample's CPU-time deltas add up to what xl's
    CPU-time column moved by, within xl's 0.1 s rounding per vCPU."""
    host = xenvcpu.connect()
    sampler = Sampler(host)
    first = xl.vcpus()
    sampler.sample()
    s = sampler.sample_over(1.0)
    last = xl.vcpus()
    assert s.interval_s is not None and s.interval_s >= 1.0
    moved = sum(b.time_s for b in last) - sum(a.time_s for a in first)
    measured = sum(u * (d.interval_s or 0) for d in s for u in d.vcpu_util if u == u)
    assert measured <= moved + 0.1 * len(last) + 0.05
    assert all(d.status == "ok" for d in s)
