"""xenvcpu.xen.placement, in-process on a simulated host shared by the module runs."""

from __future__ import annotations

from typing import Any

import pytest
from ansible_collections.xenvcpu.xen.plugins.module_utils import xenvcpu_common
from ansible_collections.xenvcpu.xen.plugins.modules import placement

import xenvcpu

from .conftest import RunModule

SPEC: dict[str, Any] = {"domain": [{"match": "web", "hard": "node:1", "online": 2}]}


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> xenvcpu.Host:
    """One simulated host that every module run of the test connects to."""
    h = xenvcpu.connect("sim:///default?delay_ms=0")
    monkeypatch.setattr(h, "close", lambda: None)
    monkeypatch.setattr(placement, "connect", lambda module: h)
    return h


def pins(h: xenvcpu.Host, name: str) -> list[str]:
    return [v.hard_affinity.to_cpulist() for v in h.domain(name).vcpus()]


def online(h: xenvcpu.Host, name: str) -> list[int]:
    return [v.number for v in h.domain(name).vcpus() if v.online]


def test_apply_then_again_is_unchanged(run_module: RunModule, host: xenvcpu.Host) -> None:
    first = run_module(placement.main, {"spec": SPEC})
    assert first["changed"] is True
    assert first["applied"]["pinned"] == 4
    assert {(c["vcpu"], c["key"]) for c in first["changes"]} >= {(0, "hard"), (None, "online")}
    assert pins(host, "web") == ["32-63"] * 4
    assert online(host, "web") == [0, 1]
    second = run_module(placement.main, {"spec": SPEC})
    assert second["changed"] is False
    assert second["changes"] == [] and second["applied"] is None
    assert second["domains"] == [
        {
            "name": "web",
            "id": host.domain("web").id,
            "uuid": host.domain("web").uuid,
            "changed": False,
        }
    ]


def test_check_mode_changes_nothing(run_module: RunModule, host: xenvcpu.Host) -> None:
    before = pins(host, "web"), online(host, "web")
    result = run_module(placement.main, {"spec": SPEC}, check=True)
    assert result["changed"] is True and result["applied"] is None
    assert result["changes"]
    assert (pins(host, "web"), online(host, "web")) == before


def test_diff_is_per_domain_before_and_after(run_module: RunModule, host: xenvcpu.Host) -> None:
    spec = {"domain": [{"match": "web", "hard": "node:1"}, {"match": "db", "soft": "0-3"}]}
    result = run_module(placement.main, {"spec": spec}, check=True, diff=True)
    headers = [d["before_header"] for d in result["diff"]]
    assert headers == [
        f"web (id {host.domain('web').id}) (now)",
        f"db (id {host.domain('db').id}) (now)",
    ]
    web = result["diff"][0]
    # web's vCPUs have different pins now (two are pinned): a line for each kind of change
    before, after = web["before"].splitlines(), web["after"].splitlines()
    assert len(before) == len(after) >= 2
    assert all(line.endswith("hard: 32-63") for line in after)
    assert not any(line.endswith("hard: 32-63") for line in before)
    assert [line.split(" hard")[0] for line in before] == [line.split(" hard")[0] for line in after]
    assert result["diff"][1]["after"] == "vcpus 0-7 soft: 0-3\n"


def test_no_diff_without_diff_mode(run_module: RunModule, host: xenvcpu.Host) -> None:
    assert "diff" not in run_module(placement.main, {"spec": SPEC}, check=True)


def test_bad_cpulist_fails_naming_the_token(run_module: RunModule, host: xenvcpu.Host) -> None:
    spec = {"domain": [{"match": "web", "hard": "0-3,node:9x"}]}
    result = run_module(placement.main, {"spec": spec})
    assert result["failed"] is True
    assert "node:9x" in result["msg"] and result["token"] == "node:9x"
    assert result["key"] == "hard" and result["entry"] == 1
    assert result["error"] == "PlacementError"


def test_src_file_on_the_target(run_module: RunModule, host: xenvcpu.Host, tmp_path: Any) -> None:
    src = tmp_path / "p.toml"
    src.write_text('[[domain]]\nmatch = "db"\nhard = "16-19"\n')
    result = run_module(placement.main, {"src": str(src)})
    assert result["changed"] is True
    assert pins(host, "db") == ["16-19"] * 8
    assert result["plan"]["spec"] == str(src)


def test_unknown_exact_name_fails_unless_not_strict(
    run_module: RunModule, host: xenvcpu.Host
) -> None:
    spec = {"domain": [{"match": "nosuch", "hard": "0"}]}
    failed = run_module(placement.main, {"spec": spec})
    assert failed["failed"] is True and "matches no domain" in failed["msg"]
    loose = run_module(placement.main, {"spec": spec, "strict": False})
    assert loose["changed"] is False
    assert any("nosuch" in w for w in loose["plan"]["warnings"])


def test_failed_apply_reports_what_was_rolled_back(
    run_module: RunModule, host: xenvcpu.Host
) -> None:
    before = pins(host, "web"), online(host, "web")
    sim = host.sim
    assert sim is not None
    spec = {"domain": [{"match": "web", "hard": "node:1"}]}
    host.plan(spec)  # a Host reads the CPU topology on its first plan only
    ops = sim.ops()
    host.plan(spec)  # reads only: how many operations the module's plan takes
    sim.fail_nth(sim.ops() - ops + 4, "EINVAL")  # the apply: vCPU 1's pin in the batch
    result = run_module(placement.main, {"spec": spec})
    assert result["failed"] is True and result["error"] == "PlanFailed"
    assert [(f["domain"], f["vcpu"], f["step"]) for f in result["failed_items"]] == [
        (f"web (id {host.domain('web').id})", 1, "pin")
    ]
    assert result["rolled_back"] == [f"web (id {host.domain('web').id}) pins"]
    assert result["rollback_failed"] == [] and "rolled back" in result["msg"]
    assert [c["vcpu"] for c in result["changes"]] == [0, 1, 2, 3]
    assert (pins(host, "web"), online(host, "web")) == before


def test_spec_and_src_are_exclusive(run_module: RunModule, host: xenvcpu.Host) -> None:
    result = run_module(placement.main, {"spec": SPEC, "src": "/x.toml"})
    assert result["failed"] is True and "mutually exclusive" in result["msg"]


def test_without_xenvcpu_the_task_says_how_to_install(
    run_module: RunModule, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(xenvcpu_common, "HAS_XENVCPU", False)
    monkeypatch.setattr(xenvcpu_common, "XENVCPU_IMPORT_ERROR", "ImportError: xenvcpu")
    result = run_module(placement.main, {"spec": SPEC})
    assert result["failed"] is True
    assert "xenvcpu" in result["msg"] and "pip install" in result["msg"]


def test_a_templated_count_is_a_count(run_module: RunModule, host: xenvcpu.Host) -> None:
    spec = {"defaults": {"online": "1"}, "domain": [{"match": "web", "online": "2"}]}
    result = run_module(placement.main, {"spec": spec})
    assert result["changed"] is True
    assert online(host, "web") == [0, 1]
    assert run_module(placement.main, {"spec": {"domain": [{"match": "web", "online": "3-3"}]}})[
        "changed"
    ]
    assert online(host, "web") == [3]
