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
* ``{ } < > [ ] ! ;`` are separators: each ends the bare atom before it and starts a new
  one, exactly as xend's reader does (so ``a[b`` reads as ``a`` and ``[b``).
* ``#`` starts a comment that runs to the end of the line.
* A quote inside a bare atom is part of it (``it's`` is one atom), as in xend.

A value is a ``str`` (atom) or a ``list`` of values.  Only reading is provided: the
daemon path never needs to write SXP (request bodies are form-encoded, xen-interfaces.md §6.2).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Union

__all__ = [
    "Sxp",
    "child",
    "child_value",
    "children",
    "fields",
    "is_list",
    "name",
    "parse",
    "parse_all",
    "value_decimal",
    "value_int",
    "value_str",
]

#: An SXP value: an atom or a list of values.
Sxp = Union[str, list["Sxp"]]

_SPACE = frozenset(b" \t\n\v\f\r")
_SEPARATORS = frozenset(b"{}<>[]!;")  # '(' and ')' are handled on their own
_QUOTES = frozenset(b"\"'")
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
        values: list[Sxp] = []
        while True:
            self.skip_blank()
            if self.pos >= len(self.data) or self.data[self.pos] == 4:  # EOT ends the input
                return values
            values.append(self.read_value())

    def read_value(self) -> Sxp:
        c = self.data[self.pos]
        if c == ord("("):
            return self.read_list()
        if c == ord(")"):
            raise self.fail("unbalanced ')'")
        if c in _QUOTES:
            return self.read_string()
        if c < 0x20 or c == 0x7F:
            raise self.fail(f"invalid character (code {c})")
        return self.read_atom()

    def read_list(self) -> list[Sxp]:
        start = self.pos
        self.pos += 1
        items: list[Sxp] = []
        while True:
            self.skip_blank()
            if self.pos >= len(self.data):
                raise self.fail("end of input inside a list opened", start)
            if self.data[self.pos] == ord(")"):
                self.pos += 1
                return items
            items.append(self.read_value())

    def read_atom(self) -> str:
        data = self.data
        start = self.pos
        self.pos += 1  # the first character may be a separator: it starts the atom
        while self.pos < len(data):
            c = data[self.pos]
            if c in _SPACE or c in _SEPARATORS or c == ord("(") or c == ord(")") or c == ord("#"):
                break
            self.pos += 1
        return _decode(data[start : self.pos])

    def read_string(self) -> str:
        data = self.data
        start = self.pos
        delim = data[self.pos]
        self.pos += 1
        out = bytearray()
        while True:
            if self.pos >= len(data):
                raise self.fail("end of input inside a string opened", start)
            c = data[self.pos]
            self.pos += 1
            if c == delim:
                return _decode(out)
            if c != ord("\\"):
                out.append(c)
                continue
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
    return text.encode("utf-8") if isinstance(text, str) else bytes(text)


def parse_all(text: str | bytes | bytearray) -> list[Sxp]:
    """Every value in ``text`` (possibly none).

    Raises:
        ValueError: malformed input; the message gives line and column.
    """
    return _Reader(_as_bytes(text)).read_all()


def parse(text: str | bytes | bytearray) -> Sxp:
    """Exactly one value (what xend sends per reply).

    Raises:
        ValueError: malformed input, no value, or more than one value.
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
        ValueError: present but not a number.
    """
    d = value_decimal(value, element)
    if d is None:
        return None
    if d != d.to_integral_value():
        raise ValueError(f"SXP field {element!r} is not an integer: {value_str(value, element)!r}")
    return int(d)


def value_decimal(value: Sxp, element: str) -> Decimal | None:
    """The exact decimal value of ``element`` (xend floats such as ``12.345678901``).

    Raises:
        ValueError: present but not a number.
    """
    v = value_str(value, element)
    if v is None:
        return None
    try:
        d = Decimal(v)
    except InvalidOperation:
        raise ValueError(f"SXP field {element!r} is not a number: {v!r}") from None
    if not d.is_finite():
        raise ValueError(f"SXP field {element!r} is not a finite number: {v!r}")
    return d
