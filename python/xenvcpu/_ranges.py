"""The one formatter of number ranges in messages and output: ``{0, 1, 2, 5}`` → ``"0-2,5"``.

The canonical cpulist form (ascending, runs of two or more as ``a-b``), used by the
pure-Python ``CpuMap.to_cpulist`` and by every message that names CPUs or vCPUs. Standard
library only, so the daemon clients can use it without the native module.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["format_bits", "format_ranges", "valid_range"]

_RUNS = re.compile("1+")


def format_bits(bits: int) -> str:
    """The numbers of the set bits of ``bits`` (bit n = number n) as a cpulist."""
    out = []
    for m in _RUNS.finditer(bin(bits)[:1:-1]):
        lo, hi = m.start(), m.end() - 1
        out.append(str(lo) if lo == hi else f"{lo}-{hi}")
    return ",".join(out)


def format_ranges(numbers: Iterable[int]) -> str:
    """Numbers as a cpulist (``""`` when there are none). Any ints, negative or huge ones
    too (messages about bad input name them): the work grows with how many there are, not
    with how large they are."""
    out: list[str] = []
    run: list[int] = []  # [first, last] of the current run
    for n in sorted(set(numbers)):
        if run and n == run[1] + 1:
            run[1] = n
            continue
        if run:
            out.append(str(run[0]) if run[0] == run[1] else f"{run[0]}-{run[1]}")
        run = [n, n]
    if run:
        out.append(str(run[0]) if run[0] == run[1] else f"{run[0]}-{run[1]}")
    return ",".join(out)


def valid_range(count: int) -> str:
    """The numbers ``0 .. count-1`` as a cpulist (``"none"`` when ``count`` is 0): the
    valid CPUs of a map of that width, or the vCPUs of a domain with that many."""
    return "none" if count <= 0 else ("0" if count == 1 else f"0-{count - 1}")
