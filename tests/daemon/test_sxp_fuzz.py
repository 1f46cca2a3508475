"""Fuzzing the SXP reader (xen-interfaces.md §6.5) and its number conversion with hypothesis.

Inputs are random bytes, xend-shaped replies with nasty pieces spliced in (unbalanced
brackets, quotes, huge numbers, deep nesting, control characters), and random
bracket soups. Whatever comes, parsing returns values or raises ValueError (naming the
cap when one is hit), never RecursionError, OverflowError or UnicodeError, and each
example is over well within a second; every atom read as a number either converts
cheaply or raises ValueError.
"""

from __future__ import annotations

import time
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xenvcpu._limits import MAX_SXP_DEPTH, MAX_SXP_NUMBER, MAX_VCPUS
from xenvcpu.daemon import sxp
from xenvcpu.daemon.sxp import Sxp

SAMPLES = [
    "(domain (domid 7) (name guest1) (uuid 5b1e3c2a-0000-4000-8000-000000000007) (vcpus 4)"
    " (online_vcpus 2) (vcpu_avail 3) (state -b----) (cpu_time 12.5) (memory 512)"
    " (image (linux (kernel /boot/vmlinuz))))",
    "(domain (domid 7) (name guest1) (vcpu_count '3') (vcpu (number 0) (online 1) (blocked 0)"
    " (running 1) (cpu_time 12.345678901) (cpu 3) (cpumap (0 1 2 3))) (vcpu (number 1)"
    " (online 0) (blocked 0) (running 0) (cpu_time 0.0) (cpu -1) (cpumap (3 1))))",
    "(node (host xenhost) (release 3.2.0-4-amd64) (nr_cpus 8) (nr_nodes 1)"
    " (cores_per_socket 4) (threads_per_core 2) (cpu_mhz 2394) (xen_major 4) (xen_minor 4))",
    "(xend.err 'Cannot set vcpus greater than max vcpus on running domain')",
    "(Domain-0 guest1 'stopped vm')",
]
NASTY = [
    "(",
    ")",
    "'",
    '"',
    "\\",
    "1e999999999",
    "-1e-999999999",
    "0e999999999",
    "-1",
    "99999999999999999999",
    "nan",
    "inf",
    "\u0663",
    "a!b",
    "[x]{y}<z>;",
    "(" * (MAX_SXP_DEPTH + 1),
    ")" * 3,
    "'\\x4",
    "'\\777'",
    "# comment\n",
    "\x04",
    "\x00",
    "\ud800",
    str(2**MAX_VCPUS),
    "9" * (MAX_SXP_NUMBER + 1),
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A xend-shaped reply with up to four pieces inserted, deleted or replaced."""
    text = draw(st.sampled_from(SAMPLES))
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(text)))
        kind = draw(st.integers(0, 2))
        if kind == 0:
            text = text[:at] + draw(st.sampled_from(NASTY)) + text[at:]
        elif kind == 1:
            text = text[:at] + text[at + draw(st.integers(0, 8)) :]
        else:
            text = text[:at] + draw(st.text(max_size=6)) + text[at + 3 :]
    return text.encode("utf-8", "surrogatepass")


def atoms(value: Sxp) -> list[str]:
    """Every atom of a parsed value, iteratively."""
    out: list[str] = []
    todo = [value]
    while todo:
        v = todo.pop()
        if isinstance(v, str):
            out.append(v)
        else:
            todo.extend(v)
    return out


def depth(value: Sxp) -> int:
    deepest, todo = 0, [(value, 0)]
    while todo:
        v, d = todo.pop()
        if isinstance(v, list):
            deepest = max(deepest, d + 1)
            todo.extend((k, d + 1) for k in v)
    return deepest


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(mutated(), st.binary(max_size=300), st.text(max_size=200)))
def test_parse_and_numbers_raise_only_value_errors(data: bytes | str) -> None:
    start = time.monotonic()
    try:
        values = sxp.parse_all(data)
    except ValueError as exc:
        assert str(exc).startswith("invalid SXP: ")
        return
    for value in values:
        assert depth(value) <= MAX_SXP_DEPTH
        for atom in atoms(value):
            record: Sxp = ["r", ["n", atom]]
            try:
                n = sxp.value_int(record, "n")
            except ValueError:
                continue
            assert isinstance(n, int) and len(str(abs(n))) <= MAX_SXP_NUMBER + 1
    assert time.monotonic() - start < 1.0


@given(st.lists(st.sampled_from(["(", ")", "a", " ", "'b'", "#c\n"]), max_size=400))
def test_bracket_soup_never_recurses(pieces: list[str]) -> None:
    text = "".join(pieces)
    try:
        values = sxp.parse_all(text)
    except ValueError as exc:
        message = str(exc)
        assert any(
            why in message
            for why in ("unbalanced", "end of input", f"nested deeper than {MAX_SXP_DEPTH}")
        ), message
        return
    # accepted: the brackets balanced and never went deeper than the cap
    level = deepest = 0
    in_comment = False
    for c in text:
        if in_comment:
            in_comment = c != "\n"
        elif c == "#":
            in_comment = True
        elif c == "(":
            level += 1
            deepest = max(deepest, level)
        elif c == ")":
            level -= 1
    assert level == 0 and deepest <= MAX_SXP_DEPTH
    assert max((depth(v) for v in values), default=0) == deepest


digits = st.text(st.sampled_from("0123456789"), min_size=1, max_size=12)


@given(
    st.one_of(
        st.text(max_size=30),
        st.builds(
            lambda sign, whole, frac, exp: f"{sign}{whole}{frac}{exp}",
            st.sampled_from(["", "-", "+"]),
            digits,
            st.one_of(st.just(""), digits.map(lambda d: "." + d)),
            st.one_of(st.just(""), st.integers(-(10**12), 10**12).map(lambda e: f"e{e}")),
        ),
    )
)
def test_number_is_capped_before_converting(text: str) -> None:
    start = time.monotonic()
    try:
        d = sxp.number(text)
    except ValueError as exc:
        assert "SXP number" in str(exc)
        return
    assert isinstance(d, Decimal) and d.is_finite()
    assert d == 0 or abs(d.adjusted()) <= MAX_SXP_NUMBER
    int(d)  # cheap, whatever the text said
    assert time.monotonic() - start < 0.5
