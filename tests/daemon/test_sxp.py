"""The SXP reader (xen-interfaces.md §6.5): unit cases, xend-shaped samples and hypothesis round
trips.

The writer used for the round trips is the protocol double's ``show``: xend's rule of
bare atoms for ``[A-Za-z0-9.-_:/~]`` strings and Python 2 ``repr()`` for the rest.
"""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenvcpu._limits import MAX_SXP_BYTES, MAX_SXP_DEPTH, MAX_SXP_NUMBER, MAX_VCPUS
from xenvcpu.daemon import sxp
from xenvcpu.daemon.sxp import Sxp

from .xend_double import py2_repr, show


def test_lists_and_bare_atoms() -> None:
    assert sxp.parse("(domain (domid 7) (name guest1))") == [
        "domain",
        ["domid", "7"],
        ["name", "guest1"],
    ]
    assert sxp.parse("atom") == "atom"
    assert sxp.parse("()") == []
    assert sxp.parse("  ( a\t(b\n c)\r\n)  ") == ["a", ["b", "c"]]


def test_quoted_atoms_read_like_bare_ones() -> None:
    # Python longs come out quoted from xend: '3' must read as 3 does.
    assert sxp.parse("(vcpus '3')") == sxp.parse("(vcpus 3)") == ["vcpus", "3"]
    assert sxp.parse('(name "my vm")') == ["name", "my vm"]
    assert sxp.parse("(x '')") == ["x", ""]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (r"'\a\b\t\n\v\f\r'", "\a\b\t\n\v\f\r"),
        (r"'\\'", "\\"),
        (r"'it\'s'", "it's"),
        (r'"say \"hi\""', 'say "hi"'),
        (r"'\x41\x4'", "A\x04"),  # one or two hex digits
        (r"'\101\60\0'", "A0\0"),  # one to three octal digits
        (r"'\1012'", "A2"),  # at most three octal digits
        (r"'caf\xc3\xa9'", "café"),  # escaped UTF-8 bytes decode as text
        (r"'\q'", "\\q"),  # unknown escape: backslash kept
        (r"'\xg'", "\\xg"),  # \x without a hex digit: kept as written
        ("'a\nb'", "a\nb"),  # raw newline inside quotes
    ],
)
def test_escapes(text: str, value: str) -> None:
    assert sxp.parse(text) == value


def test_comments_and_separators() -> None:
    assert sxp.parse("(a # comment (b)\n c) # trailing") == ["a", "c"]
    # xend 4.4's reader: { } < > [ ] ; end the atom before them and start a new one
    assert sxp.parse("(a[b] c;d)") == ["a", "[b", "]", "c", ";d"]
    assert sxp.parse("(a{b}c<d>)") == ["a", "{b", "}c", "<d", ">"]


def test_bang_is_an_atom_character() -> None:
    # "!" stopped being a separator in Xen 4.0 (26b39a0d63, "xend: disallow ! as a sxp
    # separator"): xend 4.4 reads a!b as one atom
    assert sxp.parse("(a!b !c d!)") == ["a!b", "!c", "d!"]
    assert sxp.parse("(name Hello!)") == ["name", "Hello!"]
    assert sxp.parse("(x(y))") == ["x", ["y"]]
    assert sxp.parse("(it's)") == ["it's"]  # a quote inside a bare atom is part of it


def test_parse_all_and_eot() -> None:
    assert sxp.parse_all("(a) b (c d)") == [["a"], "b", ["c", "d"]]
    assert sxp.parse_all("") == []
    assert sxp.parse_all("# only a comment\n") == []
    assert sxp.parse_all("(a)\x04(ignored") == [["a"]]  # ctrl-D ends the input


def test_bytes_and_str_input_agree() -> None:
    assert sxp.parse(b"(name 'caf\\xc3\\xa9')") == sxp.parse("(name café)") == ["name", "café"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("(a (b)", "end of input inside a list opened at line 1, column 1"),
        ("(a 'b)", "end of input inside a string opened at line 1, column 4"),
        ("a)", "unbalanced ')'"),
        (")", "unbalanced ')'"),
        ("'a\\", "after a backslash"),
        ("(\x01)", "invalid character (code 1)"),
        ("'\\777'", "out of range"),
        ("", "expected one value, found 0"),
        ("a b", "expected one value, found 2"),
        ("(a)\n\n  (b", "line 3, column 3"),
    ],
)
def test_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        sxp.parse(text)
    assert message in str(info.value)


# ------------------------------------------------------------------ field helpers

VCPU = sxp.parse(
    "(vcpu (number 1) (online 1) (cpu_time 12.345678901) (cpu '3') (cpumap (0 2)) (flag))"
)


def test_field_helpers() -> None:
    assert sxp.name(VCPU) == "vcpu"
    assert sxp.name("atom") is None
    assert sxp.name([["x"]]) is None
    assert sxp.child(VCPU, "cpumap") == ["cpumap", ["0", "2"]]
    assert sxp.child(VCPU, "missing") is None
    assert sxp.child_value(VCPU, "number") == "1"
    assert sxp.child_value(VCPU, "flag") is None
    assert len(sxp.children(VCPU)) == 6
    assert sxp.children(VCPU, "online") == [["online", "1"]]
    assert sxp.children("atom") == []
    assert sxp.value_int(VCPU, "cpu") == 3
    assert sxp.value_int(VCPU, "missing") is None
    assert sxp.value_decimal(VCPU, "cpu_time") == Decimal("12.345678901")
    assert sxp.value_str(VCPU, "number") == "1"
    assert sxp.fields(VCPU)["cpumap"] == ["0", "2"]
    assert sxp.fields(VCPU)["flag"] == ""
    assert sxp.is_list(VCPU) and not sxp.is_list("x")


def test_field_helper_errors() -> None:
    rec = sxp.parse("(d (n abc) (f 1.5) (l (1 2)) (inf inf))")
    with pytest.raises(ValueError, match="'n' is not a number"):
        sxp.value_int(rec, "n")
    with pytest.raises(ValueError, match="'f' is not an integer"):
        sxp.value_int(rec, "f")
    with pytest.raises(ValueError, match="is a list"):
        sxp.value_str(rec, "l")
    with pytest.raises(ValueError, match="not a finite number"):
        sxp.value_decimal(rec, "inf")
    assert sxp.value_int(sxp.parse("(d (n 4.0))"), "n") == 4


# ------------------------------------------------------------------ the double's writer


def test_py2_repr_matches_python2_rules() -> None:
    assert py2_repr("abc") == "'abc'"
    assert py2_repr("it's") == '"it\'s"'
    assert py2_repr("both ' and \"") == "'both \\' and \"'"
    assert py2_repr("tab\tnl\ncr\r\x01") == "'tab\\tnl\\ncr\\r\\x01'"
    assert py2_repr("é") == "'\\xc3\\xa9'"
    assert show(["a", "b c", 3, 1.5, ["x"]]) == "(a 'b c' 3 1.5 (x))"


# ------------------------------------------------------------------ round trips

atoms = st.text(st.characters(codec="utf-8"), max_size=12)  # any Unicode scalar value
trees = st.recursive(atoms, lambda kids: st.lists(kids, max_size=5), max_leaves=30)


@given(trees)
def test_round_trip_through_xends_writer(tree: Sxp) -> None:
    assert sxp.parse(show(tree)) == tree


@given(st.lists(trees, max_size=4))
def test_round_trip_many_values_with_comments(values: list[Sxp]) -> None:
    text = "\n".join(show(v) + "  # note" for v in values)
    assert sxp.parse_all(text) == values


@given(st.binary(max_size=200))
def test_arbitrary_bytes_parse_or_raise_value_error(data: bytes) -> None:
    try:
        values = sxp.parse_all(data)
    except ValueError:
        return
    assert isinstance(values, list)


@given(st.lists(st.integers(min_value=0, max_value=4095), unique=True))
def test_cpumap_shaped_lists(cpus: list[int]) -> None:
    tree = sxp.parse(show(["vcpu", ["cpumap", [str(c) for c in cpus]]]))
    items = sxp.child_value(tree, "cpumap")
    assert isinstance(items, list)
    assert [int(c) for c in items if isinstance(c, str)] == cpus
    assert len(items) == len(cpus)


def test_value_int_rejects_infinity_as_a_value_error() -> None:
    # int(Decimal("Infinity")) would raise OverflowError; callers catch ValueError.
    with pytest.raises(ValueError, match="not a finite number"):
        sxp.value_int(sxp.parse("(d (n inf))"), "n")


# ------------------------------------------------------------------ hostile input (caps)


def test_deep_nesting_is_a_value_error_naming_the_cap() -> None:
    ok = "(" * MAX_SXP_DEPTH + ")" * MAX_SXP_DEPTH
    value = sxp.parse(ok)
    for _ in range(MAX_SXP_DEPTH - 1):
        assert isinstance(value, list) and len(value) == 1
        value = value[0]
    assert value == []
    for text in ["(" * (MAX_SXP_DEPTH + 1) + ")" * (MAX_SXP_DEPTH + 1), "(" * 1_000_000]:
        with pytest.raises(ValueError, match=f"nested deeper than {MAX_SXP_DEPTH} levels"):
            sxp.parse(text)  # was a RecursionError


def test_input_size_is_capped() -> None:
    with pytest.raises(ValueError, match=f"over the limit of {MAX_SXP_BYTES}"):
        sxp.parse_all(b" " * (MAX_SXP_BYTES + 1))
    with pytest.raises(ValueError, match=f"over the limit of {MAX_SXP_BYTES}"):
        sxp.parse_all("é" * (MAX_SXP_BYTES // 2 + 1))  # the UTF-8 is what counts
    assert sxp.parse_all(b"a" * 1000) == ["a" * 1000]


def test_lone_surrogates_in_str_input() -> None:
    assert sxp.parse("(a \ud800)") == ["a", "\ufffd" * 3]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1e999999999", "exponent beyond"),  # took minutes in int(Decimal(...))
        ("-1E-999999999", "exponent beyond"),
        ("1" * (MAX_SXP_NUMBER + 1), f"over the limit of {MAX_SXP_NUMBER}"),
        ("nan", "not a finite number"),
        ("-Infinity", "not a finite number"),
        ("1_000", "not a number"),  # Decimal() would take these
        (" 12", "not a number"),
        ("\u0663", "not a number"),
        ("0x10", "not a number"),
    ],
)
def test_numbers_beyond_the_caps(text: str, message: str) -> None:
    rec: Sxp = ["d", ["n", text]]
    start = time.monotonic()
    with pytest.raises(ValueError, match=message):
        sxp.value_int(rec, "n")
    with pytest.raises(ValueError, match=message):
        sxp.value_decimal(rec, "n")
    assert time.monotonic() - start < 0.5


def test_numbers_within_the_caps() -> None:
    mask = str(2**MAX_VCPUS - 1)  # a vcpu_avail of every vCPU a domain may have
    assert len(mask) < MAX_SXP_NUMBER
    assert sxp.value_int(["d", ["m", mask]], "m") == 2**MAX_VCPUS - 1
    assert sxp.value_int(["d", ["n", "0e999999999"]], "n") == 0
    assert sxp.value_int(["d", ["n", "1e2560"]], "n") == 10**2560
    assert sxp.value_decimal(["d", ["n", "-.5"]], "n") == Decimal("-0.5")
    assert sxp.value_int(["d", ["n", "+7."]], "n") == 7
    assert sxp.number("1e+3") == 1000
