"""What breaks a tool's pins on the simulated host (save + restore, cpupool-migrate, a CPU
taken out of a pool), and simulated hosts that last in a state file (``state=PATH``), seen
by several processes at once: the CLI run after run, another Python process, this one."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import xenvcpu
from xenvcpu import Host, SimControl
from xenvcpu.errors import AffinityBusy, DomainNotFound, InvalidUri, XenvcpuError
from xenvcpu.uri import parse

CLI = Path(sys.executable).with_name("xenvcpu")


def ctl(h: Host) -> SimControl:
    assert h.sim is not None
    return h.sim


def hard(h: Host, dom: str) -> list[str]:
    return [str(v.hard_affinity) for v in h.domain(dom).vcpus()]


def soft(h: Host, dom: str) -> list[str]:
    return [str(v.soft_affinity) for v in h.domain(dom).vcpus()]


@pytest.fixture
def host() -> Host:
    h = xenvcpu.connect("sim:///default")
    ctl(h).freeze_clock()
    return h


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "host.state"


def lasting(state: Path, base: str = "sim:///default") -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}state={state}"


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=120, check=False)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def python(code: str, *args: str) -> str:
    r = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


# ---- save + restore --------------------------------------------------------------------


def test_restore_gives_a_new_domid_and_the_creation_affinity(host: Host) -> None:
    web = host.domain("web")
    uuid = web.info().uuid
    assert hard(host, "web") == ["2", "3", "0-63", "0-63"]
    web.pin_all(hard="40-41", soft="40")
    web.set_vcpus(2)
    old_id = web.id

    new_id = ctl(host).restore_domain("web")
    assert new_id == 4, "above every domid used so far (db 2, batch 3)"
    with pytest.raises(DomainNotFound):
        web.info()  # the old domid is gone
    back = host.domain("web")
    assert back.id == new_id != old_id
    assert back.info().uuid == uuid
    assert hard(host, "web") == ["2", "3", "0-63", "0-63"]
    assert soft(host, "web") == ["0-7"] * 4
    assert back.info().online_vcpus == 4
    # by id or Domain too, each time a new domid
    assert ctl(host).restore_domain(back) == 5
    assert ctl(host).restore_domain(5) == 6
    assert [d.name for d in host.domains()].count("web") == 1


def test_a_vanished_domain_is_restored_by_name(host: Host) -> None:
    ctl(host).remove_domain_at(1, "db")
    with pytest.raises(DomainNotFound):
        host.domain("db").info()
    assert ctl(host).restore_domain("db") == 4
    assert hard(host, "db") == ["16-31"] * 8
    assert host.domain("db").info().online_vcpus == 6


def test_restore_refusals_are_typed(host: Host) -> None:
    with pytest.raises(DomainNotFound, match=r"nobody.*known domains: .*web \(1\)"):
        ctl(host).restore_domain("nobody")
    with pytest.raises(DomainNotFound, match="no domain with id 42"):
        ctl(host).restore_domain(42)
    with pytest.raises(XenvcpuError, match="control domain"):
        ctl(host).restore_domain("Domain-0")
    with pytest.raises(ValueError):
        ctl(host).restore_domain("")


# ---- cpupool-migrate and cpupool-cpu-remove ----------------------------------------------


def test_cpupool_migrate_resets_affinity_to_all(host: Host) -> None:
    db = host.domain("db")
    db.pin_vcpu(0, hard="16-17", soft="17")
    ctl(host).cpupool_migrate("db", "batch-pool")
    assert db.info().cpupool == 1
    assert hard(host, "db") == ["0-63"] * 8
    assert soft(host, "db") == ["0-63"] * 8
    assert all(48 <= (v.cpu or 0) <= 63 for v in db.vcpus() if v.online)
    # and back, by pool id: reset again
    db.pin_vcpu(0, hard="50")
    ctl(host).cpupool_migrate(db, 0)
    assert db.info().cpupool == 0
    assert hard(host, "db")[0] == "0-63"


def test_cpupool_migrate_refusals_are_typed(host: Host) -> None:
    with pytest.raises(XenvcpuError, match="0 \\(Pool-0\\), 1 \\(batch-pool\\)") as e:
        ctl(host).cpupool_migrate("web", "nowhere")
    assert e.value.errno == errno.ENOENT
    with pytest.raises(XenvcpuError, match="no cpupool 7") as e:
        ctl(host).cpupool_migrate("web", 7)
    assert e.value.errno == errno.ENOENT
    with pytest.raises(DomainNotFound):
        ctl(host).cpupool_migrate(99, 1)
    ctl(host).set_pin_override("web", 3)
    with pytest.raises(AffinityBusy) as busy:
        ctl(host).cpupool_migrate("web", 1)
    assert (busy.value.domain, busy.value.vcpu) == (1, 3)
    assert host.domain("web").info().cpupool == 0, "refused: nothing moved"
    with pytest.raises(TypeError):
        ctl(host).cpupool_migrate("web", 1.0)  # type: ignore[arg-type]


def test_removing_a_pool_cpu_breaks_the_pins_tied_to_it(host: Host) -> None:
    batch = host.domain("batch")
    batch.pin_vcpu(0, hard="60", soft="60")
    batch.pin_vcpu(1, hard="60-61")
    ctl(host).pool_remove_cpu("batch-pool", 60)
    h = hard(host, "batch")
    assert h[0] == "0-63", "no CPU of the pool left: reset to all"
    assert h[1] == "60-61", "61 is still in the pool: kept"
    assert soft(host, "batch")[0] == "60", "soft affinity is kept"
    assert 60 not in host.cpupools[1].cpus
    with pytest.raises(XenvcpuError, match="not in this pool") as e:
        ctl(host).pool_remove_cpu(1, 60)
    assert e.value.errno == errno.EADDRNOTAVAIL
    with pytest.raises(xenvcpu.errors.CpuListError, match="out of range"):
        ctl(host).pool_remove_cpu(1, 64)


# ---- URIs --------------------------------------------------------------------------------


def test_state_is_a_uri_parameter_of_every_sim_uri(tmp_path: Path) -> None:
    for base in ("sim:///default", "sim:///?cpus=8&domains=2", "sim:///h.toml"):
        u = parse(lasting(tmp_path / "s", base))
        assert u.sim_state == str(tmp_path / "s")
        assert "state" not in u.params
    assert parse("sim:///default").sim_state is None
    for bad in ("state=rel/path", "state=/tmp/dir/", "state="):
        with pytest.raises(InvalidUri, match="absolute path"):
            parse(f"sim:///default?{bad}")
    with pytest.raises(InvalidUri):
        parse(f"xen:///system?state={tmp_path / 's'}")
    with pytest.raises(XenvcpuError, match=r'unknown sim host parameter "stat".*state='):
        xenvcpu.connect(f"sim:///default?stat={tmp_path / 's'}")


def test_a_host_in_memory_has_no_state_path(host: Host, state: Path) -> None:
    assert ctl(host).state_path is None
    h = xenvcpu.connect(lasting(state))
    assert ctl(h).state_path == str(state)
    assert state.is_file(), "a missing state file is made from the description"


# ---- one host across processes -------------------------------------------------------------


def test_cli_runs_and_processes_see_one_host(state: Path) -> None:
    uri = lasting(state)
    cli("--connect", uri, "pin", "web", "0", "5", "6")
    listed = json.loads(cli("--connect", uri, "--json", "list", "web").stdout)
    assert "5" in json.dumps(listed) and "6" in json.dumps(listed)
    # this process sees the CLI's pin
    h = xenvcpu.connect(uri)
    assert hard(h, "web")[0] == "5"
    assert soft(h, "web")[0] == "6"
    # what Host.sim does here, another process sees: a restore, a pool move
    new_id = ctl(h).restore_domain("web")
    ctl(h).cpupool_migrate("db", "batch-pool")
    out = python(
        "import sys, xenvcpu\n"
        "h = xenvcpu.connect(sys.argv[1])\n"
        "w = h.domain('web'); d = h.domain('db')\n"
        "print(w.id, w.vcpus()[0].hard_affinity, d.info().cpupool, d.vcpus()[0].hard_affinity)\n",
        uri,
    )
    assert out.split() == [str(new_id), "2", "1", "0-63"]
    # and another process's Host.sim is seen here, on a connection made before it
    python(
        "import sys, xenvcpu\nxenvcpu.connect(sys.argv[1]).sim.restore_domain('batch')\n",
        uri,
    )
    assert host_ids(h)["batch"] == new_id + 1
    with pytest.raises(DomainNotFound):
        h.domain(3).info()


def host_ids(h: Host) -> dict[str, int]:
    return {d.name: d.id for d in h.domains()}


def test_a_missing_state_file_is_a_fresh_host(state: Path) -> None:
    uri = lasting(state)
    h = xenvcpu.connect(uri)
    h.domain("web").pin_vcpu(0, hard="9")
    state.unlink()
    assert hard(h, "web")[0] == "2", "made afresh from the description"
    assert state.is_file()


def test_concurrent_writers_are_serialized(state: Path) -> None:
    """Four processes pin four vCPUs each of one domain, one call per pin, all at once:
    each call reloads and writes the state under the lock, so no pin is lost."""
    uri = lasting(state)
    xenvcpu.connect(uri)  # make the file once
    code = (
        "import sys, xenvcpu\n"
        "h = xenvcpu.connect(sys.argv[1]); d = h.domain('batch')\n"
        "for v in map(int, sys.argv[2:]):\n"
        "    d.pin_vcpu(v, hard=str(v + 48))\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, uri, *(str(w * 4 + i) for i in range(4))],
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(4)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    h = xenvcpu.connect(uri)
    assert hard(h, "batch") == [str(v + 48) for v in range(16)]


# ---- hostile state files ---------------------------------------------------------------------


def refused(uri: str) -> XenvcpuError:
    """Opening `uri` fails with a typed error (never a panic); the CLI says so too."""
    with pytest.raises(XenvcpuError) as e:
        xenvcpu.connect(uri)
    r = cli("--connect", uri, "list", check=False)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and "panicked" not in r.stderr, r.stderr
    assert "state file" in r.stderr, r.stderr
    return e.value


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\x00\xff garbage",
        b"[]",
        b'{"format": "xenvcpu-sim-state/1"}',
        b'{"format": "something-else/9", "x": 1}',
        b'{"format": "xenvcpu-sim-state/1", "description": ' + b"[" * 100000 + b"]",
    ],
)
def test_a_corrupt_state_file_is_a_typed_error(state: Path, content: bytes) -> None:
    state.write_bytes(content)
    e = refused(lasting(state))
    assert str(state) in str(e)


def test_a_tampered_state_is_checked_as_a_description_is(state: Path) -> None:
    xenvcpu.connect(lasting(state))
    good = json.loads(state.read_bytes())

    def tampered(edit: object) -> XenvcpuError:
        doc = json.loads(json.dumps(good))
        assert callable(edit)
        edit(doc)
        state.write_text(json.dumps(doc))
        return refused(lasting(state))

    def vcpu0(doc: dict[str, object]) -> dict[str, object]:
        doms = doc["domains"]
        assert isinstance(doms, list)
        return doms[1]["vcpus"][0]  # type: ignore[no-any-return]

    e = tampered(lambda d: vcpu0(d).update(hard="0-99999"))
    assert "beyond the host's CPUs (0 to 63)" in str(e)
    e = tampered(lambda d: vcpu0(d).update(hard="5-2"))
    assert "upwards" in str(e)
    e = tampered(lambda d: vcpu0(d).update(cpu=4_000_000_000))
    assert "not a CPU of the host" in str(e)
    e = tampered(lambda d: d["domains"][1].update(vcpus=[None] * 100_000))
    assert "vCPUs" in str(e)
    e = tampered(lambda d: d.update(extra=1))
    assert "extra" in str(e)
    e = tampered(lambda d: d.update(last_domid=65535))
    assert "reserved" in str(e)


def test_a_state_of_another_host_is_refused_by_name(state: Path) -> None:
    xenvcpu.connect(lasting(state))
    e = refused(lasting(state, "sim:///default?version=4.10.0"))
    assert "it was made for Xen 4.17" in str(e)
    e = refused(lasting(state, "sim:///?cpus=8&domains=2"))
    assert "another description" in str(e)


def test_oversized_or_special_state_files_are_refused(state: Path) -> None:
    with state.open("wb") as f:
        f.truncate((64 << 20) + 1)  # sparse: not read, refused by its size
    e = refused(lasting(state))
    assert "more than the 67108864" in str(e)
    state.unlink()
    os.mkfifo(state)  # would block a reader: refused, not opened for reading
    e = refused(lasting(state))
    assert "not a regular file" in str(e)


def test_a_lock_held_elsewhere_is_a_bounded_wait_and_a_typed_error(state: Path) -> None:
    uri = lasting(state)
    h = xenvcpu.connect(uri)
    with open(f"{state}.lock", "rb+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        with pytest.raises(XenvcpuError, match="held its lock") as e:
            h.domain("web").vcpus()
        assert e.value.errno == errno.EWOULDBLOCK
    assert hard(h, "web")[0] == "2", "usable again once the lock is free"
