"""The QMP client and vCPU hot-add against a real qemu-system-x86_64 (TCG, paused: -S).

Without a guest OS QEMU still hot-adds CPUs, and refuses device_del of a CPU exactly as
it does under Xen (the legacy ACPI CPU hotplug interface is in force until a guest OS
switches to the modern one).  Hot-remove with a Linux guest is in test_guest.py.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import threading
import time

import pytest

from xenvcpu.daemon.qmp import (
    QmpClient,
    hotpluggable,
    qemu_vcpus,
    report_of,
    set_hvm_vcpus,
)
from xenvcpu.errors import QmpError, VcpuCountError

from .conftest import QemuFactory

SLACK = 1.5
CPU = "qemu64-x86_64-cpu"


def test_handshake_reports_the_running_version(qemu: QemuFactory) -> None:
    vm = qemu("-machine", "pc")
    out = subprocess.run([vm.binary, "--version"], capture_output=True, text=True, check=True)
    found = re.search(r"version (\d+)\.(\d+)\.(\d+)", out.stdout)
    assert found
    with QmpClient(vm.qmp_path, timeout=5) as qmp:
        assert qmp.version == tuple(int(x) for x in found.groups())
        assert qmp.execute("query-status")["status"] == "prelaunch"
        assert qmp.execute("query-name") == {}


def test_slots_of_pc_with_one_cpu_and_maxcpus_4(qemu: QemuFactory) -> None:
    """The measured reply of docs/qmp.md: free slots are cores of socket 0."""
    vm = qemu("-machine", "pc", "-smp", "1,maxcpus=4")
    with QmpClient(vm.qmp_path, timeout=5) as qmp:
        raw = qmp.execute("query-hotpluggable-cpus")
        slots = hotpluggable(qmp)
        assert raw == [
            {
                "props": {"core-id": 3, "thread-id": 0, "socket-id": 0},
                "vcpus-count": 1,
                "type": CPU,
            },
            {
                "props": {"core-id": 2, "thread-id": 0, "socket-id": 0},
                "vcpus-count": 1,
                "type": CPU,
            },
            {
                "props": {"core-id": 1, "thread-id": 0, "socket-id": 0},
                "vcpus-count": 1,
                "type": CPU,
            },
            {
                "props": {"core-id": 0, "thread-id": 0, "socket-id": 0},
                "vcpus-count": 1,
                "qom-path": "/machine/unattached/device[0]",
                "type": CPU,
            },
        ]
        assert [s.props["core-id"] for s in slots] == [0, 1, 2, 3]
        # socket-id=1 does not exist on this machine: the slot's props must be used
        with pytest.raises(QmpError) as info:
            qmp.execute(
                "device_add",
                {"driver": CPU, "id": "cpu-1", "socket-id": 1, "core-id": 0, "thread-id": 0},
            )
        assert info.value.qmp_class == "GenericError"
        assert info.value.desc == "Invalid CPU socket-id: 1 must be in range 0:0"


LAYOUTS = {
    "pc-cores": (["-machine", "pc", "-smp", "1,maxcpus=4"], 4, "core-id"),
    "pc-sockets-and-cores": (["-machine", "pc", "-smp", "1,sockets=2,cores=2,maxcpus=4"], 4, None),
    "pc-threads": (["-machine", "pc", "-smp", "2,threads=2,maxcpus=4"], 4, "thread-id"),
    "q35": (["-machine", "q35", "-smp", "1,maxcpus=3"], 3, "core-id"),
    "pc-i440fx-5.2-sockets": (["-machine", "pc-i440fx-5.2", "-smp", "1,maxcpus=4"], 4, "socket-id"),
    "numa": (
        [
            "-machine", "pc", "-smp", "1,sockets=2,cores=2,maxcpus=4",
            "-object", "memory-backend-ram,id=m0,size=128M",
            "-object", "memory-backend-ram,id=m1,size=128M",
            "-numa", "node,nodeid=0,memdev=m0", "-numa", "node,nodeid=1,memdev=m1",
            "-numa", "cpu,node-id=0,socket-id=0", "-numa", "cpu,node-id=1,socket-id=1",
        ],
        4,
        None,
    ),
}  # fmt: skip


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_add_every_vcpu_reads_back_in_qemu(qemu: QemuFactory, layout: str) -> None:
    args, slots, varying = LAYOUTS[layout]
    vm = qemu(*args)
    with QmpClient(vm.qmp_path, timeout=5) as qmp:
        before = [c.cpu_index for c in qemu_vcpus(qmp)]
        report = set_hvm_vcpus(qmp, slots)
        cpus = qemu_vcpus(qmp)
        free = hotpluggable(qmp)
    assert report.added == tuple(range(len(before), slots))
    assert report.after == set(range(slots)) and report.done
    assert [c.cpu_index for c in cpus] == list(range(slots))
    for cpu, slot in zip(cpus, free):  # vCPU N sits in the N-th slot, with its props
        assert cpu.props == slot.props and slot.qom_path == cpu.qom_path
    for n in report.added:
        assert cpus[n].qom_path == f"/machine/peripheral/cpu-{n}"
    if varying:
        assert [s.props[varying] for s in free][: len(free)] != [0] * len(free)
    if layout == "numa":
        assert [c.props["node-id"] for c in cpus] == [0, 0, 1, 1]


def test_add_a_sparse_vcpu_lands_in_its_slot(qemu: QemuFactory) -> None:
    vm = qemu("-machine", "pc", "-smp", "1,sockets=2,cores=2,maxcpus=4")
    with QmpClient(vm.qmp_path, timeout=5) as qmp:
        assert set_hvm_vcpus(qmp, {0, 3}).added == (3,)
        cpus = qemu_vcpus(qmp)
        assert [(c.cpu_index, c.props) for c in cpus] == [
            (0, {"core-id": 0, "thread-id": 0, "socket-id": 0}),
            (3, {"core-id": 1, "thread-id": 0, "socket-id": 1}),
        ]
        assert set_hvm_vcpus(qmp, 4).added == (1, 2)


@pytest.mark.parametrize("smp", ["1", "2"])
def test_no_maxcpus_headroom_is_a_typed_error(qemu: QemuFactory, smp: str) -> None:
    vm = qemu("-machine", "pc", "-smp", smp)
    with QmpClient(vm.qmp_path, timeout=5) as qmp:
        with pytest.raises(VcpuCountError) as info:
            set_hvm_vcpus(qmp, int(smp) + 1)
        assert len(qemu_vcpus(qmp)) == int(smp)  # nothing was done
    text = str(info.value)
    assert f"cannot have {int(smp) + 1} vCPUs; the valid range is 1..{smp}" in text
    assert "started without room for more vCPUs" in text


def test_device_del_is_refused_like_under_xen(qemu: QemuFactory) -> None:
    vm = qemu("-machine", "pc", "-smp", "1,maxcpus=4")
    with QmpClient(vm.qmp_path, timeout=5) as qmp:
        set_hvm_vcpus(qmp, 3)
        with pytest.raises(QmpError) as info:
            set_hvm_vcpus(qmp, 1, timeout=2)
        assert [c.cpu_index for c in qemu_vcpus(qmp)] == [0, 1, 2]
    e = info.value
    assert e.qmp_class == "GenericError"
    assert e.desc == f"acpi: device unplug request for not supported device type: {CPU}"
    assert "legacy CPU hotplug interface" in str(e) and "vCPU 0-2 stay online" in str(e)
    report = report_of(e)
    assert report is not None and report.removed == () and report.after == {0, 1, 2}


def test_the_boot_cpu_cannot_be_removed(qemu: QemuFactory) -> None:
    vm = qemu("-machine", "pc", "-smp", "2,maxcpus=4")
    with QmpClient(vm.qmp_path, timeout=5) as qmp, pytest.raises(QmpError) as info:
        set_hvm_vcpus(qmp, {1})
    assert info.value.desc == "Boot CPU is unpluggable"
    assert "refused to remove vCPU 0" in str(info.value)


def test_qemu_killed_mid_conversation(qemu: QemuFactory) -> None:
    """A command in flight when QEMU dies fails at once with a typed error."""
    vm = qemu("-machine", "pc", "-smp", "1,maxcpus=4")
    with QmpClient(vm.qmp_path, timeout=10) as qmp:
        vm.signal(signal.SIGSTOP)  # the command below stays unanswered ...
        killer = threading.Timer(0.3, vm.signal, (signal.SIGKILL,))  # ... until QEMU dies
        killer.start()
        t0 = time.monotonic()
        with pytest.raises(QmpError) as info:
            qmp.execute("query-cpus-fast")
        killer.join()
        assert time.monotonic() - t0 < 0.3 + SLACK
        assert info.value.errno == errno.ECONNRESET and qmp.closed
        assert "has the QEMU process exited" in str(info.value)
    assert vm.proc is not None and vm.proc.wait(5) == -signal.SIGKILL
    # its socket file stays behind: the next connection is refused
    with pytest.raises(QmpError, match="stale socket") as refused:
        QmpClient(vm.qmp_path, timeout=2)
    assert refused.value.errno == errno.ECONNREFUSED


def test_qemu_killed_between_commands(qemu: QemuFactory) -> None:
    vm = qemu("-machine", "pc", "-smp", "1,maxcpus=4")
    with QmpClient(vm.qmp_path, timeout=5) as qmp:
        set_hvm_vcpus(qmp, 2)
        vm.kill()
        with pytest.raises(QmpError) as info:
            set_hvm_vcpus(qmp, 3)
        assert info.value.errno in (errno.ECONNRESET, errno.EPIPE) and qmp.closed


def test_a_stopped_qemu_times_out_within_the_timeout(qemu: QemuFactory) -> None:
    vm = qemu("-machine", "pc", "-smp", "1,maxcpus=4")
    with QmpClient(vm.qmp_path, timeout=5) as qmp:
        vm.signal(signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            with pytest.raises(QmpError) as info:
                qmp.execute("query-cpus-fast", timeout=0.5)
            assert 0.5 <= time.monotonic() - t0 < 0.5 + SLACK
            assert info.value.errno == errno.ETIMEDOUT
        finally:
            vm.signal(signal.SIGCONT)
        # the late reply is recognised and dropped: the connection goes on
        assert [c.cpu_index for c in qemu_vcpus(qmp)] == [0]


def test_a_second_client_gets_no_greeting_within_the_timeout(qemu: QemuFactory) -> None:
    """QEMU serves one QMP connection at a time; the next one is accepted and left silent."""
    vm = qemu("-machine", "pc")
    with QmpClient(vm.qmp_path, timeout=5):
        t0 = time.monotonic()
        with pytest.raises(QmpError) as info:
            QmpClient(vm.qmp_path, timeout=0.5)
        assert time.monotonic() - t0 < 0.5 + SLACK
    assert info.value.errno == errno.ETIMEDOUT
    assert "another client may hold the monitor" in str(info.value)
    with QmpClient(vm.qmp_path, timeout=5) as qmp:  # served again once the first left
        assert qmp.execute("query-status")["status"] == "prelaunch"


def test_no_socket_for_a_domain_without_qemu(qemu: QemuFactory) -> None:
    vm = qemu("-machine", "pc")
    missing = os.path.join(os.path.dirname(vm.qmp_path), "qmp-libxl-12")
    with pytest.raises(QmpError, match="no QEMU device model") as info:
        QmpClient(missing, timeout=1)
    assert info.value.errno == errno.ENOENT
