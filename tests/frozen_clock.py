"""Run the ``xenvcpu`` command on a simulated host whose clock is frozen and moves exactly
STEP seconds before every snapshot but the first, so every frame ``top`` draws is the same
on every run (the tests of ``top`` under tmux run it this way):

    python tests/frozen_clock.py STEP [xenvcpu arguments...]

Imported, :func:`install` does the same inside a test process (for ``cli.main``).
"""

from __future__ import annotations

import sys
from typing import Any

import xenvcpu.host
from xenvcpu import cli
from xenvcpu.host import Host, Snapshot

_connect = xenvcpu.host.connect
#: The simulated clock when a frozen host is handed out: 10 s after the host was built.
START_NS = 10_000_000_000


def frozen(host: Host, step: float) -> Host:
    """Freeze ``host``'s clock; from the second snapshot on, move it ``step`` s first."""
    sim = host.sim
    assert sim is not None, f"{host.uri} is not a simulated host"
    sim.freeze_clock()
    # The clock ran from the host's creation until now: a few real milliseconds, more on a
    # loaded machine, that CPU times accrued. Set it to exactly START so every run shows
    # the same CPU times.
    sim.advance((START_NS - sim.clock_ns()) / 1e9)
    assert abs(sim.clock_ns() - START_NS) < 1000, sim.clock_ns()
    take = host.snapshot
    taken = [0]

    def snapshot() -> Snapshot:
        if taken[0]:
            sim.advance(step)
        taken[0] += 1
        return take()

    host.snapshot = snapshot  # type: ignore[method-assign]
    return host


def install(step: float) -> None:
    """Every ``connect`` from now on gives a frozen host (undo: :func:`uninstall`)."""

    def connect(uri: str | None = None) -> Host:
        return frozen(_connect(uri), step)

    xenvcpu.host.connect = connect


def uninstall() -> None:
    xenvcpu.host.connect = _connect


def main(argv: list[str]) -> Any:
    install(float(argv[0]))
    return cli.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
