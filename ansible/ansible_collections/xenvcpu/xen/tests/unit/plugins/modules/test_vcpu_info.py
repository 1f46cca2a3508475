"""xenvcpu.xen.vcpu_info on the simulated host."""

from __future__ import annotations

from ansible_collections.xenvcpu.xen.plugins.module_utils.xenvcpu_common import group_vcpus
from ansible_collections.xenvcpu.xen.plugins.modules import vcpu_info

from .conftest import RunModule


def test_reads_host_and_every_domain(run_module: RunModule) -> None:
    result = run_module(vcpu_info.main, {"uri": "sim:///default"})
    assert result["changed"] is False
    host = result["host"]
    assert host["uri"] == "sim:///default" and host["nr_nodes"] == 2
    assert [n["cpus"] for n in host["nodes"]] == ["0-31", "32-63"]
    assert [p["name"] for p in host["cpupools"]] == ["Pool-0", "batch-pool"]
    names = [d["name"] for d in result["domains"]]
    assert names == ["Domain-0", "web", "db", "batch"]
    db = result["domains"][2]
    assert db["guest_type"] == "hvm" and len(db["vcpus"]) == 8
    assert sum(v["online"] for v in db["vcpus"]) == 6
    assert db["vcpus"][0]["hard_affinity"] == "16-31"


def test_some_domains_and_check_mode(run_module: RunModule) -> None:
    result = run_module(
        vcpu_info.main, {"uri": "sim:///default", "domains": ["db", "1"]}, check=True
    )
    assert [d["name"] for d in result["domains"]] == ["db", "web"]


def test_bad_uri_fails_with_xenvcpus_message(run_module: RunModule) -> None:
    result = run_module(vcpu_info.main, {"uri": "sim:///default?cpus=8"})
    assert result["failed"] is True and "cpus" in result["msg"]


def test_group_vcpus() -> None:
    assert group_vcpus([5, 0, 1, 2, 7, 8]) == "0-2,5,7-8"
    assert group_vcpus([]) == ""
