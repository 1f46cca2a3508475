"""Pure-Python ``CpuMap``: the fallback when ``xenvcpu._native`` cannot load, and the
oracle the Rust ``CpuMap`` (the product) is tested against.

Same API, grammar, byte order and reprs as the Rust ``CpuMap`` (``rust/core/src/cpumap.rs``
and ``rust/py/src/cpumap.rs``), and the same errors: the same exception classes with the
same fields (``CpuListError.kind``, ``token``, ``column``, ...); tests/test_fallback.py
compares the two on generated inputs. Messages say the same things but are not compared
character for character. The bits live in one Python ``int`` (CPU n is bit n), so packing
is ``int.to_bytes`` and the algebra is whole-int bit operations.
"""

from __future__ import annotations

import itertools
import json
import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Optional, Union

from xenvcpu._ranges import format_bits, valid_range
from xenvcpu.errors import CpuListError

__all__ = ["MAX_WIDTH", "WHITESPACE", "CpuMap"]

#: The widest map accepted (as the native module: 4 Mi CPUs).
MAX_WIDTH = 1 << 22
#: The longest byte form ``to_bytes`` makes (a MAX_WIDTH map).
MAX_MAPLEN = MAX_WIDTH // 8
#: How many CPU numbers ``from_cpus`` reads at most (duplicates included).
MAX_ITEMS = 4 * MAX_WIDTH

_U64_MAX = (1 << 64) - 1
_U32_MAX = (1 << 32) - 1
_NO_NODE = _U32_MAX  # what the native code stores for a CPU without a node
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1

#: What the cpulist grammar ignores around a term: the ASCII whitespace (the grammar's own
#: definition, the same set as rust/core/src/cpumap.rs's WHITESPACE).
WHITESPACE = " \t\n\r\x0b\x0c"

Topology = Union[Sequence[Optional[int]], Mapping[int, int], object]


def _i64(value: object) -> int:
    """An int argument as PyO3 extracts an ``i64`` (``__index__``; OverflowError past i64)."""
    n = operator.index(value)  # type: ignore[arg-type]
    if not _I64_MIN <= n <= _I64_MAX:
        raise OverflowError("Python int too large to convert to C long")
    return n


def _unsigned(value: object, limit: int) -> int:
    n = operator.index(value)  # type: ignore[arg-type]
    if n < 0:
        raise OverflowError("can't convert negative int to unsigned")
    if n > limit:
        raise OverflowError("out of range integral type conversion attempted")
    return n


def _quote(text: str) -> str:
    """A string as messages show it: double quotes, control characters escaped."""
    return json.dumps(text, ensure_ascii=False)


def _error(message: str, kind: str, **fields: object) -> CpuListError:
    """A CpuListError with the fields the native module sets (see xenvcpu.errors)."""
    e = CpuListError(message)
    e.kind = kind
    for name, value in fields.items():
        setattr(e, name, value)
    return e


def _bad_width(width: int) -> CpuListError:
    return _error(
        f"invalid CPU map width {width}: the width must be between 1 and {MAX_WIDTH}",
        "bad_width",
        width=width,
    )


def _out_of_range(cpu: int, width: int) -> CpuListError:
    return _error(
        f"CPU {cpu} is out of range: valid CPUs are {valid_range(width)} (width {width})",
        "cpu_out_of_range",
        cpu=cpu,
        width=width,
    )


def _width_arg(width: object) -> int:
    w = operator.index(width)  # type: ignore[arg-type]
    if not 1 <= w <= MAX_WIDTH:
        raise _bad_width(w)
    return w


def _replace_surrogates(text: str) -> str:
    """Lone surrogates (a Python str may hold them; UTF-8 cannot) read as U+FFFD, one each,
    as the native parser reads them."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _lowest_bit(n: int) -> int:
    return (n & -n).bit_length() - 1


def _check_fits(bits: int, width: int) -> None:
    extra = bits >> width
    if extra:
        raise _out_of_range(width + _lowest_bit(extra), width)


class _ParseError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _parse_num(s: str) -> int:
    if not s:
        raise _ParseError("a CPU number is missing")
    n = 0
    for c in s:
        if not "0" <= c <= "9":
            raise _ParseError("not a CPU number")
        n = n * 10 + (ord(c) - 0x30)
        if n > _U64_MAX:
            raise _ParseError("CPU number too large")
    return n


def _parse_range(s: str) -> tuple[int, int]:
    if "-" not in s:
        n = _parse_num(s)
        return n, n
    a, b = s.split("-", 1)
    if not a:
        raise _ParseError("a range needs a start (negative CPUs do not exist)")
    if not b:
        raise _ParseError("a range needs an end")
    if "-" in b:
        raise _ParseError("a range has one '-'")
    lo, hi = _parse_num(a), _parse_num(b)
    if lo > hi:
        raise _ParseError("a range must go upwards")
    return lo, hi


def _per_cpu(topology: Any, attr: str, width: int) -> list[int] | None:
    """One fact per CPU, as the native ``per_cpu``: the attribute ``attr`` (a dict or a
    sequence); for nodes, the argument itself when it has neither that nor ``pools``."""
    if hasattr(topology, attr):
        source = getattr(topology, attr)
    elif attr == "cpu_to_node" and not hasattr(topology, "pools"):
        source = topology
    else:
        return None
    nodes = [_NO_NODE] * width
    if isinstance(source, dict):
        for k, v in source.items():
            cpu = _unsigned(k, _U64_MAX)
            if cpu < width and v is not None:
                nodes[cpu] = _unsigned(v, _U32_MAX)
    else:  # only the first `width` entries matter: an endless sequence is not read to its end
        for cpu, v in enumerate(itertools.islice(source, width)):
            if v is not None:
                nodes[cpu] = _unsigned(v, _U32_MAX)
    return nodes


def _pools_of(topology: Any, width: int) -> list[tuple[str, CpuMap]] | None:
    if not hasattr(topology, "pools"):
        return None
    out = []
    for name, cpus in topology.pools.items():
        if not isinstance(name, str):
            raise TypeError(f"a cpupool name is a str, not {type(name).__name__}")
        out.append((name, cpus if isinstance(cpus, CpuMap) else CpuMap.from_cpus(cpus, width)))
    return out


def _known_nodes(nodes: list[int]) -> str:
    present = {n for n in nodes if n != _NO_NODE}
    return format_bits(sum(1 << n for n in present)) if present else "none"


class _Terms:
    """The facts topology terms read (as the native ``Terms``)."""

    def __init__(self, text: str, topology: Any, width: int) -> None:
        t = topology
        self.nodes = _per_cpu(t, "cpu_to_node", width) if t is not None and "node" in text else None
        wants_sockets = "socket" in text or "siblings" in text
        self.sockets = (
            _per_cpu(t, "cpu_to_socket", width) if t is not None and wants_sockets else None
        )
        self.cores = (
            _per_cpu(t, "cpu_to_core", width) if t is not None and "siblings" in text else None
        )
        self.pools = _pools_of(t, width) if t is not None and "pool" in text else None


def _by_unit(per_cpu: list[int], lo: int, hi: int, width: int, unit: str) -> int:
    chosen = 0
    for cpu, u in enumerate(per_cpu[:width]):
        if lo <= u <= hi:
            chosen |= 1 << cpu
    if not chosen:
        raise _ParseError(f"no CPU is in that {unit} ({unit}s with CPUs: {_known_nodes(per_cpu)})")
    return chosen


def _topology_term(body: str, width: int, t: _Terms) -> int | None:
    """The CPUs (bits) of a topology term, or None when ``body`` is no topology term."""

    def need(what: str) -> _ParseError:
        return _ParseError(f"{what} terms need the host topology")

    for prefixes, attr, unit in (
        (("nodes:", "node:"), t.nodes, "node"),
        (("sockets:", "socket:"), t.sockets, "socket"),
    ):
        for prefix in prefixes:
            if body.startswith(prefix):
                if attr is None:
                    raise need(unit)
                lo, hi = _parse_range(body[len(prefix) :])
                return _by_unit(attr, lo, hi, width, unit)
    if body.startswith("siblings:"):
        if t.sockets is None or t.cores is None:
            raise need("siblings")
        n = _parse_num(body[len("siblings:") :])
        if n >= width:
            raise _ParseError(f"CPU {n} is out of range")
        s, c = t.sockets[n], t.cores[n]
        if s == _NO_NODE or c == _NO_NODE:
            raise _ParseError(f"Xen gives no core for CPU {n} (is it offline?)")
        return sum(
            1 << cpu
            for cpu, (so, co) in enumerate(zip(t.sockets[:width], t.cores[:width]))
            if (so, co) == (s, c)
        )
    if body.startswith("pool:"):
        if t.pools is None:
            raise _ParseError("pool terms need the host's cpupools")
        name = body[len("pool:") :]
        for pool_name, cpus in t.pools:
            if pool_name == name:
                try:
                    return cpus.resized(width)._bits
                except CpuListError as e:
                    raise _ParseError(str(e)) from None
        known = ", ".join(n for n, _ in t.pools) or "none"
        raise _ParseError(f"no cpupool is called that (cpupools: {known})")
    return None


class CpuMap:
    """A set of physical CPUs of a fixed width, packed as little-endian bits."""

    __slots__ = ("_bits", "_width")
    _bits: int
    _width: int

    def __new__(cls, width: int) -> CpuMap:
        return cls._make(0, _width_arg(width))

    @classmethod
    def _make(cls, bits: int, width: int) -> CpuMap:
        self = object.__new__(cls)
        object.__setattr__(self, "_bits", bits)
        object.__setattr__(self, "_width", width)
        return self

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"'CpuMap' object attribute {name!r} is read-only")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"'CpuMap' object attribute {name!r} is read-only")

    # ---- constructors ------------------------------------------------------------------

    @classmethod
    def full(cls, width: int) -> CpuMap:
        w = _width_arg(width)
        return cls._make((1 << w) - 1, w)

    @classmethod
    def from_cpus(cls, cpus: Iterable[int], width: int) -> CpuMap:
        w = _width_arg(width)
        bits = 0
        for n, item in enumerate(cpus):
            if n == MAX_ITEMS:
                raise _error(
                    f"more than {MAX_ITEMS} CPU numbers for a map of width {w}",
                    "too_many_cpus",
                    width=w,
                )
            cpu = operator.index(item)
            if cpu < 0:
                raise _error(
                    f"CPU {cpu} is negative: valid CPUs are {valid_range(w)} (width {w})",
                    "negative_cpu",
                    cpu=cpu,
                    width=w,
                )
            if cpu >= w:
                raise _out_of_range(cpu, w)
            bits |= 1 << cpu
        return cls._make(bits, w)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, width: int | None = None) -> CpuMap:
        w = None if width is None else _width_arg(width)
        raw: object = data
        if not isinstance(raw, (bytes, bytearray)):
            raw = data.tobytes() if hasattr(data, "tobytes") else None
            if not isinstance(raw, bytes):
                raise TypeError(
                    f"expected bytes, bytearray or memoryview, got {type(data).__name__}"
                )
        assert isinstance(raw, (bytes, bytearray))
        if w is None:
            w = len(raw) * 8
            if not 1 <= w <= MAX_WIDTH:
                raise _bad_width(w)
        bits = int.from_bytes(raw, "little")
        _check_fits(bits, w)
        return cls._make(bits, w)

    @classmethod
    def parse(cls, text: str, width: int, topology: Topology | None = None) -> CpuMap:
        """The cpulist grammar: terms ``N``, ``A-B``, ``all``/``r``, ``node:N``,
        ``nodes:A-B``, each optionally negated with ``^``, applied left to right."""
        if not isinstance(text, str):
            raise TypeError(f"argument 'text': '{type(text).__name__}' object is not a str")
        w = _width_arg(width)
        if not text.isprintable() or any("\ud800" <= c <= "\udfff" for c in text):
            text = _replace_surrogates(text)
        terms = _Terms(text, topology, w)
        bits = 0
        full = (1 << w) - 1
        if not text.strip(WHITESPACE):
            return cls._make(0, w)
        start = 0
        while True:
            end = text.find(",", start)
            if end < 0:
                end = len(text)
            raw = text[start:end]
            tok = raw.strip(WHITESPACE)
            tok_start = start + len(raw) - len(raw.lstrip(WHITESPACE))
            try:
                if not tok:
                    raise _ParseError("empty term")
                neg = tok.startswith("^")
                body = tok[1:] if neg else tok
                if body in ("all", "r"):
                    if neg:
                        raise _ParseError("'^all' is not allowed (it would exclude every CPU)")
                    bits = full
                elif (chosen := _topology_term(body, w, terms)) is not None:
                    bits = bits & ~chosen if neg else bits | chosen
                else:
                    lo, hi = _parse_range(body)
                    if hi >= w:
                        raise _ParseError(f"CPU {lo if lo >= w else hi} is out of range")
                    chosen = ((1 << (hi + 1)) - 1) ^ ((1 << lo) - 1)
                    bits = bits & ~chosen if neg else bits | chosen
            except _ParseError as e:
                shown = tok if tok else raw
                raise _error(
                    f"invalid cpulist {_quote(text)}: {_quote(shown)} at column "
                    f"{tok_start + 1}: {e.reason}; valid CPUs are {valid_range(w)} (width {w})",
                    "parse",
                    text=text,
                    token=shown,
                    column=tok_start + 1,
                    reason=e.reason,
                    width=w,
                ) from None
            if end == len(text):
                break
            start = end + 1
        return cls._make(bits, w)

    @classmethod
    def from_bools(cls, bools: Iterable[object]) -> CpuMap:
        digits = bytearray()  # b"0"/b"1" per CPU; one int conversion at the end
        for item in bools:
            if len(digits) == MAX_WIDTH:  # stop reading an endless iterator
                raise _bad_width(MAX_WIDTH + 1)
            digits.append(0x31 if item is True or (item is not False and bool(item)) else 0x30)
        if not digits:
            raise _bad_width(0)
        digits.reverse()
        return cls._make(int(digits, 2), len(digits))

    # ---- views -------------------------------------------------------------------------

    def to_bools(self) -> tuple[bool, ...]:
        s = bin(self._bits)[:1:-1] if self._bits else ""
        return tuple(c == "1" for c in s.ljust(self._width, "0"))

    def to_bytes(self, maplen: int | None = None) -> bytes:
        if maplen is None:
            n = (self._width + 7) // 8
        else:
            n = operator.index(maplen)
            if n < 0:
                raise _error(f"maplen {n} is negative", "maplen_too_short", maplen=n)
            if n > MAX_MAPLEN:
                raise _error(
                    f"maplen {n} is too long: a map has at most {MAX_MAPLEN} bytes "
                    f"({MAX_WIDTH} CPUs)",
                    "maplen_too_long",
                    maplen=n,
                )
        if self._bits:
            highest = self._bits.bit_length() - 1
            if highest // 8 >= n:
                raise _error(
                    f"maplen {n} is too short: CPU {highest} is set and needs at least "
                    f"{highest // 8 + 1} bytes",
                    "maplen_too_short",
                    maplen=n,
                    needed=highest // 8 + 1,
                    cpu=highest,
                )
        return self._bits.to_bytes(n, "little")

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    def to_cpulist(self) -> str:
        return format_bits(self._bits)

    def to_list(self) -> list[int]:
        return [i for i, c in enumerate(bin(self._bits)[:1:-1]) if c == "1"]

    @property
    def width(self) -> int:
        return self._width

    def resized(self, width: int) -> CpuMap:
        w = _width_arg(width)
        _check_fits(self._bits, w)
        return self._make(self._bits, w)

    def issubset(self, other: CpuMap) -> bool:
        if not isinstance(other, CpuMap):
            raise TypeError(f"'{type(other).__name__}' object is not an instance of 'CpuMap'")
        return self._bits & ~other._bits == 0

    def is_full(self) -> bool:
        return self._bits == (1 << self._width) - 1

    def __str__(self) -> str:
        return self.to_cpulist()

    def __repr__(self) -> str:
        return f'CpuMap.parse("{self.to_cpulist()}", {self._width})'

    def __len__(self) -> int:
        return bin(self._bits).count("1")

    def __bool__(self) -> bool:
        return self._bits != 0

    def __contains__(self, cpu: object) -> bool:
        try:
            c = _i64(cpu)
        except (TypeError, OverflowError):
            return False
        return 0 <= c < self._width and bool(self._bits >> c & 1)

    def __iter__(self) -> Iterator[int]:
        return iter(self.to_list())

    # ---- algebra -----------------------------------------------------------------------

    def _other(self, other: object) -> CpuMap | None:
        if not isinstance(other, CpuMap):
            return None
        if other._width != self._width:
            raise _error(
                f"CPU maps of different widths ({self._width} and {other._width}) "
                "cannot be combined",
                "width_mismatch",
                width=self._width,
                other_width=other._width,
            )
        return other

    def __and__(self, other: CpuMap) -> CpuMap:
        o = self._other(other)
        return NotImplemented if o is None else self._make(self._bits & o._bits, self._width)

    def __or__(self, other: CpuMap) -> CpuMap:
        o = self._other(other)
        return NotImplemented if o is None else self._make(self._bits | o._bits, self._width)

    def __sub__(self, other: CpuMap) -> CpuMap:
        o = self._other(other)
        return NotImplemented if o is None else self._make(self._bits & ~o._bits, self._width)

    def __xor__(self, other: CpuMap) -> CpuMap:
        o = self._other(other)
        return NotImplemented if o is None else self._make(self._bits ^ o._bits, self._width)

    def __invert__(self) -> CpuMap:
        return self._make(~self._bits & ((1 << self._width) - 1), self._width)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CpuMap):
            return NotImplemented
        return self._width == other._width and self._bits == other._bits

    def __ne__(self, other: object) -> bool:
        if not isinstance(other, CpuMap):
            return NotImplemented
        return not self == other

    def __hash__(self) -> int:
        return hash((self._width, self._bits))

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self).from_bytes, (self.to_bytes(), self._width))
