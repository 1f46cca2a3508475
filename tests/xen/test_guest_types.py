"""The lab's other guest types, at the xl level: the PVH guest "domu-pvh" and the HVM guest
"domu-hvm" (XEN_TEST_GUESTS=pv,pvh,hvm; docs/lab.md). Their fixtures skip when the run did not
start them, so a default run (PV guest only) reports these as skipped.

What this pins down for the API code that comes later:
  * Xen offers HVM (and so PVH) when the emulated CPU has SVM (XEN_TEST_CPU; qemu64 has it,
    +npt adds "hap"); `xl info` virt_caps says so. Both lab guests use shadow paging.
  * libxl records the guest type in xenstore at /libxl/<domid>/type ("pv", "pvh", "hvm").
  * A PVH guest follows `xl vcpu-set` both ways, like a PV guest (cpu/N/availability).
  * An HVM guest's vCPUs are CPUs of its qemu-xen device model: `xl vcpu-set` up is a QMP
    device_add ("qemu32-i386-cpu", socket-id = vCPU number, id "cpu-N"), plus the
    availability nodes; down only writes the nodes (the CPU stays in qemu and in the guest),
    and qemu refuses device_del of a CPU on this machine type.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
import xl
from conftest import started_guests
from qmp import QMP_PATH, Qmp


def virt_caps() -> set[str]:
    return set(str(xl.info()["virt_caps"]).split())


def test_virt_caps_offer_what_the_run_needs() -> None:
    caps = virt_caps()
    assert "pv" in caps
    if {"pvh", "hvm"} & set(started_guests()):
        # PVH and HVM guests need SVM (or VMX); the lab's use shadow paging (hap=0)
        assert {"hvm", "shadow"} <= caps, f"virt_caps {sorted(caps)}: -cpu lacks svm?"


def test_pvh_guest_runs_as_pvh(pvh_guest: str) -> None:
    domid = xl.domid(pvh_guest)
    assert xl.xenstore_read(f"/libxl/{domid}/type") == "pvh"
    # no device model: nothing for qemu in xenstore, no QMP socket
    assert not xl.xenstore_exists(f"/local/domain/0/device-model/{domid}")
    assert not os.path.exists(f"/var/run/xen/qmp-libxl-{domid}")
    vcpus = xl.vcpus(pvh_guest)
    assert len(vcpus) == 4  # maxvcpus=4
    assert [v.online for v in vcpus] == [True, True, False, False]  # vcpus=2
    assert xl.guest_online(pvh_guest) == {0, 1}
    # Linux PVH has the PV vCPU hotplug watch: availability nodes for every vCPU
    assert [xl.xenstore_read(f"/local/domain/{domid}/cpu/{i}/availability") for i in range(4)] == [
        "online",
        "online",
        "offline",
        "offline",
    ]


def test_pvh_guest_follows_vcpu_set(pvh_guest: str) -> None:
    """`xl vcpu-set` up and down: Xen (xl vcpu-list) and the guest's own view agree."""
    try:
        for n in (4, 1, 3):
            xl.vcpu_set(pvh_guest, n, timeout=90)
            assert [v.online for v in xl.vcpus(pvh_guest)] == [i < n for i in range(4)]
            xl.wait_guest_online(pvh_guest, range(n), timeout=60)
    finally:
        xl.vcpu_set(pvh_guest, 2, timeout=90)
        xl.wait_guest_online(pvh_guest, {0, 1}, timeout=60)


# --- HVM: the toolstack side, on a paused guest (hvm_paused) --------------------------------
def cpus_fast(domid: int) -> list[dict[str, Any]]:
    with Qmp(domid) as q:
        cpus: list[dict[str, Any]] = q.execute("query-cpus-fast")
    return sorted(cpus, key=lambda c: int(c["cpu-index"]))


def availability(domid: int) -> list[str | None]:
    return [xl.xenstore_read(f"/local/domain/{domid}/cpu/{i}/availability") for i in range(4)]


def test_hvm_device_model_and_qmp(hvm_paused: str) -> None:
    domid = xl.domid(hvm_paused)
    assert xl.xenstore_read(f"/libxl/{domid}/type") == "hvm"
    assert xl.xenstore_read(f"/local/domain/0/device-model/{domid}/state") == "running"
    assert os.path.exists(QMP_PATH.format(domid=domid))
    with Qmp(domid) as q:
        assert q.greeting["QMP"]["version"]["qemu"]["major"] >= 7
        assert q.capabilities_reply == {"return": {}}
        hot = q.execute("query-hotpluggable-cpus")
    # one socket per vCPU, one core and thread each; present ones have a qom-path
    assert sorted(int(c["props"]["socket-id"]) for c in hot) == [0, 1, 2, 3]
    assert {c["type"] for c in hot} == {"qemu32-i386-cpu"}
    assert all(c["vcpus-count"] == 1 and c["props"]["core-id"] == 0 for c in hot)
    assert all(c["props"]["thread-id"] == 0 for c in hot)
    assert sorted(int(c["props"]["socket-id"]) for c in hot if "qom-path" in c) == [0, 1]
    cpus = cpus_fast(domid)
    assert [(c["cpu-index"], c["props"]["socket-id"]) for c in cpus] == [(0, 0), (1, 1)]
    # libxl writes the PV hotplug nodes for HVM guests too
    assert availability(domid) == ["online", "online", "offline", "offline"]
    vcpus = xl.vcpus(hvm_paused)
    assert len(vcpus) == 4 and [v.online for v in vcpus][1:] == [False, False, False]


def test_hvm_vcpu_set_adds_through_qmp_only(hvm_paused: str) -> None:
    """Up: device_add of "cpu-2"; down: only xenstore changes, the CPU stays in qemu."""
    domid = xl.domid(hvm_paused)
    xl.xl("vcpu-set", hvm_paused, 3)
    cpus = cpus_fast(domid)
    assert [c["cpu-index"] for c in cpus] == [0, 1, 2]
    assert cpus[2]["qom-path"] == "/machine/peripheral/cpu-2"
    assert cpus[2]["props"] == {"core-id": 0, "thread-id": 0, "socket-id": 2}
    assert availability(domid) == ["online", "online", "online", "offline"]
    xl.xl("vcpu-set", hvm_paused, 2)  # succeeds (rc 0) ...
    assert availability(domid) == ["online", "online", "offline", "offline"]
    assert [c["cpu-index"] for c in cpus_fast(domid)] == [0, 1, 2]  # ... but removes nothing
    with Qmp(domid) as q:
        reply = q.reply("device_del", id="cpu-2")
    assert reply == {
        "error": {
            "class": "GenericError",
            "desc": "acpi: device unplug request for not supported device type: qemu32-i386-cpu",
        }
    }
    # raising the count again adds only what qemu lacks
    xl.xl("vcpu-set", hvm_paused, 4)
    assert [c["qom-path"] for c in cpus_fast(domid)][2:] == [
        "/machine/peripheral/cpu-2",
        "/machine/peripheral/cpu-3",
    ]


# --- HVM: the running guest (XEN_TEST_GUESTS=...,hvm) ------------------------------------------
def test_hvm_guest_runs_as_hvm(hvm_guest: str) -> None:
    domid = xl.domid(hvm_guest)
    assert xl.xenstore_read(f"/libxl/{domid}/type") == "hvm"
    assert os.path.exists(QMP_PATH.format(domid=domid))
    online = xl.guest_online(hvm_guest)
    assert {0, 1} <= online
    assert {v.vcpu for v in xl.vcpus(hvm_guest) if v.online} == online
    assert [c["cpu-index"] for c in cpus_fast(domid)] == sorted(online)


def test_hvm_guest_gets_a_vcpu_and_keeps_it(hvm_guest: str) -> None:
    """Up: the guest sees an ACPI CPU hot-add and its init onlines the CPU. Down: `xl vcpu-set`
    succeeds but the vCPU stays online in Xen, in qemu and in the guest. So the vCPUs this test
    adds stay for the rest of the run."""
    domid = xl.domid(hvm_guest)
    n = len(cpus_fast(domid))
    if n == 4:
        pytest.skip("the HVM guest already has all 4 vCPUs (they cannot be removed)")
    xl.vcpu_set(hvm_guest, n + 1, timeout=300)
    xl.wait_guest_online(hvm_guest, range(n + 1), timeout=300)
    assert [c["cpu-index"] for c in cpus_fast(domid)] == list(range(n + 1))
    xl.xl("vcpu-set", hvm_guest, n)
    assert availability(domid)[n] == "offline"
    time.sleep(20)
    assert xl.online_count(hvm_guest) == n + 1
    assert xl.guest_online(hvm_guest) == set(range(n + 1))
    assert len(cpus_fast(domid)) == n + 1
