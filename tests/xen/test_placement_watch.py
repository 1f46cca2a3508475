"""Placement on real Xen: apply a plan, then break it as operators do — `xl save` +
`xl restore` (a new domid, the affinity the guest was created with) and `xl cpupool-migrate`
(affinity reset to all) — and see `xenvcpu watch` put the pins back, read with
`xl vcpu-list`. The watcher runs as its own process, woken by xenstored's
@introduceDomain/@releaseDomain watches (docs/placement.md).
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import xl

import xenvcpu

HARD, SOFT = "1-2", "2"
WAIT = 240.0  # seconds: the lab is software-emulated; a restore alone takes a while


def placed(guest: str) -> bool:
    """Every vCPU of the guest on HARD / SOFT, as `xl vcpu-list` shows it."""
    want_hard, want_soft = xl.parse_cpulist(HARD), xl.parse_cpulist(SOFT)
    return all(v.hard == want_hard and v.soft == want_soft for v in xl.vcpus(guest))


def wait_until(what: str, test: Any, timeout: float = WAIT) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if test():
            return
        time.sleep(1)
    pytest.fail(f"{what}: not within {timeout:g} s")


class Watch:
    """`xenvcpu watch --json` in its own process; its JSON lines read by a thread."""

    def __init__(self, spec: Path) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "xenvcpu",
                "-c",
                "xen:///system",
                "watch",
                str(spec),
                "--json",
                "--interval",
                "5",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))
        self.events.put(None)

    def next_correction(self, timeout: float = WAIT) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while True:
            try:
                e = self.events.get(timeout=max(end - time.monotonic(), 0.01))
            except queue.Empty:
                pytest.fail(f"no correction from the watcher within {timeout:g} s")
            if e is None:
                pytest.fail(f"the watcher ended: {self.stop()}")
            if e["event"] == "corrected":
                return e

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        assert self.proc.stderr is not None
        err = self.proc.stderr.read()
        for s in (self.proc.stdout, self.proc.stderr):
            if s is not None:
                s.close()
        return f"exit {self.proc.returncode}; stderr: {err[-2000:]}"


@pytest.fixture
def spare_pool(guest: str) -> Iterator[str]:
    """A second cpupool holding pCPU 3, taken from Pool-0; put back afterwards."""
    name = "xenvcpu-lab"
    xl.xl("cpupool-cpu-remove", "Pool-0", 3)
    try:
        xl.xl("cpupool-create", f'name="{name}"', 'sched="credit2"')
        xl.xl("cpupool-cpu-add", name, 3)
        yield name
    finally:
        names = [d.name for d in xl.domains()]
        if guest in names:
            subprocess.run(["xl", "cpupool-migrate", guest, "Pool-0"], check=False)
        subprocess.run(["xl", "cpupool-cpu-remove", name, "3"], check=False)
        subprocess.run(["xl", "cpupool-destroy", name], check=False)
        subprocess.run(["xl", "cpupool-cpu-add", "Pool-0", "3"], check=False)


@pytest.fixture
def unpinned(guest: str) -> Iterator[None]:
    yield
    for v in range(4):
        subprocess.run(["xl", "vcpu-pin", guest, str(v), "all", "all"], check=False)


def test_watch_restores_pins_after_save_restore_and_pool_moves(
    guest: str, tmp_path: Path, spare_pool: str, unpinned: None
) -> None:
    spec = tmp_path / "placement.toml"
    spec.write_text(f'[[domain]]\nmatch = "{guest}"\nhard = "{HARD}"\nsoft = "{SOFT}"\n')

    # apply, compared with xl
    with xenvcpu.connect() as host:
        plan = host.plan(spec)
        assert plan, plan.diff()
        plan.apply(timeout=120)
        assert not host.plan(spec)
    assert placed(guest)

    watch = Watch(spec)
    try:
        first = watch.next_correction() if not placed(guest) else None
        assert first is None or first["domain"] == guest

        # xl save + xl restore: a new domid, the affinity of the configuration (all)
        old = xl.domid(guest)
        image = Path("/var/tmp/xenvcpu-guest.save")  # on disk: dom0's /tmp is small
        try:
            xl.xl("save", guest, image, timeout=600)
            xl.xl("restore", image, timeout=600)
        finally:
            image.unlink(missing_ok=True)
        new = xl.domid(guest)
        assert new != old
        back = watch.next_correction()
        assert (back["domain"], back["id"], back["reason"]) == (guest, new, "appeared")
        wait_until("pins back after restore", lambda: placed(guest))

        # xl cpupool-migrate resets hard and soft affinity to all, there and back
        xl.xl("cpupool-migrate", guest, spare_pool)
        xl.xl("cpupool-migrate", guest, "Pool-0")
        moved = watch.next_correction()
        assert (moved["id"], moved["reason"]) == (new, "drifted")
        wait_until("pins back after cpupool-migrate", lambda: placed(guest))

        # a manual xl vcpu-pin
        xl.vcpu_pin(guest, 0, "0", "all")
        fixed = watch.next_correction()
        assert fixed["reason"] == "drifted" and fixed["id"] == new
        wait_until("pins back after xl vcpu-pin", lambda: placed(guest))
    finally:
        result = watch.stop()
    assert watch.proc.returncode == 0, result
