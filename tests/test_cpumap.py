"""CpuMap: construction, formats, grammar, algebra, errors.

Checked against Python's own sets and ints; the grammar is checked against the pure-Python
CpuMap, the oracle, in tests/test_fallback.py. This file also runs on the pure-Python
CpuMap alone (tests/test_fallback.py runs it without the native module)."""

from __future__ import annotations

import copy
import pickle
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenvcpu import CpuMap
from xenvcpu._ranges import format_ranges
from xenvcpu.errors import CpuListError, XenvcpuError

WIDTHS = [1, 7, 8, 9, 63, 64, 65, 255, 256, 257, 4096, 65536]


@st.composite
def maps(draw: st.DrawFn) -> tuple[int, set[int]]:
    width = draw(st.sampled_from(WIDTHS))
    cpus = draw(st.sets(st.integers(0, width - 1), max_size=80))
    if draw(st.booleans()) and width <= 4096:
        lo = draw(st.integers(0, width - 1))
        hi = draw(st.integers(lo, width - 1))
        cpus |= set(range(lo, hi + 1))
    return width, cpus


def test_seed_byte_order() -> None:
    # CPU0-7 in byte 0, the lowest CPU in the least significant bit.
    m = CpuMap.from_cpus([0, 9, 15], 16)
    assert m.to_bytes() == bytes([0b0000_0001, 0b1000_0010])
    assert bytes(m) == m.to_bytes()
    assert CpuMap.from_bytes(b"\x80\x01").to_list() == [7, 8]


def test_constructors_and_views() -> None:
    m = CpuMap(8)
    assert m.width == 8 and len(m) == 0 and not m and str(m) == ""
    m = CpuMap.from_cpus(range(4), 8)
    assert list(m) == [0, 1, 2, 3]
    assert 3 in m and 4 not in m and -1 not in m and 100 not in m and "x" not in m
    assert m.to_bools() == (True,) * 4 + (False,) * 4
    assert CpuMap.from_bools(m.to_bools()) == m
    assert CpuMap.from_bools([1, 0, "", "x"]).to_list() == [0, 3]
    assert CpuMap.full(70).to_cpulist() == "0-69" and CpuMap.full(70).is_full()
    assert repr(CpuMap.parse("0,2-3", 8)) == 'CpuMap.parse("0,2-3", 8)'
    assert eval(repr(m), {"CpuMap": CpuMap}) == m
    assert CpuMap.from_bytes(bytearray(b"\x01")).to_list() == [0]
    assert CpuMap.from_bytes(memoryview(b"\x02")).to_list() == [1]


def test_from_bytes_width() -> None:
    assert CpuMap.from_bytes(b"\xff\x00").width == 16
    assert CpuMap.from_bytes(b"\xff", width=100).to_cpulist() == "0-7"
    assert CpuMap.from_bytes(b"\x00\x02", width=10).to_list() == [9]
    with pytest.raises(CpuListError, match=r"CPU 10 is out of range: valid CPUs are 0-9"):
        CpuMap.from_bytes(b"\x00\x04", width=10)
    with pytest.raises(TypeError):
        CpuMap.from_bytes("00")  # type: ignore[arg-type]


def test_to_bytes_maplen() -> None:
    m = CpuMap.from_cpus([3], 64)
    assert m.to_bytes(1) == b"\x08"
    assert m.to_bytes(4) == b"\x08\x00\x00\x00"
    assert len(m.to_bytes()) == 8
    with pytest.raises(CpuListError, match="maplen 1 is too short: CPU 9 is set"):
        CpuMap.from_cpus([9], 64).to_bytes(1)
    with pytest.raises(CpuListError, match="negative"):
        m.to_bytes(-1)


def test_algebra() -> None:
    a = CpuMap.parse("0-2", 8)
    b = CpuMap.parse("2-3", 8)
    assert str(a & b) == "2"
    assert str(a | b) == "0-3"
    assert str(a - b) == "0-1"
    assert str(a ^ b) == "0-1,3"
    assert str(~a) == "3-7"
    assert (~~a) == a
    assert CpuMap.parse("2", 8).issubset(a)
    with pytest.raises(CpuListError, match="different widths"):
        _ = a | CpuMap(9)
    assert a != b and a == CpuMap.parse("0,1,2", 8)
    assert a != CpuMap.parse("0-2", 9)  # the width is part of the value
    assert (a == "0-2") is False
    assert len({a, CpuMap.parse("0-2", 8), b}) == 2


def test_pickle_copy_hash() -> None:
    m = CpuMap.parse("1,5-300", 4096)
    for clone in (pickle.loads(pickle.dumps(m)), copy.copy(m), copy.deepcopy(m)):
        assert clone == m and hash(clone) == hash(m) and clone.width == 4096


def test_cpulist_grammar() -> None:
    def p(text: str) -> str:
        return CpuMap.parse(text, 8).to_cpulist()

    assert p("0-3,^1-2,2") == "0,2-3"
    assert p("all") == "0-7"
    assert p("all,^0") == "1-7"
    assert p("r") == "0-7"
    assert p("  1 , 3 \n") == "1,3"
    assert p("^3") == ""
    assert p("") == ""
    nodes = [0, 0, 0, 0, 1, 1, 1, 1]
    assert CpuMap.parse("node:1", 8, topology=nodes).to_cpulist() == "4-7"
    assert CpuMap.parse("nodes:0-1,^node:0,1", 8, topology=nodes).to_cpulist() == "1,4-7"
    assert CpuMap.parse("node:1", 4, topology={2: 1, 3: 1}).to_cpulist() == "2-3"

    class Topo:
        cpu_to_node = (None, 1, 1, 0)

    assert CpuMap.parse("^node:1,all,^node:1", 4, topology=Topo()).to_cpulist() == "0,3"


@pytest.mark.parametrize(
    ("text", "token", "column"),
    [
        ("0-", "0-", 1),
        ("a", "a", 1),
        ("1,,2x", "", 3),
        ("-3", "-3", 1),
        ("3-1-2", "3-1-2", 1),
        ("3-1", "3-1", 1),
        ("0,8", "8", 3),
        ("0, 5-9", "5-9", 4),
        ("^all", "^all", 1),
        ("node:0", "node:0", 1),
        ("0,é,1", "é", 3),
    ],
)
def test_parse_errors_name_token_column_and_range(text: str, token: str, column: int) -> None:
    with pytest.raises(CpuListError) as info:
        CpuMap.parse(text, 8)
    msg = str(info.value)
    assert f'"{token}" at column {column}' in msg
    assert "valid CPUs are 0-7" in msg
    assert isinstance(info.value, ValueError) and isinstance(info.value, XenvcpuError)


@pytest.mark.parametrize("width", [0, -1, 1 << 40])
def test_bad_width(width: int) -> None:
    with pytest.raises(CpuListError, match=f"invalid CPU map width {width}"):
        CpuMap(width)


def test_bad_cpus() -> None:
    with pytest.raises(CpuListError, match=r"CPU -1 is negative: valid CPUs are 0-7"):
        CpuMap.from_cpus([1, -1], 8)
    with pytest.raises(CpuListError, match=r"CPU 8 is out of range: valid CPUs are 0-7"):
        CpuMap.from_cpus([8], 8)
    with pytest.raises(TypeError):
        CpuMap.from_cpus(["a"], 8)  # type: ignore[list-item]


@given(maps())
def test_roundtrips_match_model(wc: tuple[int, set[int]]) -> None:
    width, cpus = wc
    m = CpuMap.from_cpus(cpus, width)
    assert len(m) == len(cpus)
    assert list(m) == sorted(cpus)
    assert m.to_cpulist() == format_ranges(cpus)
    assert CpuMap.parse(m.to_cpulist(), width) == m
    bits = sum(1 << c for c in cpus)
    assert m.to_bytes() == bits.to_bytes((width + 7) // 8, "little")
    assert CpuMap.from_bytes(m.to_bytes(), width) == m
    if width <= 4096:
        assert m.to_bools() == tuple(c in cpus for c in range(width))
        assert CpuMap.from_bools(m.to_bools()) == m
    assert set(~m) == set(range(width)) - cpus if width <= 4096 else len(~m) == width - len(cpus)


@given(maps(), st.sets(st.integers(0, 65535), max_size=40))
def test_algebra_matches_sets(wc: tuple[int, set[int]], other: set[int]) -> None:
    width, cpus = wc
    other = {c for c in other if c < width}
    a, b = CpuMap.from_cpus(cpus, width), CpuMap.from_cpus(other, width)
    assert set(a & b) == cpus & other
    assert set(a | b) == cpus | other
    assert set(a - b) == cpus - other
    assert set(a ^ b) == cpus ^ other
    assert (a == b) == (cpus == other)


term = st.one_of(
    st.integers(0, 40).map(str),
    st.tuples(st.integers(0, 40), st.integers(0, 40)).map(lambda t: f"{min(t)}-{max(t)}"),
    st.just("all"),
    st.just("r"),
    st.sampled_from(["node:0", "node:1", "nodes:0-1", "node:3"]),
).flatmap(lambda t: st.sampled_from([t, "^" + t, " " + t + " "]))


@given(st.lists(term, min_size=1, max_size=8).map(",".join), st.sampled_from([8, 32, 41, 64]))
def test_parse_is_left_to_right_set_algebra(text: str, width: int) -> None:
    """A list parses to the union/difference of its terms, applied left to right."""
    nodes = [c * 2 // width for c in range(width)]
    try:
        whole = CpuMap.parse(text, width, topology=nodes)
    except CpuListError as e:
        assert e.kind == "parse" and e.token is not None and e.column is not None
        return
    expected: set[int] = set()
    for term_text in text.split(","):
        body = term_text.strip()
        one = set(CpuMap.parse(body.lstrip("^"), width, topology=nodes))
        expected = expected - one if body.startswith("^") else expected | one
    assert set(whole) == expected


@given(st.text(max_size=30))
def test_parse_never_crashes(text: str) -> None:
    # Any text either parses or raises the typed error; a Rust panic would surface differently.
    try:
        m = CpuMap.parse(text, 64, topology=[0] * 64)
    except CpuListError as e:
        assert re.search(r"at column \d+", str(e))
        assert e.kind == "parse" and e.text == text and isinstance(e.column, int)
    else:
        assert m.width == 64
