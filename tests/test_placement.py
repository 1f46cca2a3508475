"""Placement as desired state: specs, plans, diffs, and all-or-nothing apply on the
simulated host (docs/placement.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import xenvcpu
from xenvcpu import CpuMap
from xenvcpu.errors import PlacementError, PlanFailed, XenvcpuError
from xenvcpu.placement import load_spec

SCALE = "sim:///?cpus=64&nodes=2&domains=50&vcpus=2&delay_ms=0"


def state(host: xenvcpu.Host) -> tuple[bytes, bytes, bytes]:
    """Every map and vCPU state on the host, byte for byte."""
    snap = host.snapshot()
    return snap.maps("hard"), snap.maps("soft"), snap.column("state").tobytes()


def pins(host: xenvcpu.Host, name: str) -> list[tuple[str, str]]:
    return [
        (v.hard_affinity.to_cpulist(), v.soft_affinity.to_cpulist())
        for v in host.domain(name).vcpus()
    ]


def sim(host: xenvcpu.Host) -> xenvcpu.SimControl:
    assert host.sim is not None
    return host.sim


# ---- the spec ------------------------------------------------------------------------


def test_spec_from_toml_json_and_dict_agree(tmp_path: Path) -> None:
    toml = tmp_path / "p.toml"
    toml.write_text(
        '[defaults]\nsoft = "node:0"\n\n[[domain]]\nmatch = "db"\nhard = "16-31"\n'
        'vcpu.1.hard = "20"\nonline = "0-3"\n'
    )
    data = {
        "defaults": {"soft": "node:0"},
        "domain": [
            {"match": "db", "hard": "16-31", "vcpu": {"1": {"hard": "20"}}, "online": "0-3"}
        ],
    }
    js = tmp_path / "p.json"
    js.write_text(json.dumps(data))
    a, b, c = load_spec(toml), load_spec(js), load_spec(data)
    assert a.entries == b.entries == c.entries
    assert a.defaults == b.defaults == c.defaults
    assert a.entries[0].vcpus[1]["hard"] == "20"
    assert a.source == str(toml)


@pytest.mark.parametrize(
    ("doc", "entry", "key", "words"),
    [
        ({"domain": [{"match": "x", "hardd": "1"}]}, 1, "hardd", "unknown key 'hardd'"),
        ({"domain": [{"hard": "1"}]}, 1, "match", "match = a domain name"),
        ({"domain": [{"match": "x", "hard": 3}]}, 1, "hard", "expected a cpulist"),
        ({"domain": [{"match": "x", "online": 0}]}, 1, "online", "a count from 1"),
        ({"domain": [{"match": "x", "online": True}]}, 1, "online", "a count or a list"),
        ({"domain": [{"match": "x", "layout": "zigzag"}]}, 1, "layout", '"spread" or "pack"'),
        ({"domain": [{"match": "x"}, {"match": "y", "vcpu": {"a": {}}}]}, 2, "vcpu.a", "vCPU"),
        ({"domain": [{"match": "x", "vcpu": {"1": {"firm": "2"}}}]}, 1, "vcpu.1.firm", "hard"),
        ({"defaults": {"match": "x"}}, 0, "match", "unknown key 'match'"),
        ({"domains": []}, None, "domains", "[defaults] and [[domain]]"),
    ],
)
def test_spec_errors_name_the_entry_and_key(
    doc: dict[str, Any], entry: int | None, key: str, words: str
) -> None:
    with pytest.raises(PlacementError) as e:
        load_spec(doc)
    assert e.value.entry == entry
    assert e.value.key == key
    assert words in str(e.value)
    assert str(e.value).startswith("<spec>:")


def test_spec_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[domain]]\nmatch = "web"\nhard = \n')
    with pytest.raises(PlacementError, match=r"bad\.toml.*not valid TOML"):
        load_spec(bad)
    with pytest.raises(PlacementError, match=r"missing\.toml: cannot read"):
        load_spec(tmp_path / "missing.toml")
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(PlacementError, match="not UTF-8"):
        load_spec(binary)


def test_cpulist_errors_name_file_entry_and_token(tmp_path: Path) -> None:
    host = xenvcpu.connect("sim:///default")
    f = tmp_path / "p.toml"
    f.write_text('[[domain]]\nmatch = "web"\n\n[[domain]]\nmatch = "db"\nhard = "0-3,socket:x"\n')
    with pytest.raises(PlacementError) as e:
        host.plan(f)
    err = e.value
    assert (err.source, err.entry, err.key, err.token) == (str(f), 2, "hard", "socket:x")
    assert err.column == 5
    assert str(f) in str(err) and "[[domain]] #2 ('db')" in str(err) and "'socket:x'" in str(err)
    with pytest.raises(PlacementError, match="names no CPU"):
        host.plan({"domain": [{"match": "db", "hard": "0-3,^0-3"}]})
    with pytest.raises(PlacementError, match=r"db \(id 2\) has no vCPU 9; valid vCPUs are 0-7"):
        host.plan({"domain": [{"match": "db", "vcpu": {"9": {"hard": "1"}}}]})
    with pytest.raises(PlacementError, match=r"has 8 vCPUs; the valid range is 1\.\.8"):
        host.plan({"domain": [{"match": "db", "online": 9}]})


def test_matching_exact_names_and_uuids_must_exist_globs_warn() -> None:
    host = xenvcpu.connect("sim:///default")
    with pytest.raises(PlacementError, match=r"#1 \('nosuch'\) matches no domain") as e:
        host.plan({"domain": [{"match": "nosuch", "hard": "1"}]})
    assert (e.value.entry, e.value.key) == (1, "match")
    with pytest.raises(PlacementError, match="by UUID"):
        host.plan({"domain": [{"match": "00000000-0000-0000-0000-000000000099", "hard": "1"}]})
    plan = host.plan({"domain": [{"match": "nosuch*", "hard": "1"}]})
    assert plan.warnings == ["<spec>: [[domain]] #1 ('nosuch*') matches no domain"]
    assert not plan
    uuid = str(host.domain("db").uuid)
    plan = host.plan({"domain": [{"match": uuid.upper(), "hard": "1"}]})
    assert [d.name for d in plan.domains] == ["db"]


def test_plan_refuses_what_xen_would_refuse_naming_the_entry() -> None:
    host = xenvcpu.connect("sim:///default")
    # batch runs in cpupool batch-pool (48-63): a hard affinity outside it is EINVAL
    with pytest.raises(PlacementError) as e:
        host.plan({"domain": [{"match": "web", "hard": "1"}, {"match": "b*", "hard": "0-15"}]})
    assert (e.value.entry, e.value.key) == (2, "hard")
    assert "batch (id 3) vCPU 0 would have no CPU of its cpupool batch-pool (CPUs 48-63)" in str(
        e.value
    )
    with pytest.raises(PlacementError) as e:
        host.plan({"domain": [{"match": "batch", "hard": "48-63", "vcpu": {"2": {"hard": "3"}}}]})
    assert e.value.key == "vcpu.2.hard" and "vCPU 2" in str(e.value)
    # db is an HVM guest: its vCPUs go through its QEMU, which this host does not have
    with pytest.raises(PlacementError, match=r"online = 2: .*HVM guest.*run_dir") as e:
        host.plan({"domain": [{"match": "db", "online": 2}]})
    assert e.value.key == "online"
    # the watcher's lenient plan leaves such domains out, with a warning, and plans the rest
    plan = xenvcpu.placement.make_plan(
        host,
        load_spec({"domain": [{"match": "*", "hard": "0-15", "online": 2}, {"match": "gone"}]}),
        strict=False,
    )
    assert [d.name for d in plan.domains] == ["Domain-0", "web", "db"]
    assert any(w.startswith("batch (id 3): left out:") for w in plan.warnings)
    assert any(w.startswith("db (id 2): online set left alone:") for w in plan.warnings)
    assert any("('gone') matches no domain" in w for w in plan.warnings)
    assert plan.domains[2].online_want is None


# ---- plans ---------------------------------------------------------------------------


def test_plan_reads_only_and_reports_each_difference() -> None:
    host = xenvcpu.connect("sim:///default")
    before = state(host)
    ops = sim(host).ops()
    host.snapshot()
    snapshot_ops = sim(host).ops() - ops
    ops = sim(host).ops()
    plan = host.plan({"domain": [{"match": "web", "hard": "4-5", "online": 2}]})
    # the snapshot and a few reads of the topology and pools; no writes
    assert sim(host).ops() - ops <= snapshot_ops + 10
    assert state(host) == before
    assert plan
    hard = [c for c in plan.changes if c.key == "hard"]
    assert [c.vcpu for c in hard] == [0, 1, 2, 3]
    now = pins(host, "web")
    assert [c.current for c in hard] == [h for h, _ in now]
    assert {c.wanted for c in hard} == {"4-5"}
    online = [c for c in plan.changes if c.key == "online"]
    assert online == [("web", 1, None, "online", "0-3", "0-1")]


def test_later_entries_override_key_by_key_and_defaults_apply() -> None:
    host = xenvcpu.connect("sim:///default")
    spec = {
        "defaults": {"soft": "node:1"},
        "domain": [
            {"match": "[!b]*", "hard": "0-15"},
            {"match": "d*", "hard": "16-31", "vcpu": {"1": {"hard": "20"}}},
        ],
    }
    plan = host.plan(spec)
    plan.apply()
    db = pins(host, "db")
    assert db[0] == ("16-31", "32-63")
    assert db[1] == ("20", "32-63")
    assert pins(host, "web")[0] == ("0-15", "32-63")
    assert not host.plan(spec)  # applied: nothing left to do
    assert [d.entries for d in plan.domains] == [(1,), (1,), (1, 2)]


def test_vcpu_override_alone_leaves_the_other_vcpus_alone() -> None:
    host = xenvcpu.connect("sim:///default")
    before = pins(host, "db")
    host.plan({"domain": [{"match": "db", "vcpu": {"3": {"soft": "0-1"}}}]}).apply()
    after = pins(host, "db")
    assert after[3] == (before[3][0], "0-1")
    assert after[:3] + after[4:] == before[:3] + before[4:]


def test_topology_terms_in_specs() -> None:
    host = xenvcpu.connect("sim:///default")
    topo = host.read_topology()
    plan = host.plan(
        {
            "domain": [
                {"match": "web", "hard": "socket:1", "soft": "siblings:4"},
                {"match": "batch", "hard": "pool:batch-pool"},
            ]
        }
    )
    plan.apply()
    assert pins(host, "web")[0] == ("32-63", "4-5")
    assert pins(host, "batch")[0][0] == CpuMap.from_cpus(topo.pools["batch-pool"], 64).to_cpulist()


def test_layout_spread_and_pack() -> None:
    host = xenvcpu.connect("sim:///default")
    # two sockets (= nodes) of 16 cores x 2 threads; spread goes core by core across nodes
    host.plan({"domain": [{"match": "web", "hard": "0-3,32-35", "layout": "spread"}]}).apply()
    assert [h for h, _ in pins(host, "web")] == ["0", "32", "2", "34"]
    host.plan({"domain": [{"match": "web", "hard": "0-3,32-35", "layout": "pack"}]}).apply()
    assert [h for h, _ in pins(host, "web")] == ["0", "1", "2", "3"]
    # more vCPUs than CPUs: round robin over the order
    host.plan({"domain": [{"match": "db", "hard": "4-6", "layout": "spread"}]}).apply()
    assert [h for h, _ in pins(host, "db")] == ["4", "6", "5", "4", "6", "5", "4", "6"]


def test_diff_and_json() -> None:
    host = xenvcpu.connect("sim:///default")
    plan = host.plan({"domain": [{"match": "batch", "hard": "48-51", "soft": "0-7", "online": 4}]})
    diff = plan.diff().splitlines()
    assert diff[0] == "--- sim:///default (now)"
    assert diff[1] == "+++ <spec> (wanted)"
    assert "@@ batch (id 3) @@" in diff
    assert "+vCPUs 0-15 hard: 48-51" in diff  # every vCPU alike: one line
    assert "-online: 0-11" in diff and "+online: 0-3" in diff
    doc = plan.to_json()
    json.dumps(doc)
    assert doc["schema"] == 1 and doc["changes"] == len(plan.changes)
    (d,) = doc["domains"]
    assert d["name"] == "batch" and d["uuid"] == str(host.domain("batch").uuid)
    assert {"vcpu": None, "key": "online", "current": "0-11", "wanted": "0-3"} in d["changes"]
    plan.apply()
    assert host.plan(plan.spec).diff() == ""


# ---- apply ---------------------------------------------------------------------------


def test_apply_is_idempotent_and_batches_across_domains() -> None:
    host = xenvcpu.connect(SCALE)
    spec = {"domain": [{"match": "guest-*", "hard": "node:1", "soft": "0-7"}]}
    plan = host.plan(spec)
    calls = sim(host).hypercalls()
    result = plan.apply()
    assert result.pinned == 100
    # 100 pins of 50 domains in a few multicalls (and a few reads), not one hypercall per
    # pin or per domain
    assert sim(host).hypercalls() - calls < 50 // 4
    assert all(p == ("32-63", "0-7") for d in range(1, 51) for p in pins(host, f"guest-{d}"))
    calls = sim(host).hypercalls()
    again = host.plan(spec)
    assert not again and again.changes == []
    assert again.apply().pinned == 0


def test_apply_sets_online_and_waits() -> None:
    host = xenvcpu.connect("sim:///default?delay_ms=20")
    result = host.plan(
        {"domain": [{"match": "web", "online": "0,2"}, {"match": "batch", "online": 3}]}
    ).apply()
    assert result.online_changed == ("web (id 1)", "batch (id 3)")
    assert [v.number for v in host.domain("web").vcpus() if v.state.name != "OFFLINE"] == [0, 2]
    assert host.domain("batch").info().online_vcpus == 3


def test_stale_plan_is_refused_before_any_change() -> None:
    host = xenvcpu.connect("sim:///default")
    plan = host.plan({"domain": [{"match": "web", "hard": "1"}]})
    plan.domains[0].max_vcpus = 2  # as if the domain had been re-created with fewer vCPUs
    before = state(host)
    with pytest.raises(PlacementError, match="stale"):
        plan.apply()
    assert state(host) == before


def test_every_failed_call_leaves_all_or_nothing() -> None:
    """A 50-domain apply (pins and online sets); fail call k for every k in turn: the host
    is then byte for byte the full plan or the state before, never a mix."""
    spec = {"domain": [{"match": "guest-*", "hard": "node:1", "soft": "0-7", "online": 1}]}
    host = xenvcpu.connect(SCALE)
    before = state(host)
    plan = host.plan(spec)
    ops = sim(host).ops()
    plan.apply()
    calls = sim(host).ops() - ops  # every domctl/sysctl of the apply: the same each time
    after = state(host)
    assert after != before
    assert calls > 150  # 100 pins and 50 online sets at least
    outcomes = {"failed": 0, "applied": 0}
    for k in range(1, calls + 1):
        host = xenvcpu.connect(SCALE)
        plan = host.plan(spec)
        sim(host).fail_nth(k, "EIO")
        try:
            plan.apply()
            outcomes["applied"] += 1
            assert state(host) == after, f"call {k}"
        except PlanFailed as e:
            outcomes["failed"] += 1
            assert e.failed and not e.rollback_failed, f"call {k}: {e}"
            assert state(host) == before, f"call {k}: {e}"
    # a failed read while waiting is a failure too: every call counts
    assert outcomes["failed"] == calls


def test_failure_names_items_and_rollback() -> None:
    host = xenvcpu.connect("sim:///default?delay_ms=0")
    before = state(host)
    plan = host.plan(
        {"domain": [{"match": "web", "hard": "2-3"}, {"match": "batch", "hard": "50", "online": 2}]}
    )
    sim(host).set_follow(None)  # batch never follows: the online step fails after the pins
    with pytest.raises(PlanFailed) as e:
        plan.apply(timeout=0.2)
    err = e.value
    assert err.failed[0][:3] == ("batch (id 3)", None, "online")
    assert "web (id 1) pins" in err.rolled_back and "batch (id 3) pins" in err.rolled_back
    assert "batch (id 3) online 0-11" in err.rolled_back
    assert err.rollback_failed == ()
    assert "rolled back" in str(err)
    assert state(host) == before


def test_domain_removed_mid_apply_is_reported_and_the_rest_completes() -> None:
    host = xenvcpu.connect(SCALE)
    spec = {"domain": [{"match": "guest-*", "hard": "node:1"}]}
    plan = host.plan(spec)
    sim(host).remove_domain_at(3, "guest-30")  # gone while the batch runs
    result = plan.apply()
    assert result.vanished == ("guest-30 (id 30)",)
    assert result.pinned == 98
    assert all(pins(host, f"guest-{d}")[0][0] == "32-63" for d in range(1, 51) if d != 30)


def test_domain_gone_before_apply_is_reported() -> None:
    host = xenvcpu.connect("sim:///default")
    plan = host.plan({"domain": [{"match": "[wd]*", "hard": "1"}]})
    sim(host).remove_domain_at(1, "web")
    host.domain("db")  # the removal happens on this read
    result = plan.apply()
    assert result.vanished == ("web (id 1)",)
    assert pins(host, "db")[0][0] == "1"


def test_apply_failed_pin_is_typed_and_rolled_back() -> None:
    host = xenvcpu.connect("sim:///default")
    before = state(host)
    plan = host.plan(
        {"domain": [{"match": "web", "hard": "2-3"}, {"match": "batch", "hard": "48-51"}]}
    )
    sim(host).set_pin_override("batch", 2)  # Xen refuses this one hard pin (EBUSY)
    with pytest.raises(PlanFailed) as e:
        plan.apply()
    assert [(f[0], f[1], f[2]) for f in e.value.failed] == [("batch (id 3)", 2, "pin")]
    assert isinstance(e.value, XenvcpuError)
    assert state(host) == before
