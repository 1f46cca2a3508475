"""vCPU hot-add and hot-remove with a real Linux guest under QEMU (TCG), both ways proven
through QMP and through the guest's own console.

The guest (conftest ``guest``: Debian's kernel, a busybox initramfs whose init brings new
CPUs online and prints ``XENVCPU-GUEST: online=... present=...`` on every change) boots
once per session with ``-machine pc -smp 1,maxcpus=4``.  Its kernel switches QEMU to the
modern ACPI CPU hotplug interface at boot, so device_del of a CPU completes: the kernel
offlines the CPU and ejects it.

QEMU 7.2 under TCG corrupts its heap when a CPU is hot-removed: the next device_add
crashes it (docs/qmp.md).  So the tests run in order, add before remove, and nothing adds
a CPU to this guest after a removal.
"""

from __future__ import annotations

import time

import pytest

from xenvcpu.daemon.qmp import QmpClient, qemu_vcpus, set_hvm_vcpus

from .conftest import Guest
from .qemu_harness import MARK

#: Seconds the guest gets to follow (it polls every 0.2 s; TCG on a loaded host is slow).
FOLLOW = 60.0


def guest_state(guest: Guest, state: str, after: int) -> float:
    """Wait for the console line ``online=<state> present=<state>``; return the delay."""
    t0 = time.monotonic()
    guest.vm.wait_console(rf"^{MARK} online={state} present={state}\s*$", FOLLOW, after)
    return time.monotonic() - t0


def test_guest_boots_with_one_vcpu(guest: Guest) -> None:
    with QmpClient(guest.vm.qmp_path, timeout=10) as qmp:
        assert [c.cpu_index for c in qemu_vcpus(qmp)] == [0]
        assert qmp.execute("query-status")["status"] == "running"
    assert f"{MARK} up online=0 present=0" in guest.vm.console()
    print(f"\nguest: {guest.files.description}, booted in {guest.boot_seconds:.1f} s")


def test_hot_add_brings_vcpus_online_in_the_guest(guest: Guest) -> None:
    if guest.removed_once:
        pytest.skip("a vCPU was removed from this QEMU already: QEMU 7.2/TCG would crash on add")
    mark = len(guest.vm.console())
    with QmpClient(guest.vm.qmp_path, timeout=10) as qmp:
        t0 = time.monotonic()
        report = set_hvm_vcpus(qmp, 3)
        took = time.monotonic() - t0
        assert report.added == (1, 2) and report.after == {0, 1, 2}
        cpus = qemu_vcpus(qmp)
        assert [(c.cpu_index, c.qom_path) for c in cpus] == [
            (0, "/machine/unattached/device[0]"),
            (1, "/machine/peripheral/cpu-1"),
            (2, "/machine/peripheral/cpu-2"),
        ]
        followed = guest_state(guest, "0-2", mark)
        # the guest's ACPI code acknowledged each insertion (_OST source 1, status 0)
        acks: set[object] = set()
        while len(acks) < 2:
            event = qmp.wait_event("ACPI_DEVICE_OST", 10)
            assert event is not None, f"no _OST for every new CPU; got {acks}"
            info = event.data["info"]
            if (info["source"], info["status"]) == (1, 0):
                acks.add(info.get("device"))
        assert acks == {"cpu-1", "cpu-2"}
    print(f"\nadd 2 vCPUs: QMP {took:.2f} s, guest online {followed:.1f} s later")


def test_hot_remove_is_ejected_by_the_guest(guest: Guest) -> None:
    with QmpClient(guest.vm.qmp_path, timeout=10) as qmp:
        if {c.cpu_index for c in qemu_vcpus(qmp)} != {0, 1, 2}:
            if guest.removed_once:
                pytest.skip("needs vCPU 0-2, which cannot be re-added after a removal")
            set_hvm_vcpus(qmp, 3)
            guest_state(guest, "0-2", 0)
        mark = len(guest.vm.console())
        t0 = time.monotonic()
        guest.removed_once = True
        report = set_hvm_vcpus(qmp, 1, timeout=FOLLOW)
        took = time.monotonic() - t0
        assert report.removed == (2, 1) and report.pending == ()
        assert report.after == {0} and report.done
        assert [c.cpu_index for c in qemu_vcpus(qmp)] == [0]
        # the guest itself saw the CPUs go: offline, then no longer present
        guest_state(guest, "0", mark)
    assert guest.vm.alive()
    print(f"\nremove 2 vCPUs (device_del + guest eject): {took:.2f} s")
