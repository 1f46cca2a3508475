"""A small pure-Python model of CpuMap, kept in the tests.

It is the oracle for the hypothesis tests and the pure-Python baseline of the benchmarks,
so it is written plainly but without waste (whole-int bit operations, no per-bit objects
where Python has a faster idiom).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


class ModelError(ValueError):
    pass


def parse(text: str, width: int, nodes: Sequence[int] | None = None) -> set[int]:
    """The cpulist grammar: left to right over an empty set."""
    if width < 1:
        raise ModelError("width")
    cpus: set[int] = set()
    if not text.strip():
        return cpus
    for raw in text.split(","):
        tok = raw.strip()
        if not tok:
            raise ModelError("empty term")
        neg = tok.startswith("^")
        body = tok[1:] if neg else tok
        if body in ("all", "r"):
            if neg:
                raise ModelError("^all")
            cpus = set(range(width))
            continue
        if body.startswith(("node:", "nodes:")):
            if nodes is None:
                raise ModelError("needs topology")
            lo, hi = _range(body.split(":", 1)[1])
            chosen = {c for c, n in enumerate(nodes[:width]) if lo <= n <= hi}
            if not chosen:
                raise ModelError("empty node")
        else:
            lo, hi = _range(body)
            if hi >= width:
                raise ModelError("out of range")
            chosen = set(range(lo, hi + 1))
        cpus = cpus - chosen if neg else cpus | chosen
    return cpus


def _range(s: str) -> tuple[int, int]:
    parts = s.split("-")
    if len(parts) > 2 or not all(p.isdigit() and p.isascii() for p in parts):
        raise ModelError("malformed")
    lo, hi = int(parts[0]), int(parts[-1])
    if lo > hi:
        raise ModelError("downwards")
    return lo, hi


def format_cpulist(cpus: Iterable[int]) -> str:
    """Ascending, runs of two or more as a-b."""
    out: list[str] = []
    start = prev = -2
    for c in sorted(cpus):
        if c == prev + 1:
            prev = c
            continue
        if start >= 0:
            out.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = c
    if start >= 0:
        out.append(str(start) if start == prev else f"{start}-{prev}")
    return ",".join(out)


def pack(cpus: Iterable[int], width: int) -> bytes:
    """CPU n -> bit n % 8 of byte n // 8 (bytearray: linear, unlike growing one big int)."""
    out = bytearray((width + 7) // 8)
    for c in cpus:
        out[c >> 3] |= 1 << (c & 7)
    return bytes(out)


def pack_bools(bools: Sequence[bool]) -> bytes:
    out = bytearray((len(bools) + 7) // 8)
    for i, b in enumerate(bools):
        if b:
            out[i >> 3] |= 1 << (i & 7)
    return bytes(out)


_BITS = [tuple(j for j in range(8) if b >> j & 1) for b in range(256)]
_BOOLS = [tuple(bool(b >> j & 1) for j in range(8)) for b in range(256)]


def unpack(data: bytes, width: int) -> set[int]:
    return {i * 8 + j for i, b in enumerate(data) if b for j in _BITS[b] if i * 8 + j < width}


def unpack_bools(data: bytes, width: int) -> tuple[bool, ...]:
    out: list[bool] = []
    for b in data:
        out.extend(_BOOLS[b])
    return tuple(out[:width])
