"""``xenvcpu plan / apply / watch`` and the Watcher behind ``watch`` (docs/placement.md),
on the simulated host; the xenstore domain events against a scripted xenstored."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import xenvcpu
import xenvcpu.host
from xenvcpu import cli
from xenvcpu.placement.watch import Event, Watcher, summary

SPEC = '[[domain]]\nmatch = "web"\nhard = "node:0"\nonline = 2\n'
DEFAULT = "sim:///default"


@pytest.fixture(autouse=True)
def _no_env_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cli.URI_ENV, raising=False)


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> Iterator[xenvcpu.Host]:
    """One simulated host that every CLI command of the test connects to."""
    h = xenvcpu.connect(DEFAULT)
    monkeypatch.setattr(xenvcpu.host, "connect", lambda uri=None: h)
    yield h


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    p = tmp_path / "placement.toml"
    p.write_text(SPEC)
    return p


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = cli.main(["--connect", DEFAULT, *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def maps(h: xenvcpu.Host) -> tuple[bytes, bytes, bytes]:
    snap = h.snapshot()
    return snap.maps("hard"), snap.maps("soft"), snap.column("state").tobytes()


# ---- plan --------------------------------------------------------------------------------


def test_plan_exits_2_with_a_diff_then_0_once_applied(
    host: xenvcpu.Host, spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = run(capsys, "plan", str(spec))
    assert rc == 2, err
    assert out.startswith(f"--- {DEFAULT} (now)\n+++ {spec} (wanted)\n@@ web (id ")
    assert "+online: 0-1" in out
    before = maps(host)
    assert maps(host) == before  # plan read only
    rc, out, err = run(capsys, "apply", str(spec))
    assert rc == 0, err
    assert out.startswith(f"applied {spec}: 4 vCPU pins, online vCPUs of web (id ")
    rc, out, err = run(capsys, "plan", str(spec))
    assert (rc, err) == (0, ""), err
    assert "no changes" in out
    web = host.domain("web")
    assert [v.hard_affinity.to_cpulist() for v in web.vcpus()] == ["0-31"] * 4
    assert web.online_vcpus == 2


def test_plan_json_document(host: xenvcpu.Host, spec: Path, capsys: Any) -> None:
    rc, out, _ = run(capsys, "plan", str(spec), "--json")
    assert rc == 2
    doc = json.loads(out)
    assert (doc["schema"], doc["command"], doc["pending"]) == (1, "plan", True)
    (web,) = doc["domains"]
    assert web["name"] == "web" and web["id"] == host.domain("web").id
    assert {"vcpu": None, "key": "online", "current": "0-3", "wanted": "0-1"} in web["changes"]
    assert doc["changes"] == len(web["changes"]) == 5


def test_plan_errors_exit_1_with_one_line(
    host: xenvcpu.Host, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[domain]]\nmatch = "web"\nhard = "0-3,bogus"\n')
    rc, out, err = run(capsys, "plan", str(bad))
    assert (rc, out) == (1, "")
    assert err.count("\n") == 1 and err.startswith("xenvcpu: error: "), err
    assert str(bad) in err and "bogus" in err and "[[domain]] #1" in err
    rc, out, err = run(capsys, "plan", str(tmp_path / "missing.toml"))
    assert rc == 1 and "missing.toml" in err
    # a usage error of plan is 1 too: 2 means "changes pending"
    rc, out, err = run(capsys, "plan")
    assert rc == 1 and "FILE" in err


# ---- apply -------------------------------------------------------------------------------


def test_apply_check_changes_nothing(
    host: xenvcpu.Host, spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = maps(host)
    rc, out, _ = run(capsys, "apply", "--check", str(spec))
    assert rc == 2 and "5 changes pending" in out
    rc, out, _ = run(capsys, "apply", "--check", "--diff", str(spec))
    assert rc == 2 and "+online: 0-1" in out
    rc, out, _ = run(capsys, "apply", "--check", "--json", str(spec))
    doc = json.loads(out)
    assert rc == 2 and doc["check"] is True and doc["applied"] is False and doc["changes"] == 5
    assert maps(host) == before
    assert host.domain("web").online_vcpus == 4


def test_apply_diff_and_json(host: xenvcpu.Host, spec: Path, capsys: Any) -> None:
    rc, out, err = run(capsys, "apply", "--json", str(spec))
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["applied"] is True and doc["result"]["pinned"] == 4
    rc, out, _ = run(capsys, "apply", "--json", "--diff", str(spec))
    doc = json.loads(out)
    assert rc == 0 and doc["applied"] is False and doc["changes"] == 0


def test_apply_failure_rolls_back_and_exits_1(
    host: xenvcpu.Host, spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert host.sim is not None
    before = maps(host)
    host.sim.set_pin_override("web", 3)  # Xen refuses the hard pin of vCPU 3 (EBUSY)
    rc, out, err = run(capsys, "apply", str(spec))
    assert rc == 1 and out == ""
    assert "xenvcpu: rolled back: web (id " in err
    assert err.splitlines()[-1].startswith("xenvcpu: error: ")
    assert maps(host) == before


# ---- the watcher, in process --------------------------------------------------------------


def _watcher(host: xenvcpu.Host, spec: Path, events: list[Event], **kw: Any) -> Watcher:
    return Watcher(lambda: host, str(spec), emit=events.append, **kw)


def test_watcher_corrects_drift_once(host: xenvcpu.Host, spec: Path) -> None:
    events: list[Event] = []
    w = _watcher(host, spec, events)
    (first,) = w.cycle("start")
    assert first["reason"] == "initial" and first["domain"] == "web"
    assert first["message"].startswith("corrected web (id ")
    assert "online: 0-3 -> 0-1" in first["message"]
    assert w.cycle() == []  # nothing drifted: no correction, no line
    host.domain("web").pin_vcpu(1, "40")  # a manual `xl vcpu-pin web 1 40`
    (again,) = w.cycle()
    assert again["reason"] == "drifted"
    assert again["changes"] == [
        {
            "domain": "web",
            "domid": host.domain("web").id,
            "vcpu": 1,
            "key": "hard",
            "current": "40",
            "wanted": "0-31",
        }
    ]
    assert host.domain("web").vcpu(1).hard_affinity.to_cpulist() == "0-31"
    assert w.corrections == 2 and w.passes == 3


def test_watcher_sees_a_domain_come_back_as_appeared(tmp_path: Path) -> None:
    """A domain destroyed and created again (a new domid), as after save/restore."""
    hosttoml = tmp_path / "host.toml"
    hosttoml.write_text(
        '[host]\ncpus = 16\nnodes = 2\n\n[[domain]]\nid = 3\nname = "web"\nvcpus = 2\n'
    )
    h = xenvcpu.connect(f"sim://{hosttoml}")
    spec = tmp_path / "p.toml"
    spec.write_text('[[domain]]\nmatch = "web*"\nhard = "8-15"\n')
    events: list[Event] = []
    w = _watcher(h, spec, events)
    assert [e["reason"] for e in w.cycle()] == ["initial"]
    assert h.sim is not None
    h.sim.remove_domain_at(1, "web")  # gone before the next hypercall
    assert w.cycle() == []
    assert events[-1]["event"] == "warning" and "matches no domain" in events[-1]["message"]
    w.cycle()
    # the same warning is not repeated pass after pass
    assert sum(1 for e in events if e["event"] == "warning") == 1


def test_watcher_leaves_migrating_domains_alone(tmp_path: Path) -> None:
    hosttoml = tmp_path / "host.toml"
    hosttoml.write_text(
        '[host]\ncpus = 16\n\n[[domain]]\nid = 3\nname = "web--incoming"\nvcpus = 2\n'
        '\n[[domain]]\nid = 4\nname = "web2"\nvcpus = 2\n'
    )
    h = xenvcpu.connect(f"sim://{hosttoml}")
    spec = tmp_path / "p.toml"
    spec.write_text('[[domain]]\nmatch = "web*"\nhard = "8-15"\n')
    w = _watcher(h, spec, [])
    assert [e["domain"] for e in w.cycle()] == ["web2"]
    assert h.domain("web--incoming").vcpu(0).hard_affinity.to_cpulist() == "0-15"


def test_watcher_reload_keeps_the_old_spec_on_a_bad_file(host: xenvcpu.Host, spec: Path) -> None:
    events: list[Event] = []
    w = _watcher(host, spec, events)
    spec.write_text("[[domain]]\nmatch = 'web'\nhard = [not toml\n")
    assert w.reload() is False
    assert (
        events[-1]["event"] == "reload-failed"
        and "keeping the previous spec" in events[-1]["message"]
    )
    (c,) = w.cycle()
    assert "0-31" in c["message"]  # still the first spec
    spec.write_text('[[domain]]\nmatch = "web"\nhard = "4-7"\n')
    assert w.reload() is True
    (c,) = w.cycle()
    assert host.domain("web").vcpu(0).hard_affinity.to_cpulist() == "4-7"


def test_watcher_reports_a_failed_apply_and_tries_again(host: xenvcpu.Host, spec: Path) -> None:
    events: list[Event] = []
    w = _watcher(host, spec, events)
    assert host.sim is not None
    before = maps(host)
    host.sim.set_pin_override("web", 3)
    assert w.cycle() == []
    assert events[-1]["event"] == "failed" and events[-1]["rolled_back"]
    assert maps(host) == before
    host.sim.set_pin_override("web", 3, on=False)
    assert len(w.cycle()) == 1  # the next pass succeeds


def test_summary_groups_vcpus(host: xenvcpu.Host) -> None:
    plan = host.plan({"domain": [{"match": "web", "hard": "2"}]})
    (d,) = plan.domains
    # vCPU 0 is already on CPU 2: no change for it
    assert summary(d) == "vCPU 1 hard: 3 -> 2; vCPUs 2-3 hard: 0-63 -> 2"


def test_watcher_run_stops_on_request(host: xenvcpu.Host, spec: Path) -> None:
    events: list[Event] = []
    w = _watcher(host, spec, events, interval=0.05)
    stopper = threading.Timer(1.0, w.request_stop)
    stopper.start()
    try:
        assert w.run() == 0
    finally:
        stopper.cancel()
    assert events[0]["event"] == "started"
    assert events[1]["event"] == "corrected"
    assert events[-1]["event"] == "stopped"
    assert w.passes >= 3  # it kept re-planning every 0.05 s until stopped
    assert w.corrections == 1  # but corrected only once


# ---- the watch command, as a process --------------------------------------------------------


_readers: dict[int, queue.Queue[str | None]] = {}


def _lines(proc: subprocess.Popen[str], n: int, deadline: float) -> list[dict[str, Any]]:
    """The next ``n`` JSON lines of ``proc``, or fewer if it ends or ``deadline`` passes:
    a thread reads, so a watcher that stops printing never hangs the test."""
    q = _readers.get(proc.pid)
    if q is None:
        q = _readers[proc.pid] = queue.Queue()
        stdout = proc.stdout
        assert stdout is not None

        def pump(qq: queue.Queue[str | None] = q) -> None:
            for line in stdout:
                qq.put(line)
            qq.put(None)

        threading.Thread(target=pump, daemon=True).start()
    out: list[dict[str, Any]] = []
    while len(out) < n:
        try:
            line = q.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            break
        if line is None:
            q.put(None)
            break
        out.append(json.loads(line))
    return out


def test_watch_command_sighup_and_sigterm(spec: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "xenvcpu",
            "-c",
            DEFAULT,
            "watch",
            str(spec),
            "--json",
            "--interval",
            "0.2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 60
    try:
        started, corrected = _lines(proc, 2, deadline)
        assert started["event"] == "started" and corrected["event"] == "corrected"
        assert corrected["reason"] == "initial"
        spec.write_text("not = [valid")
        proc.send_signal(signal.SIGHUP)
        (failed,) = _lines(proc, 1, deadline)
        assert failed["event"] == "reload-failed" and str(spec) in failed["message"]
        spec.write_text('[[domain]]\nmatch = "web"\nhard = "4-7"\n')
        proc.send_signal(signal.SIGHUP)
        reloaded, fixed = _lines(proc, 2, deadline)
        assert reloaded["event"] == "reloaded"
        assert fixed["event"] == "corrected" and "-> 4-7" in fixed["message"]
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
        rest = _lines(proc, 100, time.monotonic() + 10)
        assert rc == 0
        assert rest and rest[-1]["event"] == "stopped"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_watch_command_exits_1_for_an_unreadable_file(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "xenvcpu", "-c", DEFAULT, "watch", str(tmp_path / "nope.toml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and r.stdout == ""
    assert "cannot read the placement file" in r.stderr and "nope.toml" in r.stderr


def test_sim_and_xend_toolstacks_have_no_events(host: xenvcpu.Host) -> None:
    assert host.toolstack.domain_events() is None


# ---- the watcher against a host that lasts across processes ---------------------------------


def _corrections(proc: subprocess.Popen[str], n: int, deadline: float) -> list[dict[str, Any]]:
    """The next ``n`` corrections; warnings in between (a domain seen while it sat in a
    pool its placement does not fit) are skipped."""
    out: list[dict[str, Any]] = []
    while len(out) < n and time.monotonic() < deadline:
        got = _lines(proc, 1, deadline)
        if not got:
            break
        if got[0]["event"] == "corrected":
            out.append(got[0])
        else:
            assert got[0]["event"] == "warning", got[0]
    return out


def test_watch_keeps_pins_through_restore_pool_move_and_manual_pin(tmp_path: Path) -> None:
    """The watcher runs in its own process on ``sim:///default?state=PATH``; this process
    restores a domain, moves it between cpupools and pins a vCPU by hand, as an operator
    would with xl; each is put back, and the log says why."""
    uri = f"sim:///default?state={tmp_path / 'host.state'}"
    spec = tmp_path / "placement.toml"
    spec.write_text('[[domain]]\nmatch = "web"\nhard = "8-15"\nsoft = "8-9"\n')
    host = xenvcpu.connect(uri)
    assert host.sim is not None
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "xenvcpu",
            "-c",
            uri,
            "watch",
            str(spec),
            "--json",
            "--interval",
            "0.3",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 120

    def placed(domid: int) -> bool:
        return all(
            (v.hard_affinity.to_cpulist(), v.soft_affinity.to_cpulist()) == ("8-15", "8-9")
            for v in host.domain(domid).vcpus()
        )

    try:
        started, first = _lines(proc, 2, deadline)
        assert started["event"] == "started"
        assert first["reason"] == "initial" and first["domain"] == "web"
        old = first["id"]
        assert placed(old)

        new = host.sim.restore_domain("web")  # xl save + xl restore: a new domid, pins lost
        assert new != old and not placed(new)
        (back,) = _corrections(proc, 1, deadline)
        assert (back["event"], back["id"], back["reason"]) == ("corrected", new, "appeared")
        assert placed(new)

        host.sim.cpupool_migrate("web", "batch-pool")
        host.sim.cpupool_migrate("web", "Pool-0")  # affinity reset to all, twice
        (moved,) = _corrections(proc, 1, deadline)
        assert (moved["id"], moved["reason"]) == (new, "drifted")
        assert placed(new)

        pin = subprocess.run(
            [sys.executable, "-m", "xenvcpu", "-c", uri, "pin", "web", "1", "30"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert pin.returncode == 0, pin.stderr
        (fixed,) = _corrections(proc, 1, deadline)
        assert fixed["reason"] == "drifted"
        assert fixed["changes"] == [
            {
                "domain": "web",
                "domid": new,
                "vcpu": 1,
                "key": "hard",
                "current": "30",
                "wanted": "8-15",
            }
        ]
        assert placed(new)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_a_domain_left_out_for_a_pass_has_not_appeared(host: xenvcpu.Host, tmp_path: Path) -> None:
    """Moved to a cpupool its placement does not fit, the domain is left out (a warning);
    moved back, it is corrected as drifted, not reported as a new domain."""
    spec = tmp_path / "p.toml"
    spec.write_text('[[domain]]\nmatch = "web"\nhard = "8-15"\n')
    events: list[Event] = []
    w = _watcher(host, spec, events)
    assert [e["reason"] for e in w.cycle()] == ["initial"]
    assert host.sim is not None
    host.sim.cpupool_migrate("web", "batch-pool")
    assert w.cycle() == []
    assert events[-1]["event"] == "warning" and "left out" in events[-1]["message"]
    host.sim.cpupool_migrate("web", "Pool-0")
    assert [e["reason"] for e in w.cycle()] == ["drifted"]
