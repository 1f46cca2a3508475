"""Reader for xend's S-expressions (SXP), and helpers to pick fields out of them.

The grammar follows xend's own reader (``tools/python/xen/xend/sxp.py`` @4.4, xen-interfaces.md
§6.5):

* ``(`` … ``)`` are lists; whitespace separates elements.
* Atoms are bare (``Domain-0``, ``12.5``, ``-1``) or quoted with ``'`` or ``"``.  xend
  writes strings made only of letters, digits and ``. - _ : / ~`` bare and everything
  else with Python's ``repr()``, and Python ``long`` values come out quoted (``'3'``),
  so callers must never care which form an atom had: both read as the same ``str``.
* Escapes inside quotes: ``\\a \\b \\t \\n \\v \\f \\r \\\\ \\' \\"``, ``\\xHH`` (one or two
  hex digits) and ``\\ooo`` (one to three octal digits, at most 0o377).  The value bytes
  are decoded as UTF-8 (invalid sequences replaced).  Unknown escapes keep the
  backslash and the character (Python's rule; ``repr()`` never produces them).
* ``{ } < > [ ] ;`` are separators: each ends the bare atom before it and starts a new
  one, exactly as xend's reader does (so ``a[b`` reads as ``a`` and ``[b``).  ``!`` is an
  ordinary atom character (``a!b`` is one atom): xend stopped treating it as a
  separator in Xen 4.0 (commit 26b39a0d63, October 2009).
* ``#`` starts a comment that runs to the end of the line.
* A quote inside a bare atom is part of it (``it's`` is one atom), as in xend.

A value is a ``str`` (atom) or a ``list`` of values.  Only reading is provided: the
daemon path never needs to write SXP (request bodies are form-encoded, xen-interfaces.md §6.2).

Hostile input: the text is at most :data:`~xenvcpu._limits.MAX_SXP_BYTES` long and lists
nest at most :data:`~xenvcpu._limits.MAX_SXP_DEPTH` deep (the reader is iterative, so
depth never reaches Python's recursion limit); a number is at most
:data:`~xenvcpu._limits.MAX_SXP_NUMBER` characters with a decimal exponent of at most
that magnitude, checked before it is converted.  Every refusal is a ``ValueError`` that
names the cap (malformed input too, with line and column).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Union

from xenvcpu._limits import MAX_SXP_BYTES, MAX_SXP_DEPTH, MAX_SXP_NUMBER

__all__ = [
    "Sxp",
    "child",
    "child_value",
    "children",
    "fields",
    "is_list",
    "name",
    "number",
    "parse",
    "parse_all",
    "value_decimal",
    "value_int",
    "value_str",
]

#: An SXP value: an atom or a list of values.
Sxp = Union[str, list["Sxp"]]

_SPACE = frozenset(b" \t\n\v\f\r")
# Where a bare atom ends: whitespace, a comment, a list bracket or a separator (xend 4.4:
# "{}()<>[];"; "!" was one before Xen 4.0).  A separator then starts the next atom.
_ATOM_END = re.compile(rb"[ \t\n\v\f\r#(){}<>\[\];]")
_QUOTES = frozenset(b"\"'")
_STRING_STOP = {q: re.compile(re.escape(bytes([q])) + rb"|\\") for q in _QUOTES}
_ESCAPES = {
    ord("a"): 0x07,
    ord("b"): 0x08,
    ord("t"): 0x09,
    ord("n"): 0x0A,
    ord("v"): 0x0B,
    ord("f"): 0x0C,
    ord("r"): 0x0D,
    ord("\\"): ord("\\"),
    ord("'"): ord("'"),
    ord('"'): ord('"'),
}
_HEX = frozenset(b"0123456789abcdefABCDEF")
_OCT = frozenset(b"01234567")


def _decode(raw: bytes | bytearray) -> str:
    return bytes(raw).decode("utf-8", "replace")


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def where(self, pos: int | None = None) -> str:
        at = self.pos if pos is None else pos
        line = self.data.count(b"\n", 0, at) + 1
        col = at - (self.data.rfind(b"\n", 0, at) + 1) + 1
        return f"line {line}, column {col}"

    def fail(self, message: str, pos: int | None = None) -> ValueError:
        return ValueError(f"invalid SXP: {message} at {self.where(pos)}")

    def skip_blank(self) -> None:
        data = self.data
        while self.pos < len(data):
            c = data[self.pos]
            if c in _SPACE:
                self.pos += 1
            elif c == ord("#"):
                end = data.find(b"\n", self.pos)
                self.pos = len(data) if end < 0 else end + 1
            else:
                return

    def read_all(self) -> list[Sxp]:
        """Every value, iteratively: an explicit stack of the open lists (with where
        each was opened), so nesting costs no Python recursion."""
        data = self.data
        values: list[Sxp] = []
        current = values
        open_lists: list[tuple[list[Sxp], int]] = []  # (the enclosing list, start)
        while True:
            self.skip_blank()
            if self.pos >= len(data):
                if open_lists:
                    raise self.fail("end of input inside a list opened", open_lists[-1][1])
                return values
            c = data[self.pos]
            if c == ord("("):
                if len(open_lists) >= MAX_SXP_DEPTH:
                    raise self.fail(f"lists nested deeper than {MAX_SXP_DEPTH} levels")
                opened: list[Sxp] = []
                current.append(opened)
                open_lists.append((current, self.pos))
                current = opened
                self.pos += 1
            elif c == ord(")"):
                if not open_lists:
                    raise self.fail("unbalanced ')'")
                current = open_lists.pop()[0]
                self.pos += 1
            elif c == 4 and not open_lists:  # EOT ends the input
                return values
            elif c in _QUOTES:
                current.append(self.read_string())
            elif c < 0x20 or c == 0x7F:
                raise self.fail(f"invalid character (code {c})")
            else:
                current.append(self.read_atom())

    def read_atom(self) -> str:
        start = self.pos
        # the first character may be a separator: it starts the atom
        end = _ATOM_END.search(self.data, start + 1)
        self.pos = len(self.data) if end is None else end.start()
        return _decode(self.data[start : self.pos])

    def read_string(self) -> str:
        data = self.data
        start = self.pos
        delim = data[self.pos]
        self.pos += 1
        stop = _STRING_STOP[delim]
        out = bytearray()
        while True:
            found = stop.search(data, self.pos)  # the closing quote or a backslash
            if found is None:
                raise self.fail("end of input inside a string opened", start)
            out += data[self.pos : found.start()]
            c = data[found.start()]
            self.pos = found.start() + 1
            if c == delim:
                return _decode(out)
            if self.pos >= len(data):
                raise self.fail("end of input after a backslash in a string opened", start)
            e = data[self.pos]
            self.pos += 1
            if e in _ESCAPES:
                out.append(_ESCAPES[e])
            elif e == ord("x"):
                digits = bytearray()
                while len(digits) < 2 and self.pos < len(data) and data[self.pos] in _HEX:
                    digits.append(data[self.pos])
                    self.pos += 1
                if digits:
                    out.append(int(digits, 16))
                else:
                    out += b"\\x"
            elif e in _OCT:
                digits = bytearray([e])
                while len(digits) < 3 and self.pos < len(data) and data[self.pos] in _OCT:
                    digits.append(data[self.pos])
                    self.pos += 1
                value = int(digits, 8)
                if value > 0xFF:
                    raise self.fail(f"octal escape \\{digits.decode()} out of range")
                out.append(value)
            else:
                out.append(ord("\\"))
                out.append(e)


def _as_bytes(text: str | bytes | bytearray) -> bytes:
    # a lone surrogate is kept as bytes that read back as U+FFFD, not a UnicodeError
    return text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)


def parse_all(text: str | bytes | bytearray) -> list[Sxp]:
    """Every value in ``text`` (possibly none).

    Raises:
        ValueError: malformed input (the message gives line and column), more than
            MAX_SXP_BYTES of it, or lists nested deeper than MAX_SXP_DEPTH.
    """
    if len(text) > MAX_SXP_BYTES:  # a str's UTF-8 is at least as long: checked again below
        raise ValueError(f"invalid SXP: {len(text)} bytes, over the limit of {MAX_SXP_BYTES}")
    data = _as_bytes(text)
    if len(data) > MAX_SXP_BYTES:
        raise ValueError(f"invalid SXP: {len(data)} bytes, over the limit of {MAX_SXP_BYTES}")
    return _Reader(data).read_all()


def parse(text: str | bytes | bytearray) -> Sxp:
    """Exactly one value (what xend sends per reply).

    Raises:
        ValueError: as :func:`parse_all`, or no value, or more than one value.
    """
    values = parse_all(text)
    if len(values) != 1:
        raise ValueError(f"invalid SXP: expected one value, found {len(values)}")
    return values[0]


# ------------------------------------------------------------------------ field helpers


def is_list(value: Sxp) -> bool:
    return isinstance(value, list)


def name(value: Sxp) -> str | None:
    """The element name: the first item of a list when it is an atom (else None)."""
    if isinstance(value, list) and value and isinstance(value[0], str):
        return value[0]
    return None


def children(value: Sxp, element: str | None = None) -> list[Sxp]:
    """Items after the name; only the lists named ``element`` when it is given."""
    if not isinstance(value, list) or not value:
        return []
    kids = value[1:]
    if element is None:
        return kids
    return [k for k in kids if name(k) == element]


def child(value: Sxp, element: str) -> list[Sxp] | None:
    """The first child list named ``element``."""
    for kid in children(value, element):
        if isinstance(kid, list):
            return kid
    return None


def child_value(value: Sxp, element: str) -> Sxp | None:
    """The first value of the first child named ``element``: ``(x (a 1))`` → ``'1'``."""
    kid = child(value, element)
    if kid is None or len(kid) < 2:
        return None
    return kid[1]


def fields(value: Sxp) -> dict[str, Sxp]:
    """``{name: first value}`` for each named child (the first one wins)."""
    out: dict[str, Sxp] = {}
    for kid in children(value):
        key = name(kid)
        if key is not None and key not in out and isinstance(kid, list):
            out[key] = kid[1] if len(kid) > 1 else ""
    return out


def value_str(value: Sxp, element: str) -> str | None:
    """The atom value of ``element`` (None when missing).

    Raises:
        ValueError: the field holds a list.
    """
    v = child_value(value, element)
    if v is None:
        return None
    if not isinstance(v, str):
        raise ValueError(f"SXP field {element!r} is a list, expected an atom")
    return v


def value_int(value: Sxp, element: str) -> int | None:
    """The integer value of ``element``; accepts bare and quoted forms and ``12.0``.

    Raises:
        ValueError: present but not a number, or beyond the caps of :func:`number`.
    """
    d = value_decimal(value, element)
    if d is None:
        return None
    if d != d.to_integral_value():
        raise ValueError(f"SXP field {element!r} is not an integer: {_clip(str(d))}")
    return int(d)  # at most MAX_SXP_NUMBER digits: number() checked the exponent


def value_decimal(value: Sxp, element: str) -> Decimal | None:
    """The exact decimal value of ``element`` (xend floats such as ``12.345678901``).

    Raises:
        ValueError: present but not a number, or beyond the caps of :func:`number`.
    """
    v = value_str(value, element)
    if v is None:
        return None
    return number(v, f"SXP field {element!r}")


# A number as xend prints one: Python 2's str() of an int, long or float (and so never
# with spaces, underscores or other scripts' digits, which Decimal() would accept).
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NOT_FINITE = frozenset({"inf", "infinity", "nan", "snan"})


def number(text: str, what: str = "SXP number") -> Decimal:
    """``text`` as an exact Decimal: a finite decimal number of at most MAX_SXP_NUMBER
    characters whose decimal exponent is at most MAX_SXP_NUMBER in magnitude.

    The caps are checked before anything is converted, so ``int()`` of the result is
    cheap (``1e999999999`` would otherwise take minutes to become an int).

    Raises:
        ValueError: not such a number; the message names ``what`` and the cap.
    """
    if len(text) > MAX_SXP_NUMBER:
        raise ValueError(
            f"{what} is {len(text)} characters long, over the limit of {MAX_SXP_NUMBER} "
            f"for a number: {_clip(text)}"
        )
    if not _NUMBER.fullmatch(text):
        finite = "a finite number" if text.lower().lstrip("+-") in _NOT_FINITE else "a number"
        raise ValueError(f"{what} is not {finite}: {_clip(text)}")
    d = Decimal(text)
    if not d:
        return Decimal(0)  # 0e999999999 too: int() would still build its huge power of ten
    if not -MAX_SXP_NUMBER <= d.adjusted() <= MAX_SXP_NUMBER:
        raise ValueError(
            f"{what} {_clip(text)} has a decimal exponent beyond ±{MAX_SXP_NUMBER}, the limit "
            "for a number"
        )
    return d


def _clip(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")
