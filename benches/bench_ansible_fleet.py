"""A fleet run: one ansible-playbook applying one placement to N Xen hosts at once.

Each host is its own lasting simulated host (``sim:///fleet.toml?state=PATH``, one state
file per host) reached with ``connection: local``, so every task is a real module process
as on a fleet of dom0s; only the SSH hop is missing. Forks are fixed at ``FORKS`` (what
an operator would set for a fleet on a small controller; the machine has 2 cores).

Cases, for 1 to 50 hosts: ``apply`` (every host starts as its description and the run
pins every guest: changed on each host) and ``rerun`` (the same playbook on hosts that are
already placed: ok on each host, nothing changed). Timing is wall time of the whole
``ansible-playbook`` process, startup included: what an operator waits for.

``make bench-ansible`` times them and writes the table of docs/ansible.md; ``make test``
runs the cases up to 5 hosts once, untimed, as a smoke test of the fleet path.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import xenvcpu

ROOT = Path(__file__).resolve().parent.parent
PLAYBOOK = ROOT / "tests" / "ansible" / "placement.yml"
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
FORKS = 10
SIZES = (1, 5, 10, 25, 50)
SMOKE_MAX = 5  # hosts, when make test runs the benches once untimed

# A small dom0's worth of guests: 2 NUMA nodes, 16 pCPUs, six guests of 4 vCPUs.
FLEET_TOML = "[host]\ncpus = 16\nnodes = 2\n\n" + "".join(
    f'[[domain]]\nid = {i}\nname = "{name}"\nvcpus = {4 if i else 2}\n\n'
    for i, name in enumerate(["Domain-0", "web1", "web2", "web3", "db1", "db2", "db3"])
)
SPEC = {
    "domain": [
        {"match": "web*", "hard": "node:0", "online": 2},
        {"match": "db*", "hard": "node:1", "layout": "spread"},
    ]
}
RECAP = re.compile(r"^(\S+)\s*: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)

if not ANSIBLE_PLAYBOOK.exists():  # pragma: no cover - make's venv always has it
    pytest.skip(
        f"ansible-core is not installed next to {sys.executable} (pip install 'xenvcpu[ansible]')",
        allow_module_level=True,
    )


class Fleet:
    """N lasting simulated hosts in one directory and an INI inventory naming them."""

    def __init__(self, directory: Path, hosts: int) -> None:
        self.dir = directory
        self.names = [f"xen{i:02d}" for i in range(1, hosts + 1)]
        toml = directory / "fleet.toml"
        toml.write_text(FLEET_TOML)
        lines = ["[xen_hosts]"]
        for name in self.names:
            lines.append(f"{name} xen_uri='{self.uri(name)}'")
        lines += [
            "",
            "[xen_hosts:vars]",
            "ansible_connection=local",
            "ansible_python_interpreter='{{ ansible_playbook_python }}'",
        ]
        self.inventory = directory / "hosts.ini"
        self.inventory.write_text("\n".join(lines) + "\n")
        self.vars = directory / "spec.json"
        self.vars.write_text(json.dumps({"placement_spec": SPEC}))

    def uri(self, name: str) -> str:
        return f"sim://{self.dir / 'fleet.toml'}?state={self.dir / name}.state&delay_ms=0"

    def reset(self) -> None:
        """Every host back to its description (a missing state file starts afresh)."""
        for name in self.names:
            for suffix in (".state", ".state.lock"):
                (self.dir / f"{name}{suffix}").unlink(missing_ok=True)

    def run(self) -> dict[str, tuple[int, int, int]]:
        """One ansible-playbook run: host -> (ok, changed, failed) from the recap."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
        env.update(
            ANSIBLE_COLLECTIONS_PATH=str(ROOT / "ansible"),
            ANSIBLE_FORKS=str(FORKS),
            ANSIBLE_LOCAL_TEMP=str(self.dir / "tmp"),
            ANSIBLE_NOCOLOR="1",
        )
        cmd = [str(ANSIBLE_PLAYBOOK), "-i", str(self.inventory), str(PLAYBOOK)]
        proc = subprocess.run(
            [*cmd, "-e", f"@{self.vars}"],
            cwd=self.dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return {m[0]: (int(m[1]), int(m[2]), int(m[4])) for m in RECAP.findall(proc.stdout)}


@pytest.fixture
def fleet_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.mark.parametrize("hosts", SIZES)
@pytest.mark.parametrize("phase", ["apply", "rerun"])
def test_fleet(benchmark: Any, fleet_dir: Path, hosts: int, phase: str) -> None:
    if benchmark.disabled and hosts > SMOKE_MAX:
        pytest.skip(
            f"{hosts} hosts are timed by make bench-ansible; make test smokes <= {SMOKE_MAX}"
        )
    fleet = Fleet(fleet_dir, hosts)
    benchmark.extra_info.update(suite="ansible-fleet", hosts=hosts, phase=phase, forks=FORKS)
    setup = fleet.reset if phase == "apply" else None
    if phase == "rerun":
        fleet.reset()
        assert all(changed == 1 for _, changed, _ in fleet.run().values())
    recap = benchmark.pedantic(fleet.run, setup=setup, rounds=3, iterations=1)
    assert sorted(recap) == fleet.names
    want_changed = 1 if phase == "apply" else 0
    assert all(r == (1, want_changed, 0) for r in recap.values()), recap
    # every host of the fleet is placed: spot-check the last one from this process
    web = xenvcpu.connect(fleet.uri(fleet.names[-1])).domain("web3")
    assert [v.hard_affinity.to_cpulist() for v in web.vcpus()] == ["0-7"] * 4
    assert [v.number for v in web.vcpus() if v.online] == [0, 1]
    # and a second run of the same playbook changes nothing on any host
    if phase == "apply":
        assert all(r == (1, 0, 0) for r in fleet.run().values())
