"""Domain.set_vcpus on an HVM domain of a simulated host, backed by a real QEMU.

The simulated host is given ``run_dir=`` (where libxl keeps ``qmp-libxl-<domid>``): its HVM
domain's device model is the QEMU whose QMP socket is there. With a booted Linux guest
(conftest's guest files, ACPI CPU hotplug) the whole path runs as on Xen: libxl's
per-domain lock, device_add / device_del through QMP, the guest onlining and ejecting
CPUs, availability written to the (simulated) xenstore, and wait=True waiting for QEMU
and for the hypervisor's view.

Each failure the issue names is a typed error with nothing half-reported: QEMU started
without maxcpus headroom, QEMU killed mid-conversation, a socket that never answers, a
libxl lock held by someone else.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import xenvcpu
from xenvcpu import Domain, GuestType
from xenvcpu.daemon.qmp import QmpClient, qemu_vcpus
from xenvcpu.errors import DaemonError, QmpError, VcpuCountError
from xenvcpu.guests import lock_path

from . import qemu_harness
from .conftest import QemuFactory, unavailable
from .qemu_harness import MARK, Qemu

DOMID = 5
HOST_TOML = f"""
[host]
cpus = 8
[[domain]]
id = 0
name = "Domain-0"
vcpus = 2
[[domain]]
id = {DOMID}
name = "hvm-guest"
type = "hvm"
vcpus = 4
online = "0"
"""


@pytest.fixture
def run_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="xenvcpu-run-"))  # short: socket paths <= 107 bytes
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def connect(run_dir: Path, extra: str = "") -> xenvcpu.Host:
    toml = run_dir / "host.toml"
    toml.write_text(HOST_TOML)
    return xenvcpu.connect(f"sim://{toml}?run_dir={run_dir}&delay_ms=0{extra}")


def behind(vm: Qemu, run_dir: Path) -> None:
    """Put ``vm``'s QMP socket where libxl's would be for DOMID."""
    os.symlink(vm.qmp_path, run_dir / f"qmp-libxl-{DOMID}")


def qemu_cpus(vm: Qemu) -> list[int]:
    with QmpClient(vm.qmp_path, timeout=10) as qmp:
        return [c.cpu_index for c in qemu_vcpus(qmp)]


def test_the_domain_is_hvm_by_its_record(run_dir: Path) -> None:
    dom = connect(run_dir).domain("hvm-guest")
    assert dom.guest_type is GuestType.HVM
    assert "/libxl/5/type is 'hvm'" in dom.guest_type_rule


@pytest.fixture
def booted(run_dir: Path) -> Iterator[Qemu]:
    """A Linux guest with one of four vCPUs online, behind domain 5 of the simulated host."""
    try:
        qemu_harness.require_qemu()
        files = qemu_harness.prepare_guest()
    except qemu_harness.Unavailable as exc:
        unavailable(f"no Linux guest for the HVM domain tests: {exc}")
    vm = Qemu(["-machine", "pc", "-smp", "1,maxcpus=4"], run_dir / "vm", guest=files)
    vm.start()
    try:
        vm.wait_console(rf"^{MARK} up online=0 ", 120)
        behind(vm, run_dir)
        yield vm
    finally:
        vm.kill()


def test_set_vcpus_up_and_down_with_wait(run_dir: Path, booted: Qemu) -> None:
    host = connect(run_dir)
    dom = host.domain("hvm-guest")
    assert dom.online_vcpus == 1
    mark = len(booted.console())
    dom.set_vcpus(3, wait=True, timeout=90)
    assert qemu_cpus(booted) == [0, 1, 2]
    assert [v.number for v in dom.vcpus() if v.online] == [0, 1, 2]
    assert host.toolstack.availability(DOMID) == {0: True, 1: True, 2: True, 3: False}
    booted.wait_console(rf"^{MARK} online=0-2 present=0-2\s*$", 60, mark)
    mark = len(booted.console())
    dom.set_vcpus(1, wait=True, timeout=90)  # device_del; the guest ejects
    assert qemu_cpus(booted) == [0]
    assert dom.online_vcpus == 1
    assert host.toolstack.availability(DOMID) == {0: True, 1: False, 2: False, 3: False}
    booted.wait_console(rf"^{MARK} online=0 present=0\s*$", 60, mark)
    # the lock was released: its file is gone, as libxl leaves it
    assert not os.path.exists(lock_path(str(run_dir), DOMID, dom.uuid))


def state(dom: Domain) -> tuple[int, dict[int, bool]]:
    return dom.online_vcpus, dom.host.toolstack.availability(dom.id)


def test_no_headroom_is_refused_before_anything(run_dir: Path, qemu: QemuFactory) -> None:
    vm = qemu("-machine", "pc", "-smp", "1")  # no maxcpus: no free slot
    behind(vm, run_dir)
    dom = connect(run_dir).domain("hvm-guest")
    before = state(dom)
    with pytest.raises(VcpuCountError, match="slot"):
        dom.set_vcpus(3)
    assert state(dom) == before and qemu_cpus(vm) == [0]


def test_qemu_killed_mid_conversation(run_dir: Path, qemu: QemuFactory) -> None:
    vm = qemu("-machine", "pc", "-smp", "1,maxcpus=4")
    behind(vm, run_dir)
    dom = connect(run_dir).domain("hvm-guest")
    before = state(dom)
    vm.kill()  # the socket file stays; nothing listens
    with pytest.raises(QmpError) as e:
        dom.set_vcpus(2)
    assert e.value.errno is not None
    assert state(dom) == before  # availability is written only after QEMU did its part


def test_a_socket_that_never_answers(run_dir: Path) -> None:
    path = str(run_dir / f"qmp-libxl-{DOMID}")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(4)  # accepts, never greets
    try:
        dom = connect(run_dir).domain("hvm-guest")
        before = state(dom)
        t0 = time.monotonic()
        with pytest.raises(QmpError, match=r"greeting|did not"):
            dom.set_vcpus(2, timeout=1.0)
        assert time.monotonic() - t0 < 10
        assert state(dom) == before
    finally:
        srv.close()


def test_libxl_lock_held_elsewhere(run_dir: Path, qemu: QemuFactory) -> None:
    vm = qemu("-machine", "pc", "-smp", "1,maxcpus=4")
    behind(vm, run_dir)
    dom = connect(run_dir).domain("hvm-guest")
    before = state(dom)
    held = os.open(lock_path(str(run_dir), DOMID, dom.uuid), os.O_RDWR | os.O_CREAT, 0o666)
    fcntl.flock(held, fcntl.LOCK_EX)  # as xl holds it during its own operation
    try:
        with pytest.raises(DaemonError, match="still held") as e:
            dom.set_vcpus(2, timeout=0.5)
        assert e.value.errno is not None
        assert state(dom) == before and qemu_cpus(vm) == [0]
        # released by its holder (xl unlinks it), the next call goes through

        def release() -> None:
            os.unlink(lock_path(str(run_dir), DOMID, dom.uuid))
            os.close(held)

        threading.Timer(0.3, release).start()
        dom.set_vcpus(2, timeout=10)
        assert qemu_cpus(vm) == [0, 1]
    finally:
        with contextlib.suppress(OSError):
            os.close(held)


def test_without_run_dir_a_simulated_hvm_domain_has_no_device_model(run_dir: Path) -> None:
    toml = run_dir / "host.toml"
    toml.write_text(HOST_TOML)
    dom = xenvcpu.connect(f"sim://{toml}").domain("hvm-guest")
    with pytest.raises(xenvcpu.errors.NotSupported, match="run_dir"):
        dom.set_vcpus(2)
