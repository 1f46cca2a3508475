"""What ``xenvcpu top`` shows: a frame of text lines built from a :class:`~xenvcpu.metrics.Sample`
and the view's state (sort, filter, expanded domains, selection), and the curses loop that
draws it and reads keys.

The frame is plain text, the same for ``--once`` and the live view (which only adds the
selection marker, the key line and colours), so what a test reads from the terminal is what
:func:`frame` returns.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from xenvcpu._impl import CpuMap
from xenvcpu.metrics import DomainSample, Sample, node_loads

if TYPE_CHECKING:
    from xenvcpu.metrics import Sampler

__all__ = ["KEYS_HELP", "SORTS", "Line", "View", "frame", "run_curses"]

#: Sort keys: the key pressed, what it sorts by, and whether the biggest comes first.
SORTS = {"u": ("util", True), "n": ("name", False), "i": ("id", False), "p": ("pcpu", False),
         "t": ("time", True)}  # fmt: skip
KEYS_HELP = (
    "q quit  u/n/i/p/t sort by util/name/id/pCPU/time (again: reverse)  / filter  "
    "up/down, enter: expand  +/- all"
)
STATE_LETTERS = ("--p", "r--", "-b-", "---")  # by state code, as xl vcpu-list prints them
LEGEND = (
    "pCPU load 0-9 = 0-90%, # = 100%+, ? = not measured yet; vCPUs on it 1-9, + = 10+; . = none"
)
HEADER = (
    f"  {'NAME':<24} {'ID':>5} {'VCPU':>6} {'STATE':>5} {'PCPU':>5} {'UTIL%':>7} "
    f"{'TIME(s)':>10}  HARD / SOFT"
)
NAME_W = 24


@dataclass(frozen=True)
class Line:
    """One line of a frame: its text and what it is (for colours in the live view):
    ``title``, ``strip``, ``header``,
    ``domain`` (``key`` is its UUID), ``vcpu``, ``note``. ``cells``: where a strip's cells
    start, and each one's heat (0 nothing seen, 1 some load, 2 hot: 90% or more, or two
    vCPUs or more)."""

    text: str
    kind: str = "note"
    key: str | None = None
    cells: tuple[int, tuple[int, ...]] | None = None


@dataclass
class View:
    """The state of the live view that keys change."""

    sort: str = "util"
    reverse: bool = True
    filter: str = ""
    collapsed: set[str] = field(default_factory=set)
    expanded: set[str] = field(default_factory=set)
    #: Domains start expanded when every vCPU fits the screen, else collapsed.
    expand_default: bool = True
    selected: str | None = None
    scroll: int = 0

    def press_sort(self, key: str) -> None:
        name, biggest_first = SORTS[key]
        if self.sort == name:
            self.reverse = not self.reverse
        else:
            self.sort, self.reverse = name, biggest_first

    def is_expanded(self, key: str) -> bool:
        if key in self.expanded:
            return True
        if key in self.collapsed:
            return False
        return self.expand_default

    def toggle(self, key: str) -> None:
        if self.is_expanded(key):
            self.expanded.discard(key)
            self.collapsed.add(key)
        else:
            self.collapsed.discard(key)
            self.expanded.add(key)

    def set_all(self, expanded: bool) -> None:
        self.expand_default = expanded
        self.expanded.clear()
        self.collapsed.clear()


def _pct(u: float) -> str:
    return "-" if math.isnan(u) else f"{u * 100:.1f}"


def _printable(text: str) -> str:
    """A name as one line of a terminal: control and other unprintable characters as ``?``
    (a toolstack's names are data, not terminal commands)."""
    return text if text.isprintable() else "".join(c if c.isprintable() else "?" for c in text)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "~"


def _cpulist_of(cache: dict[bytes, str], data: bytes, width: int, online: CpuMap) -> str:
    text = cache.get(data)
    if text is None:
        m = CpuMap.from_bytes(data, width)
        text = "none" if not m else "all" if online.issubset(m) else m.to_cpulist()
        cache[data] = text
    return text


def _matches(d: DomainSample, text: str) -> bool:
    if not text:
        return True
    return text.lower() in d.name.lower() or text == str(d.id)


def _domain_value(d: DomainSample, sample: Sample, sort: str) -> Any:
    if sort == "name":
        return (d.name, d.id)
    if sort == "id":
        return d.id
    if sort == "time":
        return sum(d.cpu_time_ns)
    if sort == "pcpu":
        cpus = [c for c in d.cpus if c >= 0]
        return min(cpus) if cpus else math.inf
    return d.util


def _ordered(items: list[Any], key: Callable[[Any], Any], reverse: bool) -> list[Any]:
    """Sorted by ``key``, NaN (not measured) last whatever the direction."""
    known: list[Any] = []
    unknown: list[Any] = []
    for x in items:
        v = key(x)
        (unknown if isinstance(v, float) and math.isnan(v) else known).append(x)
    return sorted(known, key=key, reverse=reverse) + unknown


def _strips(sample: Sample, width: int) -> list[Line]:
    out: list[Line] = []
    measured = sample.interval_s is not None
    cells = max(width - 9, 8)
    for n in node_loads(sample):
        total = math.fsum(n.load)
        vcpus = sum(n.vcpus)
        label = "?" if not n.cpus else CpuMap.from_cpus(n.cpus, sample.host.max_cpus).to_cpulist()
        group = max(1, math.ceil(len(n.cpus) / cells))
        busiest = max(range(len(n.cpus)), key=lambda i: (n.load[i], n.vcpus[i]), default=None)
        title = f"node {n.node if n.node >= 0 else '?'}  pCPUs {label}  "
        title += f"load {total:.2f}  vCPUs {vcpus}" if measured else f"vCPUs {vcpus}"
        if busiest is not None and measured and n.vcpus[busiest]:
            title += (
                f"  busiest: pCPU {n.cpus[busiest]} ({n.load[busiest] * 100:.0f}%, "
                f"{n.vcpus[busiest]} vCPU{'s' if n.vcpus[busiest] > 1 else ''})"
            )
        if group > 1:
            title += f"  [one column: the busiest of {group} pCPUs]"
        out.append(Line(_cut(title, width), "title"))
        loads, counts, heats = [], [], []
        for g in range(0, len(n.cpus), group):
            load = max(n.load[g : g + group])
            count = max(n.vcpus[g : g + group])
            if count == 0:
                ch = "."
            elif not measured:
                ch = "?"
            else:
                ch = "#" if load >= 1.0 else str(min(9, int(load * 10)))
            loads.append(ch)
            counts.append("." if count == 0 else "+" if count >= 10 else str(count))
            heats.append(2 if measured and (load >= 0.9 or count >= 2) else 1 if count else 0)
        out.append(Line("  load  " + "".join(loads), "strip", cells=(8, tuple(heats))))
        out.append(Line("  vCPUs " + "".join(counts), "strip", cells=(8, tuple(heats))))
    return out


def frame(
    sample: Sample,
    view: View,
    width: int,
    *,
    refresh: float | None = None,
    maps: dict[bytes, str] | None = None,
    marker: bool = False,
) -> list[Line]:
    """Every line of one frame (the live view shows as many as fit, scrolled)."""
    host = sample.host
    maps = {} if maps is None else maps
    online_cpus = host.cpus
    states = sample.state
    n_run = sum(1 for s in states if s == 1)
    n_blk = sum(1 for s in states if s == 2)
    n_rbl = sum(1 for s in states if s == 3)
    n_on = n_run + n_blk + n_rbl
    nodes = host.topology.nodes
    title = f"xenvcpu top - {host.uri} - Xen {host.xen_version} - {len(online_cpus)} pCPUs"
    title += f", {len(nodes)} NUMA nodes"
    if sample.interval_s is None:
        title += " - first sample: utilisation from the next refresh"
    else:
        title += f" - interval {sample.interval_s:.2f} s"
        if refresh is not None:
            title += f", refresh {refresh:g} s"
    summary = (
        f"{len(sample.domains)} domains, {n_on}/{len(sample)} vCPUs online: {n_run} running, "
        f"{n_rbl} runnable, {n_blk} blocked"
    )
    if sample.interval_s is not None:
        summary += f"; load {sample.util_total():.2f} of {len(online_cpus)} pCPUs"
    if sample.masked:
        summary += "; CPU time bit 63 masked (Xen < 4.13)"
    arrow = "v" if view.reverse else "^"
    status = f"sort: {view.sort} {arrow}  filter: {view.filter or '-'}"
    lines = [Line(_cut(title, width), "title"), Line(_cut(summary, width), "note")]
    lines += _strips(sample, width)
    lines.append(Line(_cut(LEGEND, width), "note"))
    lines.append(Line(_cut(status, width), "note"))
    lines.append(Line(_cut(HEADER, width), "header"))

    doms = [d for d in sample.domains if _matches(d, view.filter)]
    doms = _ordered(doms, lambda d: _domain_value(d, sample, view.sort), view.reverse)
    width_maps = host.max_cpus
    maplen = sample.snapshot.native.maplen
    hard = sample.snapshot.maps("hard") if any(view.is_expanded(d.uuid) for d in doms) else b""
    soft = sample.snapshot.maps("soft") if hard else b""
    measured = sample.interval_s is not None
    col: Sequence[float] | None = None  # what vCPUs are sorted by within their domain
    if view.sort == "util":
        col = sample.util
    elif view.sort == "time":
        col = sample.cpu_time_ns
    elif view.sort == "pcpu":
        col = [c if c >= 0 else math.inf for c in sample.cpu]
    for d in doms:
        expanded = view.is_expanded(d.uuid)
        sel = ">" if marker and view.selected == d.uuid else " "
        flag = "-" if expanded else "+"
        if d.status == "error":
            state = "ERR"
        elif d.status == "returned":
            state = "back"
        elif d.status == "first" and measured:
            state = "new"
        else:
            state = ""
        t = sum(d.cpu_time_ns) / 1e9
        vc = f"{d.online_vcpus}/{d.max_vcpus}"
        shown = _cut(_printable(d.name), NAME_W - 2)
        text = (
            f"{sel}{flag} {shown:<{NAME_W - 2}} {d.id:>5} {vc:>6} {state:>5} "
            f"{'':>5} {_pct(d.util):>7} {t:>10.1f}"
        )
        if d.error is not None:
            text += f"  error: {_printable(str(d.error))}"
        elif d.status == "returned" and d.previous_id is not None:
            text += f"  came back (was domain {d.previous_id}): counters restarted"
        lines.append(Line(_cut(text, width), "domain", d.uuid))
        if not expanded:
            continue
        ks = list(range(d.start, d.stop))
        if col is not None:
            ks = _ordered(ks, col.__getitem__, view.reverse)
        elif view.reverse:
            ks.reverse()
        for k in ks:
            code = states[k]
            cpu = "-" if sample.cpu[k] < 0 else str(sample.cpu[k])
            at = k * maplen
            h = _cpulist_of(maps, hard[at : at + maplen], width_maps, online_cpus)
            s = _cpulist_of(maps, soft[at : at + maplen], width_maps, online_cpus)
            text = (
                f"  {'':<{NAME_W}} {'':>5} {sample.number[k]:>6} {STATE_LETTERS[code]:>5} "
                f"{cpu:>5} {_pct(sample.util[k]):>7} {sample.cpu_time_ns[k] / 1e9:>10.1f}"
                f"  {h} / {s}"
            )
            lines.append(Line(_cut(text, width), "vcpu", d.uuid))
    if not doms:
        lines.append(Line(f"  no domain matches the filter {view.filter!r}", "note"))
    if sample.vanished:
        gone = ", ".join(f"{_printable(g.name)} ({g.id})" for g in sample.vanished)
        lines.append(Line(_cut(f"  gone since the last sample: {gone}", width), "note"))
    return lines


# ------------------------------------------------------------------------------ live view


def run_curses(sampler: Sampler, interval: float, first_refresh: float) -> None:
    """The live view: draw, wait for a key or the next refresh, repeat until ``q``."""
    import curses

    curses.wrapper(_Live(sampler, interval, first_refresh).loop)


class _Live:
    def __init__(self, sampler: Sampler, interval: float, first_refresh: float) -> None:
        self.sampler = sampler
        self.interval = interval
        self.first_refresh = first_refresh
        self.view = View()
        self.maps: dict[bytes, str] = {}
        self.sample = sampler.sample()
        self.lines: list[Line] = []
        self.colors = False

    def loop(self, scr: Any) -> None:
        import curses

        try:
            curses.curs_set(0)
        except curses.error:
            pass
        if curses.has_colors():
            try:
                curses.start_color()
                curses.use_default_colors()
                curses.init_pair(1, curses.COLOR_RED, -1)
                curses.init_pair(2, curses.COLOR_YELLOW, -1)
                curses.init_pair(3, curses.COLOR_CYAN, -1)
                self.colors = True
            except curses.error:
                self.colors = False
        h, w = scr.getmaxyx()
        # every domain expanded if all its lines (and the key line) fit, else collapsed
        lines = frame(self.sample, self.view, max(w - 1, 20), maps=self.maps)
        self.view.expand_default = len(lines) + 1 <= h
        due = time.monotonic() + self.first_refresh
        while True:
            self.draw(scr)
            wait = max(0.0, due - time.monotonic())
            scr.timeout(int(wait * 1000))
            key = scr.getch()
            if key == -1:
                self.sample = self.sampler.sample()
                due = time.monotonic() + self.interval
                continue
            if not self.key(scr, key):
                return

    # -- keys ---------------------------------------------------------------------------

    def domain_keys(self) -> list[str]:
        return [ln.key for ln in self.lines if ln.kind == "domain" and ln.key is not None]

    def key(self, scr: Any, key: int) -> bool:
        import curses

        ch = chr(key) if 0 <= key < 256 else ""
        view = self.view
        keys = self.domain_keys()
        if ch in ("q", "Q"):
            return False
        if ch in SORTS:
            view.press_sort(ch)
        elif ch in ("r", "R"):
            view.reverse = not view.reverse
        elif ch in ("/", "f"):
            view.filter = self.prompt(scr, "filter (name or id, empty: all): ")
            view.scroll = 0
        elif ch in ("+", "="):
            view.set_all(True)
        elif ch == "-":
            view.set_all(False)
        elif key in (curses.KEY_ENTER, 10, 13) or ch == " ":
            if view.selected is not None:
                view.toggle(view.selected)
        elif key in (curses.KEY_UP, curses.KEY_DOWN) or ch in ("k", "j"):
            step = -1 if key == curses.KEY_UP or ch == "k" else 1
            if keys:
                at = keys.index(view.selected) if view.selected in keys else -step
                view.selected = keys[max(0, min(len(keys) - 1, at + step))]
        elif key in (curses.KEY_NPAGE, curses.KEY_PPAGE):
            h, _ = scr.getmaxyx()
            view.scroll = max(0, view.scroll + (h // 2 if key == curses.KEY_NPAGE else -h // 2))
        return True

    def prompt(self, scr: Any, text: str) -> str:
        import curses

        h, w = scr.getmaxyx()
        scr.timeout(-1)
        buf = ""
        while True:
            scr.move(h - 1, 0)
            scr.clrtoeol()
            scr.addnstr(h - 1, 0, text + buf, max(w - 1, 1))
            scr.refresh()
            key = scr.getch()
            if key in (10, 13, curses.KEY_ENTER):
                return buf.strip()
            if key == 27:  # Esc: keep the old filter
                return self.view.filter
            if key in (curses.KEY_BACKSPACE, 127, 8):
                buf = buf[:-1]
            elif 32 <= key < 127 and len(buf) < 64:
                buf += chr(key)

    # -- drawing ------------------------------------------------------------------------

    def draw(self, scr: Any) -> None:
        import curses

        h, w = scr.getmaxyx()
        view = self.view
        self.lines = frame(
            self.sample, view, max(w - 1, 20), refresh=self.interval, maps=self.maps, marker=True
        )
        keys = self.domain_keys()
        if view.selected not in keys:
            view.selected = keys[0] if keys else None
            self.lines = frame(
                self.sample,
                view,
                max(w - 1, 20),
                refresh=self.interval,
                maps=self.maps,
                marker=True,
            )
        head = next((i for i, ln in enumerate(self.lines) if ln.kind == "header"), 0) + 1
        body = self.lines[head:]
        room = max(h - head - 1, 1)
        if view.selected is not None:
            at = next(
                (i for i, ln in enumerate(body) if ln.kind == "domain" and ln.key == view.selected),
                0,
            )
            if at < view.scroll:
                view.scroll = at
            elif at >= view.scroll + room:
                view.scroll = at - room + 1
        view.scroll = max(0, min(view.scroll, max(len(body) - room, 0)))
        shown = self.lines[:head] + body[view.scroll : view.scroll + room]
        scr.erase()
        for y, ln in enumerate(shown[: h - 1]):
            attr = 0
            if ln.kind == "title":
                attr = curses.A_BOLD
            elif ln.kind == "header":
                attr = curses.A_REVERSE
            elif ln.kind == "domain":
                attr = curses.A_BOLD if ln.key == view.selected else 0
            try:
                scr.addnstr(y, 0, ln.text, max(w - 1, 1), attr)
                if ln.cells is not None and self.colors:
                    off, heats = ln.cells
                    for x, heat in enumerate(heats):
                        if heat == 2 and off + x < w - 1:
                            scr.chgat(y, off + x, 1, curses.color_pair(1) | curses.A_BOLD)
            except curses.error:
                pass
        more = len(body) - view.scroll - room
        footer = (f"{more} more rows (pgdn)  " if more > 0 else "") + KEYS_HELP
        try:
            scr.addnstr(h - 1, 0, footer, max(w - 1, 1), curses.A_REVERSE)
        except curses.error:
            pass
        scr.refresh()
