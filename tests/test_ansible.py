"""The Ansible collection (ansible/ansible_collections/xenvcpu/xen) driven by real
``ansible-playbook`` runs, as an operator runs them: inventory hosts with
``connection: local``, each a lasting simulated host (``sim:///...toml?state=PATH``), so
that what one task process changed is what the next one, and this test, see.

The playbooks are tests/ansible/*.yml; tests/ansible/callback_plugins/record_results.py
records every task result as data next to the default callback's text.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import xenvcpu

ROOT = Path(__file__).resolve().parents[1]
PLAYBOOKS = ROOT / "tests" / "ansible"
COLLECTIONS = ROOT / "ansible"
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")

if not ANSIBLE_PLAYBOOK.exists():  # pragma: no cover - make test's venv always has it
    pytest.skip(
        f"ansible-core is not installed next to {sys.executable} (pip install "
        "'xenvcpu[ansible]'; make test's venv has it)",
        allow_module_level=True,
    )

HOST_TOML = """
[host]
cpus = 8
nodes = 2

[[domain]]
id = 0
name = "Domain-0"
vcpus = 2

[[domain]]
id = 1
name = "web"
vcpus = 4

[[domain]]
id = 2
name = "db"
vcpus = 4
type = "pvh"
online = "0-1"
"""

SPEC: dict[str, Any] = {
    "domain": [
        {"match": "web", "hard": "node:0", "online": 2},
        {"match": "db", "hard": "node:1", "layout": "spread"},
    ]
}


@dataclass
class Run:
    rc: int
    stdout: str
    records: list[dict[str, Any]]

    def results(self, task: str) -> dict[str, dict[str, Any]]:
        """host -> the result of the task named ``task``."""
        return {r["host"]: r["result"] for r in self.records if r["task"] == task}

    def statuses(self, task: str) -> dict[str, str]:
        return {r["host"]: r["status"] for r in self.records if r["task"] == task}


def write_host(directory: Path, toml: str = HOST_TOML) -> Path:
    path = directory / "host.toml"
    path.write_text(toml)
    return path


def lasting_uri(toml: Path, state: Path, extra: str = "") -> str:
    return f"sim://{toml}?state={state}&delay_ms=0{extra}"


def inventory(directory: Path, hosts: dict[str, str], **host_vars: Any) -> Path:
    """An inventory of Xen hosts (name -> xen_uri), each reached with connection local and
    run by this test's Python (the one with xenvcpu)."""
    doc = {
        "xen_hosts": {
            "hosts": {name: {"xen_uri": uri, **host_vars} for name, uri in hosts.items()},
            "vars": {
                "ansible_connection": "local",
                "ansible_python_interpreter": "{{ ansible_playbook_python }}",
            },
        }
    }
    path = directory / "inventory.json"  # JSON is YAML: ansible reads it as an inventory
    path.write_text(json.dumps(doc))
    return path


def ansible_env(directory: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS),
        ANSIBLE_CALLBACK_PLUGINS=str(PLAYBOOKS / "callback_plugins"),
        ANSIBLE_CALLBACKS_ENABLED="record_results",
        ANSIBLE_LOCAL_TEMP=str(directory / "tmp"),
        ANSIBLE_REMOTE_TEMP=str(directory / "tmp"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        XENVCPU_ANSIBLE_RECORD=str(directory / "records.jsonl"),
    )
    return env


def playbook(directory: Path, inv: Path, name: str, extra_vars: dict[str, Any], *args: str) -> Run:
    """Run tests/ansible/NAME with the vars; what it printed and every task's result."""
    record = directory / "records.jsonl"
    record.unlink(missing_ok=True)
    vars_file = directory / "vars.json"
    vars_file.write_text(json.dumps(extra_vars))
    proc = subprocess.run(
        [
            str(ANSIBLE_PLAYBOOK),
            "-i",
            str(inv),
            str(PLAYBOOKS / name),
            "-e",
            f"@{vars_file}",
            *args,
        ],
        cwd=directory,
        env=ansible_env(directory),
        capture_output=True,
        text=True,
        timeout=300,
    )
    records = (
        [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    )
    return Run(proc.returncode, proc.stdout + proc.stderr, records)


@pytest.fixture
def work() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="xenvcpu-ansible-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def host_state(path: Path) -> Any:
    """The lasting host's state file without its operation counters (``ops``,
    ``hypercalls``: every read advances them, so only they may differ after a read-only
    run); everything else a change would touch (maps, online sets, the guests' pending
    follow-ups) stays."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in ("ops", "hypercalls")}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return strip(json.loads(path.read_text()))


def placement_of(uri: str) -> list[tuple[str, int, str, str, bool]]:
    """Every vCPU's hard and soft affinity and whether it is online (where a vCPU runs is
    left out: a rollback puts pins back, and Xen moves a vCPU when it must, not back)."""
    return [
        (d.name, v.number, v.hard_affinity.to_cpulist(), v.soft_affinity.to_cpulist(), v.online)
        for d in xenvcpu.connect(uri).domains()
        for v in d.vcpus()
    ]


def pins(uri: str, name: str) -> list[tuple[str, str]]:
    dom = xenvcpu.connect(uri).domain(name)
    return [(v.hard_affinity.to_cpulist(), v.soft_affinity.to_cpulist()) for v in dom.vcpus()]


def online(uri: str, name: str) -> list[int]:
    return [v.number for v in xenvcpu.connect(uri).domain(name).vcpus() if v.online]


# ---- placement ---------------------------------------------------------------------------


def test_apply_changes_then_a_second_run_is_ok(work: Path) -> None:
    uri = lasting_uri(write_host(work), work / "xen1.state")
    inv = inventory(work, {"xen1": uri})
    first = playbook(work, inv, "placement.yml", {"placement_spec": SPEC})
    assert first.rc == 0, first.stdout
    result = first.results("Placement")["xen1"]
    assert result["changed"] is True
    assert result["applied"]["pinned"] == 8
    assert result["applied"]["online_changed"] == ["web (id 1)"]
    # another process (this test) sees what the task process did
    assert [h for h, _ in pins(uri, "web")] == ["0-3"] * 4
    assert sorted(h for h, _ in pins(uri, "db")) == ["4", "5", "6", "7"]  # spread on node 1
    assert online(uri, "web") == [0, 1]
    assert "changed=1" in first.stdout

    second = playbook(work, inv, "placement.yml", {"placement_spec": SPEC})
    assert second.rc == 0, second.stdout
    again = second.results("Placement")["xen1"]
    assert again["changed"] is False and again["changes"] == [] and again["applied"] is None
    assert "changed=0" in second.stdout and "ok=1" in second.stdout


def test_check_mode_leaves_the_state_file_alone_and_shows_the_diff(work: Path) -> None:
    state = work / "xen1.state"
    uri = lasting_uri(write_host(work), state)
    inv = inventory(work, {"xen1": uri})
    xenvcpu.connect(uri).domain("web")  # the state file now exists
    before = host_state(state)
    run = playbook(work, inv, "placement.yml", {"placement_spec": SPEC}, "--check", "--diff")
    assert run.rc == 0, run.stdout
    result = run.results("Placement")["xen1"]
    assert result["changed"] is True and result["applied"] is None
    assert {(c["domain"], c["key"]) for c in result["changes"]} == {
        ("web", "hard"),
        ("web", "online"),
        ("db", "hard"),
    }
    assert host_state(state) == before
    assert online(uri, "web") == [0, 1, 2, 3]
    # the default callback prints one diff per domain: headers, then - and + lines
    out = run.stdout
    assert "--- before: web (id 1) (now)" in out and "+++ after: web (id 1) (wanted)" in out
    assert "-vcpus 0-3 hard: 0-7" in out and "+vcpus 0-3 hard: 0-3" in out
    assert "-online: 0-3" in out and "+online: 0-1" in out
    assert "+vcpu 3 hard: 7" in out  # db spread: one pCPU of node 1 each
    # the same run without --check does change the file: the comparison above can fail
    assert playbook(work, inv, "placement.yml", {"placement_spec": SPEC}).rc == 0
    assert host_state(state) != before


def test_a_bad_cpulist_fails_the_task_naming_the_token(work: Path) -> None:
    state = work / "xen1.state"
    uri = lasting_uri(write_host(work), state)
    inv = inventory(work, {"xen1": uri})
    spec = {"domain": [{"match": "web", "hard": "0-3,nod:1"}]}
    run = playbook(work, inv, "placement.yml", {"placement_spec": spec})
    assert run.rc == 2
    assert run.statuses("Placement") == {"xen1": "failed"}
    result = run.results("Placement")["xen1"]
    assert "'nod:1'" in result["msg"] and result["token"] == "nod:1"
    assert result["key"] == "hard" and result["entry"] == 1
    assert "fatal: [xen1]" in run.stdout and "nod:1" in run.stdout
    assert [h for h, _ in pins(uri, "web")] == ["0-7"] * 4


def test_a_failed_apply_is_rolled_back_and_reported(work: Path) -> None:
    """A fault armed from this process (the lasting host keeps it) fails one pin of the
    task's batch: the task fails naming it, and the host is as it was."""
    state = work / "xen1.state"
    uri = lasting_uri(write_host(work), state)
    inv = inventory(work, {"xen1": uri})
    spec = {"domain": [{"match": "web", "hard": "node:1"}]}
    sim = xenvcpu.connect(uri).sim
    assert sim is not None
    # how many operations a task process takes to connect and plan: a check-mode run
    ops = sim.ops()
    assert playbook(work, inv, "placement.yml", {"placement_spec": spec}, "--check").rc == 0
    planning = sim.ops() - ops
    before = placement_of(uri)
    sim.fail_nth(planning + 4, "EINVAL")  # then the apply: its read, the pins of vCPUs 0, 1...
    run = playbook(work, inv, "placement.yml", {"placement_spec": spec})
    assert run.rc == 2
    result = run.results("Placement")["xen1"]
    assert result["error"] == "PlanFailed"
    assert [(f["domain"], f["vcpu"], f["step"]) for f in result["failed_items"]] == [
        ("web (id 1)", 1, "pin")
    ]
    assert result["rolled_back"] == ["web (id 1) pins"] and result["rollback_failed"] == []
    assert "rolled back: web (id 1) pins" in result["msg"]
    assert [h for h, _ in pins(uri, "web")] == ["0-7"] * 4
    assert placement_of(uri) == before


def test_a_target_without_xenvcpu_is_told_how_to_install_it(work: Path) -> None:
    bare = work / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    uri = lasting_uri(write_host(work), work / "xen1.state")
    inv = inventory(work, {"xen1": uri})
    inv_doc = json.loads(inv.read_text())
    inv_doc["xen_hosts"]["vars"]["ansible_python_interpreter"] = str(bare / "bin" / "python")
    inv.write_text(json.dumps(inv_doc))
    run = playbook(work, inv, "placement.yml", {"placement_spec": SPEC})
    assert run.rc == 2
    msg = run.results("Placement")["xen1"]["msg"]
    assert "xenvcpu" in msg and "pip install" in msg


# ---- vcpus: one domain's online vCPUs ---------------------------------------------------


def test_vcpus_on_a_pvh_domain_count_then_set(work: Path) -> None:
    uri = lasting_uri(write_host(work), work / "xen1.state")
    inv = inventory(work, {"xen1": uri})
    run = playbook(work, inv, "vcpus.yml", {"vcpus_domain": "db", "vcpus_online": 3})
    assert run.rc == 0, run.stdout
    result = run.results("Online vCPUs")["xen1"]
    assert result["changed"] is True and result["guest_type"] == "pvh"
    assert (result["before"], result["online"]) == ("0-1", "0-2")
    info = run.results("Read back")["xen1"]["domains"][0]
    assert [v["vcpu"] for v in info["vcpus"] if v["online"]] == [0, 1, 2]
    assert online(uri, "db") == [0, 1, 2]

    again = playbook(work, inv, "vcpus.yml", {"vcpus_domain": "db", "vcpus_online": 3})
    assert again.results("Online vCPUs")["xen1"]["changed"] is False

    as_set = playbook(work, inv, "vcpus.yml", {"vcpus_domain": "db", "vcpus_online": "0,3"})
    assert as_set.rc == 0, as_set.stdout
    assert as_set.results("Online vCPUs")["xen1"]["online"] == "0,3"
    assert online(uri, "db") == [0, 3]


def test_vcpus_check_mode_changes_nothing(work: Path) -> None:
    state = work / "xen1.state"
    uri = lasting_uri(write_host(work), state)
    inv = inventory(work, {"xen1": uri})
    xenvcpu.connect(uri).domain("db")
    before = host_state(state)
    run = playbook(
        work, inv, "vcpus.yml", {"vcpus_domain": "db", "vcpus_online": 4}, "--check", "--diff"
    )
    assert run.rc == 0, run.stdout
    assert run.results("Online vCPUs")["xen1"]["changed"] is True
    assert "-online: 0-1" in run.stdout and "+online: 0-3" in run.stdout
    assert host_state(state) == before


HVM_DOMID = 5
HVM_TOML = f"""
[host]
cpus = 8

[[domain]]
id = 0
name = "Domain-0"
vcpus = 2

[[domain]]
id = {HVM_DOMID}
name = "hvm-guest"
type = "hvm"
vcpus = 4
online = "0"
"""


def test_vcpus_on_an_hvm_domain_through_its_qemu(work: Path) -> None:
    """A real QEMU with a booted Linux guest is the simulated HVM domain's device model
    (as in tests/qmp/test_domain_hvm.py): the task hot-adds CPUs through QMP and the guest
    brings them online; the second run changes nothing."""
    from qmp import qemu_harness
    from qmp.conftest import unavailable

    try:
        qemu_harness.require_qemu()
        files = qemu_harness.prepare_guest()
    except qemu_harness.Unavailable as exc:
        unavailable(f"no QEMU guest behind the HVM domain: {exc}")
    vm = qemu_harness.Qemu(["-machine", "pc", "-smp", "1,maxcpus=4"], work / "vm", guest=files)
    vm.start()
    try:
        vm.wait_console(rf"^{qemu_harness.MARK} up online=0 ", 120)
        os.symlink(vm.qmp_path, work / f"qmp-libxl-{HVM_DOMID}")
        uri = lasting_uri(write_host(work, HVM_TOML), work / "xen1.state", f"&run_dir={work}")
        inv = inventory(work, {"xen1": uri})
        mark = len(vm.console())
        run = playbook(work, inv, "vcpus.yml", {"vcpus_domain": "hvm-guest", "vcpus_online": 3})
        assert run.rc == 0, run.stdout
        result = run.results("Online vCPUs")["xen1"]
        assert result["changed"] is True and result["guest_type"] == "hvm"
        assert (result["before"], result["online"]) == ("0", "0-2")
        vm.wait_console(rf"^{qemu_harness.MARK} online=0-2 present=0-2\s*$", 60, mark)
        assert online(uri, "hvm-guest") == [0, 1, 2]
        again = playbook(work, inv, "vcpus.yml", {"vcpus_domain": "hvm-guest", "vcpus_online": 3})
        assert again.rc == 0, again.stdout
        assert again.results("Online vCPUs")["xen1"]["changed"] is False
    finally:
        vm.kill()


def test_the_collection_builds_and_installs_with_ansible_galaxy(work: Path) -> None:
    """As docs/ansible.md installs it: build the tarball, install it, read a module's doc
    from the installed copy."""
    galaxy = ANSIBLE_PLAYBOOK.with_name("ansible-galaxy")
    env = ansible_env(work)
    source = COLLECTIONS / "ansible_collections" / "xenvcpu" / "xen"
    subprocess.run(
        [str(galaxy), "collection", "build", str(source), "--output-path", str(work)],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    (tarball,) = work.glob("xenvcpu-xen-*.tar.gz")
    installed = work / "collections"
    subprocess.run(
        [str(galaxy), "collection", "install", "--force", str(tarball), "-p", str(installed)],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    module_dir = installed / "ansible_collections" / "xenvcpu" / "xen" / "plugins" / "modules"
    assert sorted(p.name for p in module_dir.glob("*.py")) == [
        "placement.py",
        "vcpu_info.py",
        "vcpus.py",
    ]
    env["ANSIBLE_COLLECTIONS_PATH"] = str(installed)
    doc = subprocess.run(
        [str(ANSIBLE_PLAYBOOK.with_name("ansible-doc")), "--json", "xenvcpu.xen.placement"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    info = json.loads(doc.stdout)["xenvcpu.xen.placement"]["doc"]
    assert info["attributes"]["check_mode"]["support"] == "full"
    assert info["attributes"]["diff_mode"]["support"] == "full"
    assert set(info["options"]) == {"uri", "spec", "src", "state", "timeout", "strict"}
