"""Placement specs: plain data (TOML, JSON with the same shape, or a Python dict).

::

    [defaults]               # optional; every matched domain, unless an entry says otherwise
    soft = "node:0"

    [[domain]]               # in order; a later match overrides an earlier one, key by key
    match = "web*"           # exact name, shell glob, or UUID
    hard = "socket:0"        # every vCPU of the domain
    soft = "siblings:4"
    online = 2               # a count (vCPUs 0..n-1) or a set: online = "0,2-3"
    layout = "spread"        # give each vCPU one pCPU of its hard set: "spread" or "pack"

    [[domain]]
    match = "db"
    hard = "16-31"
    vcpu.1.hard = "20"       # per-vCPU overrides: vcpu.N.hard / vcpu.N.soft

:func:`load_spec` checks the shape (keys, types, the layout and match values) and says
where a mistake is: the file, the entry and the key. Cpulists are read against a host
when a plan is made (their topology terms need it), where a bad one names its token too.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any, Union

from xenvcpu._limits import MAX_VCPUS
from xenvcpu.errors import PlacementError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.9/3.10 only
    import tomli as tomllib

__all__ = ["LAYOUTS", "MAX_ENTRIES", "MAX_SPEC_BYTES", "Entry", "Spec", "SpecSource", "load_spec"]

#: The largest spec file read, in bytes.
MAX_SPEC_BYTES = 4 << 20
#: The most ``[[domain]]`` entries a spec may have.
MAX_ENTRIES = 100_000
#: The two layouts.
LAYOUTS = ("spread", "pack")

_ENTRY_KEYS = ("match", "hard", "soft", "online", "layout", "vcpu")
_UUID = re.compile(
    r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
)

#: What :func:`load_spec` reads: a path to a TOML or JSON file, or the data itself.
SpecSource = Union[str, "os.PathLike[str]", Mapping[str, Any], "Spec"]


@dataclass(frozen=True)
class Entry:
    """One ``[[domain]]`` entry, or ``[defaults]`` (``number`` 0, ``match`` None).

    Keys not given are None (or empty): a later entry overrides an earlier one key by key.
    """

    number: int
    match: str | None
    hard: str | None = None
    soft: str | None = None
    online: int | str | None = None
    layout: str | None = None
    #: per-vCPU overrides: vCPU number -> {"hard": cpulist, "soft": cpulist}
    vcpus: Mapping[int, Mapping[str, str]] = field(default_factory=lambda: MappingProxyType({}))

    @cached_property
    def kind(self) -> str:
        """How ``match`` matches: "uuid", "glob" or "name"."""
        m = self.match or ""
        if _UUID.match(m):
            return "uuid"
        return "glob" if any(c in m for c in "*?[") else "name"

    @property
    def where(self) -> str:
        return "[defaults]" if self.number == 0 else f"[[domain]] #{self.number} ({self.match!r})"

    @cached_property
    def _matcher(self) -> Callable[[str, str], bool]:
        """``match`` turned into a test once (a plan asks it of every domain)."""
        m = self.match
        if m is None:
            return lambda name, uuid: True
        kind = self.kind
        if kind == "uuid":
            want = m.replace("-", "").lower()
            return lambda name, uuid: uuid.replace("-", "").lower() == want
        if kind == "glob":
            test = re.compile(fnmatch.translate(m)).match
            return lambda name, uuid: test(name) is not None
        return lambda name, uuid: name == m

    def matches(self, name: str, uuid: str) -> bool:
        return self._matcher(name, uuid)

    def select(self, names: Sequence[str], uuids: Callable[[], Sequence[str]]) -> list[int]:
        """The positions of the domains this entry matches, given every domain's name (and,
        asked only by a UUID entry, every UUID): one pass per entry, not a call per domain."""
        m, kind = self.match, self.kind
        if m is None:
            return list(range(len(names)))
        if kind == "uuid":
            want = m.replace("-", "").lower()
            return [i for i, u in enumerate(uuids()) if u.replace("-", "").lower() == want]
        if kind == "glob":
            test = re.compile(fnmatch.translate(m)).match
            return [i for i, n in enumerate(names) if test(n) is not None]
        return [i for i, n in enumerate(names) if n == m]


@dataclass(frozen=True)
class Spec:
    """A loaded placement spec."""

    source: str
    defaults: Entry | None
    entries: tuple[Entry, ...]


def _fail(
    source: str,
    where: str | None,
    message: str,
    *,
    entry: int | None = None,
    key: str | None = None,
) -> PlacementError:
    e = PlacementError(f"{source}: {where}: {message}" if where else f"{source}: {message}")
    e.source, e.entry, e.key = source, entry, key
    return e


def _cpulist(source: str, where: str, number: int, key: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail(
            source,
            where,
            f'{key} = {value!r}: expected a cpulist string such as "0-3"',
            entry=number,
            key=key,
        )
    return value


def _entry(source: str, number: int, raw: object) -> Entry:
    where = "[defaults]" if number == 0 else f"[[domain]] #{number}"
    if not isinstance(raw, Mapping):
        raise _fail(source, where, f"expected a table, not {type(raw).__name__}", entry=number)
    keys = _ENTRY_KEYS if number else tuple(k for k in _ENTRY_KEYS if k != "match")
    for k in raw:
        if k not in keys:
            raise _fail(
                source,
                where,
                f"unknown key {k!r}; the keys are {', '.join(keys)}",
                entry=number,
                key=str(k),
            )
    match = raw.get("match")
    if number:
        if not isinstance(match, str) or not match:
            raise _fail(
                source,
                where,
                "match = a domain name, shell glob or UUID is required",
                entry=number,
                key="match",
            )
        where = f"[[domain]] #{number} ({match!r})"
    online = raw.get("online")
    if online is not None:
        if isinstance(online, bool) or not isinstance(online, (int, str)):
            raise _fail(
                source,
                where,
                f'online = {online!r}: a count or a list such as "0,2-3"',
                entry=number,
                key="online",
            )
        if isinstance(online, int) and not 1 <= online <= MAX_VCPUS:
            raise _fail(
                source,
                where,
                f"online = {online}: a count from 1 to {MAX_VCPUS}",
                entry=number,
                key="online",
            )
    layout = raw.get("layout")
    if layout is not None and layout not in LAYOUTS:
        raise _fail(
            source,
            where,
            f'layout = {layout!r}: expected "spread" or "pack"',
            entry=number,
            key="layout",
        )
    vcpus: dict[int, Mapping[str, str]] = {}
    per = raw.get("vcpu", {})
    if not isinstance(per, Mapping):
        raise _fail(
            source, where, "vcpu: expected vcpu.N.hard / vcpu.N.soft", entry=number, key="vcpu"
        )
    for n, over in per.items():
        text = str(n)
        if not (text.isascii() and text.isdigit()) or int(text) >= MAX_VCPUS:
            raise _fail(
                source,
                where,
                f"vcpu.{n}: a vCPU number from 0 to {MAX_VCPUS - 1}",
                entry=number,
                key=f"vcpu.{n}",
            )
        if not isinstance(over, Mapping) or not over:
            raise _fail(
                source,
                where,
                f"vcpu.{n}: expected vcpu.{n}.hard / vcpu.{n}.soft",
                entry=number,
                key=f"vcpu.{n}",
            )
        maps: dict[str, str] = {}
        for kind, value in over.items():
            if kind not in ("hard", "soft"):
                raise _fail(
                    source,
                    where,
                    f"vcpu.{n}.{kind}: only hard and soft",
                    entry=number,
                    key=f"vcpu.{n}.{kind}",
                )
            text_map = _cpulist(source, where, number, f"vcpu.{n}.{kind}", value)
            assert text_map is not None
            maps[kind] = text_map
        vcpus[int(text)] = MappingProxyType(maps)
    return Entry(
        number=number,
        match=match if number else None,
        hard=_cpulist(source, where, number, "hard", raw.get("hard")),
        soft=_cpulist(source, where, number, "soft", raw.get("soft")),
        online=online,
        layout=layout,
        vcpus=MappingProxyType(vcpus),
    )


def _read(path: str) -> Mapping[str, Any]:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)
    except OSError as e:
        raise _fail(path, None, f"cannot read the placement file: {e.strerror or e}") from None
    if len(data) > MAX_SPEC_BYTES:
        raise _fail(path, None, f"larger than {MAX_SPEC_BYTES} bytes, the most a spec may be")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _fail(path, None, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        if path.endswith(".json") or text.lstrip().startswith("{"):
            doc = json.loads(text)
        else:
            doc = tomllib.loads(text)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, TOMLDecodeError
        raise _fail(
            path, None, f"not valid {'JSON' if path.endswith('.json') else 'TOML'}: {str(e)[:300]}"
        ) from None
    if not isinstance(doc, Mapping):
        raise _fail(path, None, "expected a table of [defaults] and [[domain]] entries")
    return doc


def load_spec(source: SpecSource) -> Spec:
    """Read a placement spec: a path to a TOML or JSON file, or the data as a ``dict``.

    Raises:
        PlacementError: the file cannot be read or parsed, or an entry is malformed; the
            message names the file, the entry and the key.
    """
    if isinstance(source, Spec):
        return source
    if isinstance(source, Mapping):
        name, doc = "<spec>", source
    else:
        name = os.fspath(source)
        if not isinstance(name, str):
            raise TypeError("a spec path is a str")
        doc = _read(name)
    for k in doc:
        if k not in ("defaults", "domain"):
            raise _fail(
                name, None, f"unknown key {k!r}; a spec has [defaults] and [[domain]]", key=str(k)
            )
    defaults = _entry(name, 0, doc["defaults"]) if "defaults" in doc else None
    raw_entries = doc.get("domain", [])
    if not isinstance(raw_entries, list):
        raise _fail(name, None, "domain: expected [[domain]] entries", key="domain")
    if len(raw_entries) > MAX_ENTRIES:
        raise _fail(name, None, f"{len(raw_entries)} entries: at most {MAX_ENTRIES}")
    entries = tuple(_entry(name, i + 1, e) for i, e in enumerate(raw_entries))
    return Spec(name, defaults, entries)
