"""The simulated hosts users can describe: TOML files and scale queries."""

from __future__ import annotations

from pathlib import Path

import pytest

import xenvcpu
from xenvcpu import CpuMap, VcpuState
from xenvcpu.errors import XenvcpuError

HOST_TOML = """
# CPUs 6-7 are offline: maps stay 8 wide, only 6 CPUs are online
[host]
cpus = 8
nodes = 2
offline = "6-7"
version = "4.18"

[[pool]]
id = 1
name = "rt"
sched = "credit"
cpus = "4-5"

[[domain]]
id = 0
name = "Domain-0"
vcpus = 2

[[domain]]
id = 5
name = "rtguest"
vcpus = 3
online = "0-1"
pool = 1
hard = "4-5"
"""


def test_toml_host(tmp_path: Path) -> None:
    path = tmp_path / "host.toml"
    path.write_text(HOST_TOML)
    h = xenvcpu.connect(f"sim://{path}")
    assert h.xen_version == "4.18"
    assert (h.max_cpus, str(h.cpus), h.info.nr_cpus) == (8, "0-5", 6)
    pools = {p.name: p for p in h.cpupools}
    assert str(pools["rt"].cpus) == "4-5" and pools["rt"].scheduler == "credit"
    assert str(pools["Pool-0"].cpus) == "0-3"
    g = h.domain("rtguest")
    assert (g.id, g.max_vcpus, g.cpupool, g.online_vcpus) == (5, 3, 1, 2)
    assert [v.state is VcpuState.OFFLINE for v in g.vcpus()] == [False, False, True]
    assert {str(v.hard_affinity) for v in g.vcpus()} == {"4-5"}
    # An offline CPU is a valid map member but not a place Xen can run the vCPU.
    with pytest.warns(xenvcpu.AffinityNarrowed, match="hard 5-7 -> 5"):
        assert str(g.pin_vcpu(0, hard="5-7").hard) == "5"


def test_scale_query_host() -> None:
    h = xenvcpu.connect("sim:///?cpus=4096&nodes=4&domains=50&vcpus=8")
    assert h.max_cpus == 4096 and len(h.cpus) == 4096 and h.topology.nodes == [0, 1, 2, 3]
    snap = h.snapshot()
    assert len(snap) == 51 and snap.vcpu_count == sum(s.domain.max_vcpus for s in snap)
    node3 = CpuMap.parse("node:3", 4096, topology=h.topology)
    assert len(node3) == 1024 and node3.to_cpulist() == "3072-4095"


@pytest.mark.parametrize(
    ("uri", "match"),
    [
        ("sim:///nonexistent/host.toml", "cannot read sim host file"),
        ("sim:///?cpus=abc", "cpus=abc is not a number"),
        ("sim:///?bogus=1", 'unknown sim host parameter "bogus"'),
    ],
)
def test_bad_sim_uris(uri: str, match: str) -> None:
    with pytest.raises(XenvcpuError, match=match):
        xenvcpu.connect(uri)
