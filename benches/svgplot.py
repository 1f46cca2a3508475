"""Log-log line charts as SVG, written by hand (no plotting library: `make bench` needs none,
and the files are small, deterministic text that diffs well)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from xml.sax.saxutils import escape

Series = tuple[str, Sequence[tuple[float, float]]]

W, H = 640, 400
LEFT, RIGHT, TOP, BOTTOM = 70, 250, 40, 50
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
DASHED = ("baseline",)


def _decades(lo: float, hi: float) -> list[float]:
    return [10.0**e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)]


def _label(v: float) -> str:
    if v >= 1000:
        return f"{v:,.0f}"
    return f"{v:g}"


def chart(title: str, xlabel: str, ylabel: str, series: Sequence[Series]) -> str:
    """An SVG document: one line per series, both axes logarithmic; a series whose name
    contains "baseline" is dashed."""
    xs = [x for _, pts in series for x, _ in pts]
    ys = [y for _, pts in series for _, y in pts if y > 0]
    xlo, xhi = min(xs), max(xs)
    ylo, yhi = min(_decades(min(ys), max(ys))), max(_decades(min(ys), max(ys)))
    if ylo == yhi:
        yhi = ylo * 10
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def px(x: float) -> float:
        span = math.log10(xhi) - math.log10(xlo) or 1.0
        return LEFT + (math.log10(x) - math.log10(xlo)) / span * pw

    def py(y: float) -> float:
        span = math.log10(yhi) - math.log10(ylo)
        return TOP + ph - (math.log10(y) - math.log10(ylo)) / span * ph

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
        f'<text x="{LEFT}" y="22" font-size="14" font-weight="bold">{escape(title)}</text>',
    ]
    for y in _decades(ylo, yhi):
        if ylo <= y <= yhi:
            out.append(
                f'<line x1="{LEFT}" y1="{py(y):.1f}" x2="{LEFT + pw}" y2="{py(y):.1f}" '
                'stroke="#ddd"/>'
            )
            out.append(
                f'<text x="{LEFT - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{_label(y)}</text>'
            )
    for x in sorted(set(xs)):
        out.append(
            f'<line x1="{px(x):.1f}" y1="{TOP}" x2="{px(x):.1f}" y2="{TOP + ph}" stroke="#eee"/>'
        )
        out.append(
            f'<text x="{px(x):.1f}" y="{TOP + ph + 16}" text-anchor="middle">{_label(x)}</text>'
        )
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>')
    out.append(
        f'<text x="{LEFT + pw / 2}" y="{H - 10}" text-anchor="middle">{escape(xlabel)}</text>'
    )
    out.append(
        f'<text x="16" y="{TOP + ph / 2}" text-anchor="middle" '
        f'transform="rotate(-90 16 {TOP + ph / 2})">{escape(ylabel)}</text>'
    )
    for i, (name, pts) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        dash = ' stroke-dasharray="6 4"' if any(d in name for d in DASHED) else ""
        pts = sorted(p for p in pts if p[1] > 0)
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        out.append(
            f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}/>'
        )
        for x, y in pts:
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{color}"/>')
        ly = TOP + 10 + i * 34
        out.append(
            f'<line x1="{LEFT + pw + 12}" y1="{ly}" x2="{LEFT + pw + 36}" y2="{ly}" '
            f'stroke="{color}" stroke-width="2"{dash}/>'
        )
        words, line, lines = name.split(), "", []
        for w in words:  # wrap the legend at about 28 characters
            if line and len(line) + len(w) > 28:
                lines.append(line)
                line = w
            else:
                line = f"{line} {w}".strip()
        lines.append(line)
        for k, text in enumerate(lines[:2]):
            out.append(f'<text x="{LEFT + pw + 42}" y="{ly + 4 + 13 * k}">{escape(text)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
