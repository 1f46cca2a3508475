"""Fixtures for the QMP tests.

* ``short_dir``: a directory with a short path (unix socket paths are limited to 107 bytes).
* ``fake``: starts :class:`fake_qmp.FakeQmp` servers, closed (and checked) after the test.
* ``qemu``: starts real, paused ``qemu-system-x86_64`` processes (killed after the test).
* ``guest``: one booted Linux guest for the whole session (TCG; about 10 s to boot).

Without QEMU, or when the guest's Debian packages cannot be fetched, the tests that need
them are skipped with the exact reason; ``XENVCPU_REQUIRE_QEMU=1`` makes that a failure.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from . import fake_qmp, qemu_harness
from .qemu_harness import Qemu


def unavailable(reason: str) -> None:
    if os.environ.get("XENVCPU_REQUIRE_QEMU") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="xenvcpu-qmp-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


FakeFactory = Callable[..., fake_qmp.FakeQmp]


@pytest.fixture
def fake(short_dir: Path) -> Iterator[FakeFactory]:
    servers: list[fake_qmp.FakeQmp] = []

    def start(
        handler: fake_qmp.Handler = fake_qmp.default_handler,
        *,
        greeting: bytes | None = fake_qmp.GREETING_LINE,
        capabilities: bool = True,
    ) -> fake_qmp.FakeQmp:
        path = str(short_dir / f"fake{len(servers)}.sock")
        server = fake_qmp.FakeQmp(path, handler, greeting=greeting, capabilities=capabilities)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


QemuFactory = Callable[..., Qemu]


@pytest.fixture
def qemu(short_dir: Path) -> Iterator[QemuFactory]:
    """``qemu("-machine", "pc", "-smp", "1,maxcpus=4")`` -> a started, paused QEMU."""
    try:
        qemu_harness.require_qemu()
    except qemu_harness.Unavailable as exc:
        unavailable(str(exc))
    started: list[Qemu] = []

    def start(*args: str) -> Qemu:
        vm = Qemu(list(args), short_dir / f"vm{len(started)}")
        started.append(vm)
        return vm.start()

    yield start
    for vm in started:
        vm.kill()


class Guest:
    """The session's booted Linux guest and what the tests measured on it."""

    def __init__(self, vm: Qemu, files: qemu_harness.GuestFiles, boot_seconds: float) -> None:
        self.vm = vm
        self.files = files
        self.boot_seconds = boot_seconds
        #: set once a vCPU was removed: QEMU 7.2 under TCG corrupts its heap on CPU
        #: hot-remove, and the next device_add crashes it (docs/qmp.md)
        self.removed_once = False


@pytest.fixture(scope="session")
def guest() -> Iterator[Guest]:
    try:
        qemu_harness.require_qemu()
        files = qemu_harness.prepare_guest()
    except qemu_harness.Unavailable as exc:
        unavailable(f"no Linux guest for the CPU hot-remove tests: {exc}")
    workdir = Path(tempfile.mkdtemp(prefix="xenvcpu-guest-"))
    vm = Qemu(["-machine", "pc", "-smp", "1,maxcpus=4"], workdir, guest=files)
    t0 = time.monotonic()
    vm.start()
    try:
        vm.wait_console(rf"^{qemu_harness.MARK} up online=0 ", 120)
        yield Guest(vm, files, time.monotonic() - t0)
    finally:
        vm.kill()
        shutil.rmtree(workdir, ignore_errors=True)
