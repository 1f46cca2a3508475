"""CpuMap speed against pure Python and numpy, in the same run.

The pure-Python baseline is the package's own fallback, ``xenvcpu._pycpumap.CpuMap``: what
a user without the native module gets.

Inputs are what a Python caller holds: cpulist strings, lists of CPU numbers, libvirt-style
tuples of bools, and the packed bytes Xen uses. Run with ``make bench`` (timed) — the normal
test command runs each of these once with timing disabled, as a smoke test.
"""

from __future__ import annotations

import random
from typing import Any, Callable

import pytest

from xenvcpu import CpuMap
from xenvcpu._pycpumap import CpuMap as PyCpuMap

WIDTHS = [256, 4096, 65536]


def sample(width: int) -> list[int]:
    """A reproducible half-full map: many short runs, the costly case for cpulists."""
    rng = random.Random(width)
    return sorted(c for c in range(width) if rng.random() < 0.5)


def np_mod() -> Any:
    return pytest.importorskip(
        "numpy", reason="numpy is the benchmark baseline (pip install .[bench])"
    )


def make_case(op: str, impl: str, width: int) -> Callable[[], object]:
    cpus = sample(width)
    m = CpuMap.from_cpus(cpus, width)
    pm = PyCpuMap.from_cpus(cpus, width)
    text, data, bools = m.to_cpulist(), m.to_bytes(), m.to_bools()
    if op == "parse":
        return {
            "rust": lambda: CpuMap.parse(text, width),
            "python": lambda: PyCpuMap.parse(text, width),
        }[impl]
    if op == "format":
        return {"rust": m.to_cpulist, "python": pm.to_cpulist}[impl]
    if op == "pack":  # tuple of bools -> bytes
        if impl == "numpy":
            np = np_mod()
            return lambda: np.packbits(np.array(bools, dtype=bool), bitorder="little").tobytes()
        return {
            "rust": lambda: CpuMap.from_bools(bools).to_bytes(),
            "python": lambda: PyCpuMap.from_bools(bools).to_bytes(),
        }[impl]
    if op == "pack_cpus":  # list of CPU numbers -> bytes
        if impl == "numpy":
            np = np_mod()

            def np_pack() -> bytes:
                a = np.zeros(width, dtype=bool)
                a[cpus] = True
                return bytes(np.packbits(a, bitorder="little").tobytes())

            return np_pack
        return {
            "rust": lambda: CpuMap.from_cpus(cpus, width).to_bytes(),
            "python": lambda: PyCpuMap.from_cpus(cpus, width).to_bytes(),
        }[impl]
    if op == "unpack":  # bytes -> tuple of bools
        if impl == "numpy":
            np = np_mod()
            return lambda: tuple(
                np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")[:width]
                .astype(bool)
                .tolist()
            )
        return {
            "rust": lambda: CpuMap.from_bytes(data, width).to_bools(),
            "python": lambda: PyCpuMap.from_bytes(data, width).to_bools(),
        }[impl]
    if op == "unpack_cpus":  # bytes -> list of CPU numbers
        if impl == "numpy":
            np = np_mod()
            return lambda: np.flatnonzero(
                np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
            ).tolist()
        return {
            "rust": lambda: CpuMap.from_bytes(data, width).to_list(),
            "python": lambda: PyCpuMap.from_bytes(data, width).to_list(),
        }[impl]
    raise AssertionError(op)


CASES = [
    (op, impl, w)
    for op, impls in [
        ("parse", ["rust", "python"]),
        ("format", ["rust", "python"]),
        ("pack", ["rust", "python", "numpy"]),
        ("pack_cpus", ["rust", "python", "numpy"]),
        ("unpack", ["rust", "python", "numpy"]),
        ("unpack_cpus", ["rust", "python", "numpy"]),
    ]
    for w in WIDTHS
    for impl in impls
]


@pytest.mark.parametrize(("op", "impl", "width"), CASES, ids=[f"{o}-{w}-{i}" for o, i, w in CASES])
def test_cpumap_speed(benchmark: Any, op: str, impl: str, width: int) -> None:
    fn = make_case(op, impl, width)
    benchmark.group = f"cpumap {op} {width}"
    benchmark.extra_info.update(op=op, impl=impl, width=width)
    result = benchmark(fn)
    # Every implementation must compute the same thing as the Rust one.
    reference = make_case(op, "rust", width)()
    if isinstance(reference, CpuMap):
        assert list(result) == list(reference)
    else:
        assert result == reference
