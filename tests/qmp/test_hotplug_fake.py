"""set_hvm_vcpus and the CPU queries against a modelled QEMU (fake_qmp.FakeCpus).

The real-QEMU tests prove the commands; these cover what real QEMU 7.2 cannot show here:
old QEMUs (cpu-add, query-cpus), a guest that ejects slowly, never or refuses, QEMU
refusing or dying half-way, and that every error says exactly what was done before it.
"""

from __future__ import annotations

import errno
import pickle
import time

import pytest

from xenvcpu.daemon.qmp import (
    CpuSlot,
    HotplugReport,
    QemuCpu,
    QmpClient,
    hotpluggable,
    qemu_vcpus,
    report_of,
    set_hvm_vcpus,
    slot_map,
)
from xenvcpu.errors import NotSupported, QmpError, VcpuCountError, VcpuTimeout

from .conftest import FakeFactory
from .fake_qmp import Command, Conn, FakeCpus, x86_slots

SLACK = 1.5


def connect(fake: FakeFactory, model: FakeCpus) -> QmpClient:
    return QmpClient(fake(model).path, timeout=2)


def test_slots_come_in_topology_order_with_qemus_props(fake: FakeFactory) -> None:
    model = FakeCpus(x86_slots(sockets=2, cores=2), boot=1)
    with connect(fake, model) as qmp:
        slots = hotpluggable(qmp)
        cpus = qemu_vcpus(qmp)
    assert [s.props for s in slots] == x86_slots(sockets=2, cores=2)  # QEMU lists reversed
    assert slots[0] == CpuSlot(
        "qemu64-x86_64-cpu",
        {"socket-id": 0, "core-id": 0, "thread-id": 0},
        1,
        "/machine/unattached/device[0]",
    )
    assert slots[0].plugged and not slots[1].plugged
    assert cpus == [QemuCpu(0, "/machine/unattached/device[0]", slots[0].props, 99)]
    assert slot_map(slots, cpus) == dict(enumerate(slots))


def test_query_cpus_before_qemu_2_12(fake: FakeFactory) -> None:
    model = FakeCpus(x86_slots(), boot=2, version=(2, 11))
    with connect(fake, model) as qmp:
        assert [c.cpu_index for c in qemu_vcpus(qmp)] == [0, 1]
        assert set_hvm_vcpus(qmp, 3).added == (2,)


def test_add_by_count_passes_the_slot_props_as_reported(fake: FakeFactory) -> None:
    slots = [{**p, "node-id": p["socket-id"]} for p in x86_slots(sockets=2, cores=2)]
    model = FakeCpus(slots, boot=1)
    server = fake(model)
    with QmpClient(server.path, timeout=2) as qmp:
        report = set_hvm_vcpus(qmp, 4)
    assert report.added == (1, 2, 3) and report.removed == () and report.pending == ()
    assert report.before == {0} and report.after == report.wanted == {0, 1, 2, 3}
    assert report.done and report.method == "device_add" and report.seconds >= 0
    adds = [c.arguments for c in server.commands if c.name == "device_add"]
    assert adds[2] == {
        "socket-id": 1,
        "core-id": 1,
        "thread-id": 0,
        "node-id": 1,
        "driver": "qemu64-x86_64-cpu",
        "id": "cpu-3",
    }
    assert report.summary() == "added vCPU 1-3; removed none; QEMU has vCPU 0-3"


def test_add_a_sparse_set(fake: FakeFactory) -> None:
    model = FakeCpus(x86_slots(), boot=1)
    with connect(fake, model) as qmp:
        assert set_hvm_vcpus(qmp, {0, 3}, id_prefix="vcpu").added == (3,)
        assert [(c.cpu_index, c.qom_path) for c in qemu_vcpus(qmp)][-1] == (
            3,
            "/machine/peripheral/vcpu3",
        )


def test_nothing_to_do_sends_no_change(fake: FakeFactory) -> None:
    model = FakeCpus(x86_slots(), boot=2)
    server = fake(model)
    with QmpClient(server.path, timeout=2) as qmp:
        report = set_hvm_vcpus(qmp, {0, 1})
    assert report == HotplugReport(
        frozenset({0, 1}), frozenset({0, 1}), (), (), (), frozenset({0, 1}), "", report.seconds
    )
    assert server.names() == ["query-cpus-fast", "query-hotpluggable-cpus"]


def test_remove_waits_for_the_guest_to_eject(fake: FakeFactory) -> None:
    model = FakeCpus(x86_slots(), boot=4, eject_after=0.1)
    server = fake(model)
    with QmpClient(server.path, timeout=2) as qmp:
        t0 = time.monotonic()
        report = set_hvm_vcpus(qmp, 2, timeout=5)
        took = time.monotonic() - t0
        assert report.removed == (3, 2) and report.after == {0, 1} and report.pending == ()
        assert 0.2 <= took < 0.2 + SLACK
        # the vCPUs' own DEVICE_DELETED events were taken, the lapic ones stay queued
        assert all(
            e.data["path"].endswith("/lapic")
            for e in qmp.pending_events()
            if e.name == "DEVICE_DELETED"
        )
    dels = [c.arguments for c in server.commands if c.name == "device_del"]
    assert dels == [
        {"id": "/machine/unattached/device[3]"},
        {"id": "/machine/unattached/device[2]"},
    ]


def test_remove_without_waiting_reports_pending(fake: FakeFactory) -> None:
    model = FakeCpus(x86_slots(), boot=3, eject_after=0.5)
    with connect(fake, model) as qmp:
        report = set_hvm_vcpus(qmp, 1, wait=False)
        assert report.pending == (2, 1) and report.removed == () and report.after == {0, 1, 2}
        assert not report.done
        time.sleep(0.8)
        assert set_hvm_vcpus(qmp, 1).after == {0}


def test_add_and_remove_in_one_call_adds_first(fake: FakeFactory) -> None:
    model = FakeCpus(x86_slots(), boot=2)
    server = fake(model)
    with QmpClient(server.path, timeout=2) as qmp:
        report = set_hvm_vcpus(qmp, {0, 2, 3})
    assert (report.added, report.removed) == ((2, 3), (1,)) and report.after == {0, 2, 3}
    kinds = [c.name for c in server.commands if c.name in ("device_add", "device_del")]
    assert kinds == ["device_add", "device_add", "device_del"]


def test_a_guest_that_never_ejects_times_out_with_pending(fake: FakeFactory) -> None:
    model = FakeCpus(x86_slots(), boot=4, eject_after=None)
    with connect(fake, model) as qmp:
        t0 = time.monotonic()
        with pytest.raises(VcpuTimeout) as info:
            set_hvm_vcpus(qmp, 2, timeout=0.4)
        assert time.monotonic() - t0 < 0.4 + SLACK
    e = info.value
    assert e.pending == (2, 3) and e.vcpu == 3
    assert "did not eject vCPU 3" in str(e) and "vCPU 2 not asked yet" in str(e)
    report = report_of(e)
    assert report is not None
    assert (report.added, report.removed, report.pending) == ((), (), (3,))
    assert report.after == {0, 1, 2, 3}
    assert (
        "[before this error: added none; removed none; asked to remove, not yet ejected vCPU 3"
        in str(e)
    )


def test_a_guest_that_refuses_to_eject(fake: FakeFactory) -> None:
    model = FakeCpus(x86_slots(), boot=2, ost_status=0x82)
    with connect(fake, model) as qmp:
        t0 = time.monotonic()
        with pytest.raises(QmpError) as info:
            set_hvm_vcpus(qmp, 1, timeout=10)
        assert time.monotonic() - t0 < SLACK  # the _OST failure ends the wait at once
    e = info.value
    assert e.errno == errno.EBUSY and e.vcpu == 1
    assert "refused to eject vCPU 1 (ACPI _OST status 130: device busy)" in str(e)


def test_legacy_acpi_refuses_removal_with_advice(fake: FakeFactory) -> None:
    model = FakeCpus(x86_slots(), boot=1, legacy=True)
    with connect(fake, model) as qmp:
        set_hvm_vcpus(qmp, 3)
        with pytest.raises(QmpError) as info:
            set_hvm_vcpus(qmp, 1, domain=7)
    e = info.value
    assert (e.qmp_class, e.domain, e.vcpu) == ("GenericError", 7, 2)
    assert e.desc == "acpi: device unplug request for not supported device type: qemu64-x86_64-cpu"
    text = str(e)
    assert text.startswith("domain 7: QEMU at ")
    assert "legacy CPU hotplug interface" in text and "hvmloader" in text
    assert "vCPU 0-2 stay online" in text
    assert "offline them inside the guest" in text and "vCPU 1-2" in text
    assert "/sys/devices/system/cpu/cpu2/online" in text
    assert "[before this error: added none; removed none; QEMU has vCPU 0-2]" in text
    report = report_of(e)
    assert report is not None and report.after == {0, 1, 2} and report.removed == ()
    clone = pickle.loads(pickle.dumps(e))
    assert report_of(clone) == report and clone.qmp_class == "GenericError"


def test_a_refused_add_half_way_reports_what_was_added(fake: FakeFactory) -> None:
    model = FakeCpus(x86_slots(), boot=1, fail_add={3})
    with connect(fake, model) as qmp:
        with pytest.raises(QmpError) as info:
            set_hvm_vcpus(qmp, 4)
    e = info.value
    assert e.qmp_class == "GenericError" and "refusing cpu-3" in str(e)
    assert "[before this error: added vCPU 1-2; removed none; QEMU has vCPU 0-2]" in str(e)
    report = report_of(e)
    assert report is not None and report.added == (1, 2) and not report.done


def test_qemu_dying_half_way_reports_what_was_added(fake: FakeFactory) -> None:
    model = FakeCpus(x86_slots(), boot=1, die_after_add=1)
    with connect(fake, model) as qmp:
        with pytest.raises(QmpError) as info:
            set_hvm_vcpus(qmp, 3)
        assert qmp.closed
    e = info.value
    assert e.errno == errno.ECONNRESET
    report = report_of(e)
    assert report is not None and report.added == (1,) and report.after == {0, 1}
    assert "added vCPU 1; removed none; QEMU has vCPU 0-1 (as last known" in str(e)


def test_qemu_dying_before_its_reply_leaves_that_vcpu_unknown(fake: FakeFactory) -> None:
    model = FakeCpus(x86_slots(), boot=1, die_after_add=2, die_before_reply=True)
    with connect(fake, model) as qmp:
        with pytest.raises(QmpError) as info:
            set_hvm_vcpus(qmp, 4)
    report = report_of(info.value)
    assert report is not None and report.added == (1,) and report.after == {0, 1}
    assert str(info.value).endswith(
        "[before this error: added vCPU 1; removed none; QEMU has vCPU 0-1 (as last known: "
        "QEMU cannot be asked); whether QEMU carried out adding vCPU 2 is unknown (no reply)]"
    )


def test_an_added_cpu_with_another_index_is_an_error(fake: FakeFactory) -> None:
    model = FakeCpus(x86_slots(), boot=1, wrong_index=True)
    with connect(fake, model) as qmp, pytest.raises(QmpError) as info:
        set_hvm_vcpus(qmp, 2)
    assert info.value.errno == errno.EPROTO and "its cpu-index 1 is no CPU" in str(info.value)


def test_count_validation_before_anything_is_done(fake: FakeFactory) -> None:
    model = FakeCpus(x86_slots(), boot=1)
    server = fake(model)
    with QmpClient(server.path, timeout=2) as qmp:
        with pytest.raises(
            VcpuCountError,
            match=r"cannot have 5 vCPUs; the valid range is 1\.\.4; it has 4 vCPU slot\(s\), "
            r"vCPU 0-3",
        ):
            set_hvm_vcpus(qmp, 5)
        with pytest.raises(VcpuCountError, match="cannot have 0 vCPUs"):
            set_hvm_vcpus(qmp, 0)
        with pytest.raises(VcpuCountError, match="at least one vCPU"):
            set_hvm_vcpus(qmp, set())
        with pytest.raises(VcpuCountError, match="has no vCPU 4,7") as info:
            set_hvm_vcpus(qmp, {0, 4, 7})
        assert info.value.vcpu == 4
        with pytest.raises(TypeError):
            set_hvm_vcpus(qmp, True)
        with pytest.raises(TypeError):
            set_hvm_vcpus(qmp, "0-3")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            set_hvm_vcpus(qmp, {0, 1.0})  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            set_hvm_vcpus(qmp, 2, timeout=0)
    assert "device_add" not in server.names()


def test_no_headroom_says_how_qemu_must_be_started(fake: FakeFactory) -> None:
    model = FakeCpus(x86_slots(cores=1), boot=1)
    with connect(fake, model) as qmp, pytest.raises(VcpuCountError) as info:
        set_hvm_vcpus(qmp, 2)
    assert "started without room for more vCPUs" in str(info.value)
    assert "maxvcpus" in str(info.value)


def test_cpu_add_before_qemu_2_7(fake: FakeFactory) -> None:
    model = FakeCpus(x86_slots(), boot=1, version=(2, 6))
    server = fake(model)
    with QmpClient(server.path, timeout=2) as qmp:
        report = set_hvm_vcpus(qmp, 3)
        assert report.method == "cpu-add" and report.added == (1, 2)
        assert [c.arguments for c in server.commands if c.name == "cpu-add"] == [
            {"id": 1},
            {"id": 2},
        ]
        with pytest.raises(QmpError, match="max allowed") as info:
            set_hvm_vcpus(qmp, 5)  # no slot list: QEMU itself refuses
        assert report_of(info.value) is not None
        with pytest.raises(NotSupported, match=r"older than 2\.7.*nothing was changed"):
            set_hvm_vcpus(qmp, 1)


def test_slots_of_several_vcpus_are_not_supported(fake: FakeFactory) -> None:
    model = FakeCpus(x86_slots(), boot=1, vcpus_count=2)
    with connect(fake, model) as qmp, pytest.raises(NotSupported, match="hold 2 vCPUs"):
        set_hvm_vcpus(qmp, 2)


def test_slot_map_refuses_a_numbering_it_cannot_follow() -> None:
    slots = [
        CpuSlot("t", {"core-id": 0}, 1, "/a"),
        CpuSlot("t", {"core-id": 1}, 1, "/b"),
    ]
    cpus = [QemuCpu(0, "/b", {}, None), QemuCpu(1, "/a", {}, None)]
    with pytest.raises(NotSupported, match="another order"):
        slot_map(slots, cpus)


def test_a_machine_without_cpu_hotplug(fake: FakeFactory) -> None:
    def model(conn: Conn, cmd: Command) -> None:
        if cmd.name == "query-hotpluggable-cpus":
            conn.error(cmd, "GenericError", "machine does not support hot-plugging CPUs")
        else:
            FakeCpus(x86_slots(), boot=1)(conn, cmd)

    with QmpClient(fake(model).path, timeout=2) as qmp:
        with pytest.raises(QmpError, match="does not support hot-plugging"):
            set_hvm_vcpus(qmp, 2)


def test_unexpected_replies_are_typed(fake: FakeFactory) -> None:
    def model(conn: Conn, cmd: Command) -> None:
        conn.reply(cmd, {"not": "a list"} if cmd.name == "query-cpus-fast" else [{"x": 1}])

    with QmpClient(fake(model).path, timeout=2) as qmp:
        with pytest.raises(QmpError, match="unexpected query-cpus-fast reply") as info:
            qemu_vcpus(qmp)
        assert info.value.errno == errno.EPROTO
        with pytest.raises(QmpError, match="unexpected query-hotpluggable-cpus reply"):
            hotpluggable(qmp)
