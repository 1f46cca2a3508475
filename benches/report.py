"""Run the benchmarks with timing on and write the ratios to docs/benchmarks.md.

    python benches/report.py [pytest args...]

Each benchmark records ``extra_info`` = {op, impl, width, ...}; cases that share every key
but ``impl`` form one comparison, and the report gives each baseline's median time divided
by xenvcpu's ("rust") median time: above 1 means xenvcpu is faster.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- cpumap:begin -->", "<!-- cpumap:end -->"


def run(args: list[str]) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as d:
        js = Path(d) / "bench.json"
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "benches/bench_cpumap.py",
            "-q",
            "-p",
            "no:cacheprovider",
            "--benchmark-enable",
            "--benchmark-only",
            "--benchmark-max-time=0.5",
            "--benchmark-min-rounds=5",
            f"--benchmark-json={js}",
            *args,
        ]
        subprocess.run(cmd, cwd=ROOT, check=True)
        return json.loads(js.read_text())  # type: ignore[no-any-return]


def fmt_time(s: float) -> str:
    return f"{s * 1e6:,.1f} µs" if s < 1e-3 else f"{s * 1e3:,.2f} ms"


def table(data: dict[str, object]) -> str:
    rows: dict[tuple[str, int], dict[str, float]] = defaultdict(dict)
    for b in data["benchmarks"]:  # type: ignore[attr-defined]
        info = b["extra_info"]
        rows[(info["op"], info["width"])][info["impl"]] = b["stats"]["median"]
    lines = [
        "| operation | CPUs | xenvcpu | pure Python | speed-up | numpy | vs numpy |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (op, width), t in sorted(rows.items()):
        r = t["rust"]
        py = t.get("python")
        npy = t.get("numpy")
        lines.append(
            f"| {op} | {width} | {fmt_time(r)} | {fmt_time(py) if py else '—'} | "
            f"{f'{py / r:.1f}x' if py else '—'} | {fmt_time(npy) if npy else '—'} | "
            f"{f'{npy / r:.2f}x' if npy else '—'} |"
        )
    return "\n".join(lines)


def main() -> None:
    data = run(sys.argv[1:])
    cpu = data["machine_info"]["cpu"]["brand_raw"]  # type: ignore[index]
    section = (
        f"{BEGIN}\n"
        f"Measured with `make bench` (= `python benches/report.py`) on {cpu}, "
        f"Python {platform.python_version()}, medians; speed-up = baseline time / xenvcpu time.\n\n"
        f"{table(data)}\n{END}"
    )
    text = OUT.read_text() if OUT.exists() else "# Benchmarks\n\n"
    if BEGIN in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END) :]
    else:
        text += "\n" + section + "\n"
    OUT.write_text(text)
    print(section)


if __name__ == "__main__":
    main()
