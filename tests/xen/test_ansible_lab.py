"""The Ansible collection on real Xen: Debian's ansible-core (2.14 in bookworm, installed in
the lab's dom0 image) runs the very playbooks of tests/test_ansible.py against
``xen:///system``, twice; what Xen has afterwards is read with ``xl vcpu-list``.

The modules run under dom0's /usr/bin/python3 with the lab's wheel, from the read-only
checkout (ANSIBLE_COLLECTIONS_PATH=<checkout>/ansible), as an operator's controller would
run them on a dom0 over SSH (here: connection local).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from xl import AffinitySaver

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOKS = ROOT / "tests" / "ansible"
ANSIBLE_PLAYBOOK = shutil.which("ansible-playbook") or "/usr/bin/ansible-playbook"


@pytest.fixture
def work() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="xenvcpu-ansible-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run_playbook(work: Path, name: str, extra_vars: dict[str, Any]) -> list[dict[str, Any]]:
    """ansible-playbook NAME on this dom0; every task result (records of the callback)."""
    if not os.path.exists(ANSIBLE_PLAYBOOK):
        pytest.fail("ansible-playbook is missing from the lab's dom0 (harness PACKAGES)")
    inventory = work / "inventory.json"
    inventory.write_text(
        json.dumps(
            {
                "xen_hosts": {
                    "hosts": {"dom0": {"xen_uri": "xen:///system"}},
                    "vars": {
                        "ansible_connection": "local",
                        "ansible_python_interpreter": "/usr/bin/python3",
                    },
                }
            }
        )
    )
    (work / "vars.json").write_text(json.dumps(extra_vars))
    record = work / "records.jsonl"
    record.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_COLLECTIONS_PATHS=str(ROOT / "ansible"),  # 2.14 reads both spellings
        ANSIBLE_COLLECTIONS_PATH=str(ROOT / "ansible"),
        ANSIBLE_CALLBACK_PLUGINS=str(PLAYBOOKS / "callback_plugins"),
        ANSIBLE_CALLBACKS_ENABLED="record_results",
        ANSIBLE_LOCAL_TEMP=str(work / "tmp"),
        ANSIBLE_REMOTE_TEMP=str(work / "tmp"),
        ANSIBLE_NOCOLOR="1",
        HOME=str(work),
        XENVCPU_ANSIBLE_RECORD=str(record),
    )
    proc = subprocess.run(
        [ANSIBLE_PLAYBOOK, "-i", str(inventory), str(PLAYBOOKS / name), "-e", f"@{work}/vars.json"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return [json.loads(line) for line in record.read_text().splitlines()]


def result_of(records: list[dict[str, Any]], task: str) -> dict[str, Any]:
    found = [r["result"] for r in records if r["task"] == task]
    assert len(found) == 1, records
    return found[0]  # type: ignore[no-any-return]


def test_ansible_core_is_debians() -> None:
    out = subprocess.run(
        [ANSIBLE_PLAYBOOK, "--version"], capture_output=True, text=True, timeout=60
    ).stdout
    assert "core 2.14" in out, out


def test_placement_playbook_on_real_xen_twice(
    work: Path, guest: str, xl: ModuleType, nr_cpus: int, restore_affinity: AffinitySaver
) -> None:
    vcpus = xl.vcpus(guest)
    for v in vcpus:
        restore_affinity.save(guest, v.vcpu)
    last = nr_cpus - 1
    spec = {
        "domain": [
            {
                "match": guest,
                "hard": f"1-{last}",
                "soft": f"{last}",
                "vcpu": {"0": {"hard": f"{last}"}},
            }
        ]
    }
    first = result_of(run_playbook(work, "placement.yml", {"placement_spec": spec}), "Placement")
    assert first["changed"] is True, first
    after = {v.vcpu: v for v in xl.vcpus(guest)}
    assert after[0].hard == frozenset({last})
    for n, v in after.items():
        if n:
            assert v.hard == frozenset(range(1, nr_cpus)), v
        assert v.soft == frozenset({last}), v
    second = result_of(run_playbook(work, "placement.yml", {"placement_spec": spec}), "Placement")
    assert second["changed"] is False and second["changes"] == [], second
    assert {v.vcpu: (v.hard, v.soft) for v in xl.vcpus(guest)} == {
        n: (v.hard, v.soft) for n, v in after.items()
    }


def test_vcpus_playbook_on_real_xen_twice(work: Path, guest: str, xl: ModuleType) -> None:
    online_before = sum(1 for v in xl.vcpus(guest) if v.cpu is not None)
    want = 3 if online_before != 3 else 2
    try:
        records = run_playbook(work, "vcpus.yml", {"vcpus_domain": guest, "vcpus_online": want})
        first = result_of(records, "Online vCPUs")
        assert first["changed"] is True, first
        online = [v.vcpu for v in xl.vcpus(guest) if v.cpu is not None]
        assert online == list(range(want))
        read_back = result_of(records, "Read back")["domains"][0]
        assert [v["vcpu"] for v in read_back["vcpus"] if v["online"]] == online
        again = result_of(
            run_playbook(work, "vcpus.yml", {"vcpus_domain": guest, "vcpus_online": want}),
            "Online vCPUs",
        )
        assert again["changed"] is False, again
    finally:
        xl.vcpu_set(guest, online_before)
