"""The ``xenvcpu`` command, run through ``main([...])`` on simulated hosts."""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Callable

import pytest

import xenvcpu
import xenvcpu.host
from xenvcpu import CpuMap, cli
from xenvcpu.cli import doctor
from xenvcpu.daemon import xenstore

DEFAULT = "sim:///default"
SCALE = "sim:///?cpus=256&nodes=2&domains=5&vcpus=4"

# xl vcpu-list's row: Name ID VCPU CPU State Time(s) Hard / Soft
ROW = re.compile(
    r"(?P<name>\S+)\s+(?P<id>\d+)\s+(?P<vcpu>\d+)\s+(?P<cpu>\d+|-)\s+"
    r"(?P<state>[r-][b-][p-])\s+(?P<time>\d+\.\d)\s+(?P<hard>\S+) / (?P<soft>\S+)"
)


@pytest.fixture(autouse=True)
def _no_env_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cli.URI_ENV, raising=False)


def sim(h: xenvcpu.Host) -> xenvcpu.SimControl:
    """The simulated host's controls (every host here is simulated)."""
    assert h.sim is not None, f"{h.uri} is not a simulated host"
    return h.sim


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    rc, out, err = run(capsys, *argv, "--json")
    assert rc == 0, err
    doc: dict[str, Any] = json.loads(out)
    assert doc["schema"] == 1
    return doc


def assert_one_error_line(rc: int, err: str, *needles: str) -> None:
    assert rc != 0
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("xenvcpu: error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, err)


def expect_map(text: str, host: xenvcpu.Host) -> CpuMap:
    """Read back a map as ``list`` prints it (all / none / cpulist)."""
    if text == "all":
        return host.cpus
    if text == "none":
        return CpuMap(host.max_cpus)
    return CpuMap.parse(text, host.max_cpus)


class Connections(list[xenvcpu.Host]):
    """The Hosts the CLI connected to; ``setups`` run on each before the CLI uses it."""

    def __init__(self) -> None:
        super().__init__()
        self.setups: list[Callable[[xenvcpu.Host], object]] = []


@pytest.fixture
def patched_connect(monkeypatch: pytest.MonkeyPatch) -> Iterator[Connections]:
    """Record the Host the CLI connects to, so a test can set the simulator up first."""
    made = Connections()
    real = xenvcpu.host.connect

    def fake(uri: str | None = None) -> xenvcpu.Host:
        h = real(uri)
        for setup in made.setups:
            setup(h)
        made.append(h)
        return h

    monkeypatch.setattr(xenvcpu.host, "connect", fake)
    yield made


# ---------------------------------------------------------------------------------- host


def test_host_text(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "--connect", DEFAULT, "host")
    assert rc == 0, err
    fields = dict(
        (k.strip(), v.strip())
        for k, _, v in (line.partition(":") for line in out.splitlines() if " : " in line)
    )
    h = xenvcpu.connect(DEFAULT)
    assert fields["xen_version"] == h.xen_version
    assert int(fields["nr_cpus"]) == h.info.nr_cpus == 64
    assert int(fields["max_cpu_id"]) == 63
    assert int(fields["threads_per_core"]) == 2
    assert int(fields["cores_per_socket"]) == 16
    assert int(fields["sockets"]) == 2
    assert int(fields["total_memory"]) == h.info.total_memory_mib
    assert re.search(r"^\s+0\s+0-31$", out, re.M)
    assert re.search(r"^\s+1\s+32-63$", out, re.M)
    assert re.search(r"^\s+Pool-0\s+0\s+credit2\s+3\s+0-47$", out, re.M)
    assert re.search(r"^\s+batch-pool\s+1\s+credit\s+1\s+48-63$", out, re.M)


@pytest.mark.parametrize("uri", [DEFAULT, SCALE])
def test_host_json_matches_api(capsys: pytest.CaptureFixture[str], uri: str) -> None:
    doc = run_json(capsys, "--connect", uri, "host")
    h = xenvcpu.connect(uri)
    info = h.info
    assert doc["command"] == "host"
    assert doc["backend"] == "sim"
    assert doc["nr_cpus"] == info.nr_cpus
    assert doc["max_cpu_id"] == info.max_cpu_id
    assert doc["nr_nodes"] == info.nr_nodes == len(doc["nodes"])
    assert doc["online_cpus"] == h.cpus.to_cpulist()
    for node in doc["nodes"]:
        want = CpuMap.from_cpus(h.topology.node_cpus(node["node"]), h.max_cpus)
        assert node["cpus"] == want.to_cpulist()
    assert doc["cpupools"] == [
        {
            "id": p.id,
            "name": p.name,
            "scheduler": p.scheduler,
            "cpus": p.cpus.to_cpulist(),
            "n_domains": p.n_domains,
        }
        for p in h.cpupools
    ]


def test_host_scale_values(capsys: pytest.CaptureFixture[str]) -> None:
    doc = run_json(capsys, "--connect", SCALE, "host")
    assert doc["nr_cpus"] == 256
    assert [n["cpus"] for n in doc["nodes"]] == ["0-127", "128-255"]


# ---------------------------------------------------------------------------------- list


def test_list_text_is_xl_compatible(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "--connect", DEFAULT, "list")
    assert rc == 0, err
    lines = out.splitlines()
    # xl vcpu-list's header, byte for byte
    assert lines[0] == (
        "Name                                ID  VCPU   CPU State   Time(s) Affinity (Hard / Soft)"
    )
    h = xenvcpu.connect(DEFAULT)
    want = {(d.domain.name, v.number): (d.domain, v) for d in h.snapshot() for v in d.vcpus}
    rows = [ROW.fullmatch(line) for line in lines[1:]]
    assert all(rows), lines
    assert len(rows) == len(want) == 4 + 4 + 8 + 16
    for m in rows:
        assert m is not None
        dom, v = want[(m["name"], int(m["vcpu"]))]
        assert int(m["id"]) == dom.id
        if v.online:
            assert m["cpu"] == str(v.cpu)
            assert m["state"] == (("r" if v.running else "-") + ("b" if v.blocked else "-") + "-")
        else:
            assert (m["cpu"], m["state"]) == ("-", "--p")
        assert abs(float(m["time"]) - v.cpu_time_ns / 1e9) < 5
        assert expect_map(m["hard"], h) == v.hard_affinity
        assert expect_map(m["soft"], h) == v.soft_affinity
    # spot checks against what sim:///default is known to hold
    assert re.search(r"^web\s+1\s+0\s+2\s+---\s+\d+\.\d  2 / 0-7$", out, re.M)
    assert re.search(r"^db\s+2\s+6\s+-\s+--p\s+\d+\.\d  16-31 / all$", out, re.M)
    assert re.search(r"^Domain-0\s+0\s+0\s+0\s+r--\s+\d+\.\d  all / all$", out, re.M)


def test_list_json_matches_api(capsys: pytest.CaptureFixture[str]) -> None:
    doc = run_json(capsys, "--connect", DEFAULT, "list")
    assert doc["command"] == "list"
    h = xenvcpu.connect(DEFAULT)
    snap = h.snapshot()
    assert [d["name"] for d in doc["domains"]] == [s.domain.name for s in snap]
    for d, s in zip(doc["domains"], snap):
        assert d["id"] == s.domain.id
        assert d["uuid"] == s.domain.uuid
        assert d["max_vcpus"] == s.domain.max_vcpus
        assert d["error"] is None
        assert len(d["vcpus"]) == len(s.vcpus)
        for jv, v in zip(d["vcpus"], s.vcpus):
            assert jv["vcpu"] == v.number
            assert jv["state"] == v.state.name.lower()
            assert jv["online"] is v.online
            assert jv["cpu"] == (v.cpu if v.online else None)
            assert jv["hard_affinity"] == v.hard_affinity.to_cpulist()
            assert jv["soft_affinity"] == v.soft_affinity.to_cpulist()
            assert isinstance(jv["cpu_time_ns"], int)
            assert isinstance(jv["time_s"], float)
    offline = [v for v in doc["domains"][2]["vcpus"] if not v["online"]]
    assert [(v["vcpu"], v["state_xl"], v["cpu"]) for v in offline] == [
        (6, "--p", None),
        (7, "--p", None),
    ]


def test_list_all_domains_uses_one_snapshot(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = xenvcpu.host.Host.snapshot

    def counting(self: xenvcpu.Host) -> Sequence[xenvcpu.DomainVcpus]:
        calls.append(1)
        return real(self)

    def forbidden(self: xenvcpu.Domain) -> list[xenvcpu.VcpuInfo]:
        raise AssertionError("list without DOMAIN must not read domains one by one")

    monkeypatch.setattr(xenvcpu.host.Host, "snapshot", counting)
    monkeypatch.setattr(xenvcpu.host.Domain, "vcpus", forbidden)
    rc, out, err = run(capsys, "--connect", SCALE, "list")
    assert rc == 0, err
    assert calls == [1]
    assert len(out.splitlines()) == 1 + 6 * 4


def test_list_named_domains_by_name_and_id(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "--connect", DEFAULT, "list", "web", "2")
    assert rc == 0, err
    names = [line.split()[0] for line in out.splitlines()[1:]]
    assert names == ["web"] * 4 + ["db"] * 8


def test_list_scale_json(capsys: pytest.CaptureFixture[str]) -> None:
    doc = run_json(capsys, "--connect", SCALE, "list")
    assert len(doc["domains"]) == 6
    assert all(len(d["vcpus"]) == 4 for d in doc["domains"])


def test_list_snapshot_error_exits_nonzero(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = xenvcpu.host.Host.snapshot

    def broken(self: xenvcpu.Host) -> Sequence[xenvcpu.DomainVcpus]:
        rows = real(self)
        err = xenvcpu.errors.DomainNotFound("domain 2 vanished", domain=2)
        return [r._replace(vcpus=[], error=err) if r.domain.id == 2 else r for r in rows]

    monkeypatch.setattr(xenvcpu.host.Host, "snapshot", broken)
    rc, out, err = run(capsys, "--connect", DEFAULT, "list")
    assert_one_error_line(rc, err, "db", "vanished")
    assert "web " in out  # the other domains are still listed
    assert not re.search(r"^db ", out, re.M)


# ----------------------------------------------------------------------------------- pin


def test_pin_one_vcpu(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "--connect", DEFAULT, "pin", "web", "1", "0-7", "4-5")
    assert (rc, err) == (0, "")
    assert out == "web (1) vCPU 1: hard 0-7; soft 4-5\n"


def test_pin_json_matches_api(capsys: pytest.CaptureFixture[str]) -> None:
    doc = run_json(capsys, "--connect", DEFAULT, "pin", "db", "3", "16-19", "-")
    assert doc["domain"] == {"name": "db", "id": 2}
    assert doc["pins"] == [
        {
            "vcpu": 3,
            "requested_hard": "16-19",
            "requested_soft": None,
            "hard": "16-19",
            "soft": None,
            "narrowed": False,
        }
    ]
    assert doc["warnings"] == []


def test_pin_narrowed_prints_requested_and_effective(capsys: pytest.CaptureFixture[str]) -> None:
    # batch is in batch-pool (CPUs 48-63): Xen keeps 48-55 of the hard map, and the
    # soft map 0-7 has nothing left inside the hard one.
    rc, out, err = run(capsys, "--connect", DEFAULT, "pin", "batch", "0", "40-55", "0-7")
    assert rc == 0
    assert out == (
        "batch (3) vCPU 0: hard requested 40-55, effective 48-55; "
        "soft requested 0-7, effective none\n"
    )
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("xenvcpu: warning: "), err
    assert "40-55 -> 48-55" in lines[0]

    with pytest.warns(xenvcpu.AffinityNarrowed):  # the same pin through the API
        p = xenvcpu.connect(DEFAULT).domain("batch").pin_vcpu(0, hard="40-55", soft="0-7")
    doc = run_json(capsys, "--connect", DEFAULT, "pin", "batch", "0", "40-55", "0-7")
    (pin,) = doc["pins"]
    assert pin["narrowed"] is True
    assert p.hard is not None and p.soft is not None
    assert (pin["hard"], pin["soft"]) == (p.hard.to_cpulist(), p.soft.to_cpulist()) == ("48-55", "")
    assert len(doc["warnings"]) == 1


def test_pin_all(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "--connect", DEFAULT, "pin", "web", "all", "node:0")
    assert (rc, err) == (0, "")
    assert out.splitlines() == [f"web (1) vCPU {n}: hard 0-31; soft unchanged" for n in range(4)]
    doc = run_json(capsys, "--connect", DEFAULT, "pin", "db", "all", "-", "all")
    assert [p["vcpu"] for p in doc["pins"]] == list(range(8))
    assert all(p["soft"] == "16-31" and p["narrowed"] for p in doc["pins"])


def test_pin_all_partial_failure_exits_nonzero(
    capsys: pytest.CaptureFixture[str], patched_connect: Connections
) -> None:
    patched_connect.setups.append(lambda h: sim(h).set_pin_override(1, 2, True))
    rc, out, err = run(capsys, "--connect", DEFAULT, "pin", "web", "all", "0-3")
    assert_one_error_line(rc, err, "vCPU 2")
    assert out == ""
    # the other vCPUs were pinned all the same (xl would exit 0 here; we do not)
    (h,) = patched_connect
    assert [v.hard_affinity.to_cpulist() for v in h.domain("web").vcpus()] == [
        "0-3",
        "0-3",
        "0-63",
        "0-3",
    ]


def test_pin_busy_then_force(
    capsys: pytest.CaptureFixture[str], patched_connect: Connections
) -> None:
    patched_connect.setups.append(lambda h: sim(h).set_pin_override(1, 0, True))
    rc, _, err = run(capsys, "--connect", DEFAULT, "pin", "web", "0", "5")
    assert_one_error_line(rc, err, "force")
    rc, out, err = run(capsys, "--connect", DEFAULT, "pin", "web", "0", "5", "--force")
    assert (rc, err) == (0, "")
    assert out == "web (1) vCPU 0: hard 5; soft unchanged\n"


@pytest.mark.parametrize(
    ("argv", "needles", "code"),
    [
        (["pin", "nosuch", "0", "1"], ["nosuch", "known domains"], 1),
        (["pin", "99", "0", "1"], ["99"], 1),
        (["list", "web", "nosuch"], ["nosuch"], 1),
        (["pin", "web", "9", "1"], ["no vCPU 9", "0-3"], 1),
        (["pin", "web", "-1", "1"], ["no vCPU -1"], 1),
        (["pin", "web", "one", "1"], ["invalid vCPU 'one'"], 2),
        (["pin", "web", "0", "0-100"], ["CPU 100 is out of range"], 1),
        (["pin", "web", "0", "zero"], ["invalid cpulist"], 1),
        (["pin", "web", "0", "1", "x-"], ["invalid cpulist"], 1),
        (["pin", "web", "0", ""], ["hard affinity is empty"], 1),
        (["pin", "web", "0", "-", "-"], ["nothing to change"], 2),
        (["pin", "batch", "0", "0-7"], ["48-63"], 1),
        (["set", "web", "-1"], ["valid range is 1..4"], 1),
        (["set", "web", "0"], ["valid range is 1..4"], 1),
        (["set", "web", "5"], ["valid range is 1..4"], 1),
        (["set", "web", "0,7"], ["out of range"], 1),
        (["set", "nosuch", "1"], ["nosuch"], 1),
        (["set", "db", "2"], ["HVM", "run_dir"], 1),
        (["set", "web", "2", "--wait", "--timeout", "-1"], ["--timeout"], 2),
        (["pin", "web"], ["required"], 2),
        (["frobnicate"], ["invalid choice"], 2),
        ([], ["required"], 2),
    ],
)
def test_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], needles: list[str], code: int
) -> None:
    rc, out, err = run(capsys, "--connect", DEFAULT, *argv)
    assert_one_error_line(rc, err, *needles)
    assert rc == code
    assert out == ""


def test_failed_pin_changes_nothing(
    capsys: pytest.CaptureFixture[str], patched_connect: Connections
) -> None:
    rc, _, err = run(capsys, "--connect", DEFAULT, "pin", "web", "0", "0-3", "0-100")
    assert_one_error_line(rc, err, "100")
    (h,) = patched_connect
    assert h.domain("web").vcpu(0).hard_affinity.to_cpulist() == "2"


# ----------------------------------------------------------------------------------- set


def test_set_count_wait(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "--connect", DEFAULT, "set", "web", "2", "--wait", "--timeout", "10")
    assert (rc, err) == (0, "")
    assert out.splitlines() == [
        "web (1): asked vCPU 0-1 online (2 of 4)",
        "web (1): online now: vCPU 0-1 (the guest followed)",
    ]


def test_set_list_wait_json(capsys: pytest.CaptureFixture[str]) -> None:
    doc = run_json(capsys, "--connect", SCALE, "set", "guest-2", "0,2-3", "--wait")
    assert doc["domain"] == {"name": "guest-2", "id": 2}
    assert (doc["requested"], doc["requested_count"], doc["max_vcpus"]) == ("0,2-3", 3, 4)
    assert (doc["online"], doc["online_count"], doc["waited"]) == ("0,2-3", 3, True)


def test_set_count_no_wait_json(
    capsys: pytest.CaptureFixture[str], patched_connect: Connections
) -> None:
    doc = run_json(capsys, "--connect", DEFAULT, "set", "web", "1")
    assert (doc["requested"], doc["waited"]) == ("0", False)
    (h,) = patched_connect
    assert h.toolstack.availability(1) == {0: True, 1: False, 2: False, 3: False}


def test_set_wait_times_out(
    capsys: pytest.CaptureFixture[str], patched_connect: Connections
) -> None:
    patched_connect.setups.append(lambda h: sim(h).set_follow(None))  # a guest that ignores us
    rc, out, err = run(
        capsys, "--connect", DEFAULT, "set", "web", "1", "--wait", "--timeout", "0.2"
    )
    assert_one_error_line(rc, err, "did not follow", "vCPU 1-3")
    assert out == ""


# -------------------------------------------------------------------------------- doctor


@pytest.mark.skipif(
    any(os.path.exists(p) for p in doctor.PRIVCMD_NODES), reason="this machine runs Xen"
)
def test_doctor_without_xen(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "doctor")
    assert rc == 1
    assert "only sim:/// URIs work" in out
    assert_one_error_line(rc, err, "only sim:/// URIs work")
    assert re.search(r"^  pinning\s+-> NONE", out, re.M)
    assert "/dev/xen/privcmd: does not exist" in out
    doc = json.loads(run(capsys, "doctor", "--json")[1])
    assert doc["schema"] == 1 and doc["usable"] is False
    assert {o["operation"] for o in doc["operations"]} == {
        "host info",
        "vCPU info",
        "pinning",
        "online vCPU count",
        "legacy hosts (Xen <= 4.4)",
    }
    assert all(o["backend"] is None for o in doc["operations"])
    native = [c for c in doc["checks"] if c["name"] == "native module"]
    assert native[0]["ok"] is True


def test_doctor_sim_serves_everything(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "--connect", DEFAULT, "doctor")
    assert (rc, err) == (0, "")
    for op in ("host info", "vCPU info", "pinning", "online vCPU count"):
        assert re.search(rf"^  {op}\s+-> sim: ", out, re.M), out
    doc = run_json(capsys, "doctor", "--connect", DEFAULT)  # --connect after the command
    assert doc["usable"] is True and doc["uri"] == DEFAULT
    assert {o["backend"] for o in doc["operations"]} == {"sim"}


def test_doctor_bad_sim_uri(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "--connect", "sim:///no/such/host.toml", "doctor")
    assert_one_error_line(rc, err, "cannot be used")
    assert "-> NONE" in out


def _fake_xenstored(srv: socket.socket) -> None:
    """Answer one GET_DOMAIN_PATH on the first connection, as xenstored does (xen-interfaces.md
    §5.2)."""
    conn, _ = srv.accept()
    with conn:
        head = b""
        while len(head) < 16:
            head += conn.recv(16 - len(head))
        op, req_id, tx_id, length = struct.unpack("<4I", head)
        while length:
            length -= len(conn.recv(length))
        body = b"/local/domain/0\0"
        conn.sendall(struct.pack("<4I", op, req_id, tx_id, len(body)) + body)


def test_doctor_finds_xenstore_socket(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = str(tmp_path / "xs.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as srv:
        srv.bind(path)
        srv.listen(4)
        server = threading.Thread(target=_fake_xenstored, args=(srv,), daemon=True)
        server.start()
        monkeypatch.setenv("XENSTORED_PATH", path)
        monkeypatch.setattr(doctor, "PRIVCMD_NODES", (str(tmp_path / "privcmd"),))
        doc = run_json(capsys, "doctor")
        server.join(10)
    ops = {o["operation"]: o for o in doc["operations"]}
    assert ops["online vCPU count"]["backend"] == "xenstore"
    assert path in ops["online vCPU count"]["why"]
    assert ops["pinning"]["backend"] is None
    assert doc["usable"] is True
    (xs,) = [c for c in doc["checks"] if c["name"] == "xenstore"]
    assert (xs["path"], xs["ok"]) == (path, True)


def test_doctor_silent_socket_is_not_xenstore(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = str(tmp_path / "mute.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as srv:
        srv.bind(path)
        srv.listen(4)  # accepts connections, never answers
        monkeypatch.setenv("XENSTORED_PATH", path)
        monkeypatch.setattr(doctor, "PRIVCMD_NODES", (str(tmp_path / "privcmd"),))
        asked: list[float] = []
        real_probe = xenstore.probe_endpoints

        def probe_endpoints(timeout: float) -> Any:
            asked.append(timeout)
            return real_probe(timeout=timeout)

        monkeypatch.setattr(doctor, "probe_endpoints", probe_endpoints)
        rc, out, err = run(capsys, "doctor", "--timeout", "0.2")
    assert asked == [0.2]  # the wait given, not the 1 s default
    assert_one_error_line(rc, err, "no backend can serve")
    assert re.search(r"^  online vCPU count\s+-> NONE", out, re.M)


def test_doctor_timeout_is_checked(capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("0", "-1", "nan", "inf", "86401"):
        rc, _, err = run(capsys, "--connect", DEFAULT, "doctor", "--timeout", bad)
        assert_one_error_line(rc, err, "timeout")
    rc, _, err = run(capsys, "--connect", DEFAULT, "doctor", "--timeout", "30")
    assert (rc, err) == (0, "")


def test_doctor_stale_socket_and_privcmd_needs_root(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stale = str(tmp_path / "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(stale)
    s.close()  # the socket file stays, nobody listens
    privcmd = tmp_path / "privcmd"
    privcmd.write_bytes(b"")
    real_open = os.open

    def deny(path: Any, flags: int, *a: Any) -> int:
        if str(path) == str(privcmd):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *a)

    monkeypatch.setenv("XENSTORED_PATH", stale)
    monkeypatch.setattr(doctor, "PRIVCMD_NODES", (str(privcmd),))
    monkeypatch.setattr(os, "open", deny)
    rc, out, err = run(capsys, "doctor")
    assert_one_error_line(rc, err, "no backend can serve")
    assert f"privcmd {privcmd}: present but not openable: permission denied (needs root)" in out
    assert "stale socket" in out


def test_doctor_privcmd_opens_but_no_hypervisor(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = tmp_path / "privcmd"
    fake.write_bytes(b"")
    monkeypatch.setattr(doctor, "PRIVCMD_NODES", (str(fake),))
    monkeypatch.setenv("XENSTORED_PATH", str(tmp_path / "none"))
    rc, out, _ = run(capsys, "doctor", "--json")
    doc = json.loads(out)
    assert rc == 1 and doc["usable"] is False
    ops = {o["operation"]: o for o in doc["operations"]}
    why = ops["host info"]["not_used"][0]["why"]
    assert "privcmd opens but the hypervisor does not answer" in why


# ---------------------------------------------------------------------------- URI, JSON


def test_uri_from_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(cli.URI_ENV, SCALE)
    doc = run_json(capsys, "host")
    assert doc["uri"] == SCALE and doc["nr_cpus"] == 256
    # --connect wins over the environment
    doc = run_json(capsys, "--connect", DEFAULT, "host")
    assert doc["nr_cpus"] == 64


@pytest.mark.skipif(
    any(os.path.exists(p) for p in doctor.PRIVCMD_NODES), reason="this machine runs Xen"
)
def test_no_uri_without_xen_names_sim(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "list")
    assert_one_error_line(rc, err, "sim:///default")
    assert out == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["host"],
        ["list"],
        ["list", "web"],
        ["pin", "web", "0", "1"],
        ["set", "web", "2"],
        ["doctor"],
        ["cpumap", "0-3", "--width", "8"],
    ],
)
def test_json_before_or_after_the_command(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    rc, before, err = run(capsys, "--json", "--connect", DEFAULT, *argv)
    assert rc == 0, err
    after = run_json(capsys, "--connect", DEFAULT, *argv)
    doc = json.loads(before)
    assert doc["schema"] == after["schema"] == 1
    assert doc["command"] == after["command"] == argv[0]
    assert set(doc) == set(after)


# -------------------------------------------------------------------------------- cpumap


def test_cpumap_text_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "cpumap", "0-3,^2,9", "--width", "16")
    assert rc == 0
    assert out.splitlines() == [
        "width:   16",
        "cpulist: 0-1,3,9",
        "count:   4",
        "bytes:   0b02  (little-endian: CPU0-7 in the first byte)",
    ]
    doc = run_json(capsys, "cpumap", "0b02", "--hex")
    assert (doc["width"], doc["cpulist"], doc["cpus"], doc["count"]) == (
        16,
        "0-1,3,9",
        [0, 1, 3, 9],
        4,
    )


def test_cpumap_errors(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(capsys, "cpumap", "0-3")
    assert_one_error_line(rc, err, "--width")
    assert rc == 2
    rc, _, err = run(capsys, "cpumap", "0-9", "--width", "8")
    assert_one_error_line(rc, err, "out of range")
    rc, _, err = run(capsys, "cpumap", "zz", "--hex")
    assert_one_error_line(rc, err, "hex")


# ---------------------------------------------------------------------- installed command


def test_console_script_and_module(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != cli.URI_ENV}
    script = Path(sys.executable).with_name("xenvcpu")
    cmds = [[sys.executable, "-m", "xenvcpu"]]
    if script.exists():
        cmds.append([str(script)])
    for cmd in cmds:
        p = subprocess.run(
            [*cmd, "--connect", DEFAULT, "list", "db"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert p.returncode == 0, p.stderr
        assert len(p.stdout.splitlines()) == 1 + 8
        p = subprocess.run(
            [*cmd, "--connect", DEFAULT, "pin", "web", "0", "0-100"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert p.returncode == 1
        assert p.stderr.count("\n") == 1 and p.stderr.startswith("xenvcpu: error: ")


# The field sets docs/cli.md documents for schema 1: a change here is a schema change.
DOCUMENTED = {
    "host": {
        "schema", "command", "uri", "backend", "xen_version", "nr_cpus", "max_cpu_id",
        "online_cpus", "threads_per_core", "cores_per_socket", "sockets", "nr_nodes",
        "cpu_mhz", "total_memory_mib", "free_memory_mib", "nodes", "cpupools",
    },
    "list": {"schema", "command", "uri", "domains"},
    "pin": {"schema", "command", "uri", "domain", "force", "pins", "warnings"},
    "set": {
        "schema", "command", "uri", "domain", "max_vcpus", "requested", "requested_count",
        "waited", "online", "online_count",
    },
    "doctor": {"schema", "command", "uri", "checks", "operations", "usable", "verdict"},
    "cpumap": {"schema", "command", "width", "cpulist", "cpus", "count", "bytes_hex"},
}  # fmt: skip


def test_json_fields_are_the_documented_ones(capsys: pytest.CaptureFixture[str]) -> None:
    docs = {
        "host": run_json(capsys, "-c", DEFAULT, "host"),
        "list": run_json(capsys, "-c", DEFAULT, "list", "db"),
        "pin": run_json(capsys, "-c", DEFAULT, "pin", "db", "0", "16"),
        "set": run_json(capsys, "-c", DEFAULT, "set", "web", "3"),
        "doctor": run_json(capsys, "-c", DEFAULT, "doctor"),
        "cpumap": run_json(capsys, "cpumap", "1", "--width", "4"),
    }
    for command, doc in docs.items():
        assert set(doc) == DOCUMENTED[command], command
    dom = docs["list"]["domains"][0]
    assert set(dom) == {
        "name",
        "id",
        "uuid",
        "max_vcpus",
        "cpupool",
        "guest_type",
        "vcpus",
        "error",
    }
    assert set(dom["vcpus"][0]) == {
        "vcpu", "state", "state_xl", "online", "cpu", "time_s", "cpu_time_ns",
        "hard_affinity", "soft_affinity",
    }  # fmt: skip
    assert set(docs["pin"]["pins"][0]) == {
        "vcpu", "requested_hard", "requested_soft", "hard", "soft", "narrowed",
    }  # fmt: skip
    op = docs["doctor"]["operations"][0]
    assert set(op) == {"operation", "backend", "why", "not_used"}
    assert set(docs["doctor"]["checks"][0]) == {"name", "path", "ok", "detail"}
    text = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    for fields in DOCUMENTED.values():
        for f in fields:
            assert f"`{f}`" in text, f


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "--help")
    assert rc == 0
    for command in ("host", "list", "pin", "set", "doctor", "cpumap", "XENVCPU_URI"):
        assert command in out
    rc, out, _ = run(capsys, "pin", "--help")
    assert rc == 0 and "DOMAIN VCPU HARD [SOFT]" in out
    rc, out, _ = run(capsys, "--version")
    assert (rc, out) == (0, f"xenvcpu {xenvcpu.__version__}\n")
