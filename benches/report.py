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
SCALE_BEGIN, SCALE_END = "<!-- scale:begin -->", "<!-- scale:end -->"
SCALING_BEGIN, SCALING_END = "<!-- scaling:begin -->", "<!-- scaling:end -->"
#: The statistic of the bulk and scaling tables: the fastest round. These cases take
#: milliseconds on a machine shared with other jobs, where a burst of load inflates a
#: whole stretch of rounds (and so the median of one case and not of its baseline); the
#: fastest round is what each costs when it has the CPU.
BULK_STAT = "min"
#: what each bulk operation is compared with, besides the pure-Rust loop
BASELINES = {"snapshot, 8-CPU maps": "libvirt-python", "snapshot, 4096-CPU maps": "memcpy"}
AXIS_LABELS = {
    "domains": ("domains (8 vCPUs each, 4096-CPU maps)", "domains"),
    "vcpus": ("vCPUs per domain (100 domains, 4096-CPU maps)", "vCPUs per domain"),
    "width": ("map width in CPUs (100 domains x 8 vCPUs)", "CPUs (map width)"),
}
LAB_BEGIN, LAB_END = "<!-- lab:begin -->", "<!-- lab:end -->"


def run(args: list[str]) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as d:
        js = Path(d) / "bench.json"
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "benches/bench_cpumap.py",
            "benches/bench_scale.py",
            "benches/bench_scaling.py",
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
        if info.get("suite") in ("scale", "scaling"):
            continue
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


def scale_table(data: dict[str, object]) -> str:
    """Per-vCPU cost of the bulk operations, with ratios to the pure-Rust loop and to the
    baseline of each operation (libvirt-python at 8-CPU maps, memcpy at 4096)."""
    rows: dict[str, dict[str, tuple[float, int]]] = defaultdict(dict)
    for b in data["benchmarks"]:  # type: ignore[attr-defined]
        info = b["extra_info"]
        if info.get("suite") == "scale":
            rows[info["op"]][info["impl"]] = (b["stats"][BULK_STAT], int(info["per"]))
    lines = [
        "| operation | implementation | time per call | vCPUs per call | per vCPU |"
        " vs pure-Rust loop | vs baseline |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for op, impls in rows.items():
        rust = impls.get("rust-loop")
        base_name = BASELINES.get(op, "")
        base = impls.get(base_name)
        for impl, (t, per) in impls.items():
            pv = t / per
            vs_rust = f"{pv / (rust[0] / rust[1]):.2f}x" if rust else "—"
            vs_base = f"{pv / (base[0] / base[1]):.2f}x {base_name}" if base else "—"
            lines.append(
                f"| {op} | {impl} | {fmt_time(t)} | {per} | {pv * 1e9:,.0f} ns | "
                f"{vs_rust} | {vs_base} |"
            )
    wide, narrow = rows.get("snapshot, 4096-CPU maps", {}), rows.get("snapshot, 8-CPU maps", {})
    if "rust-loop" in wide and "rust-loop" in narrow and "memcpy" in wide:
        grows = wide["rust-loop"][0] / wide["rust-loop"][1]
        grows -= narrow["rust-loop"][0] / narrow["rust-loop"][1]
        mem = wide["memcpy"][0] / wide["memcpy"][1]
        lines.append(
            f"\nThe part of the pure-Rust loop that grows with the maps (4096-CPU minus 8-CPU "
            f"maps): {grows * 1e9:,.0f} ns per vCPU, {grows / mem:.2f}x the memcpy of the "
            f"same bytes ({mem * 1e9:,.0f} ns)."
        )
    return "\n".join(lines)


def scaling(data: dict[str, object]) -> str:
    """Per-vCPU cost along each axis: an SVG chart per axis (written next to this file's
    output) and a table."""
    if str(ROOT) not in sys.path:  # run as a script: benches/ is on the path, not the root
        sys.path.insert(0, str(ROOT))
    from benches.svgplot import chart

    pts: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for b in data["benchmarks"]:  # type: ignore[attr-defined]
        info = b["extra_info"]
        if info.get("suite") == "scaling":
            per_vcpu = b["stats"][BULK_STAT] / int(info["per"])
            pts[info["axis"]][info["impl"]][int(info["x"])] = per_vcpu * 1e9
    out = []
    for axis, series in pts.items():
        title, xname = AXIS_LABELS.get(axis, (axis, axis))
        named = [
            (name + (" (baseline)" if not name.startswith(("snapshot", "pin")) else ""), v)
            for name, v in series.items()
        ]
        svg = chart(
            f"Cost per vCPU by {title}",
            xname,
            "ns per vCPU (fastest round)",
            [(name, sorted(v.items())) for name, v in named],
        )
        img = OUT.parent / f"benchmarks-scaling-{axis}.svg"
        img.write_text(svg)
        out.append(f"![cost per vCPU by {axis}]({img.name})\n")
        xs = sorted({x for v in series.values() for x in v})
        out.append("| " + xname + " | " + " | ".join(n for n, _ in named) + " |")
        out.append("|---:|" + "---:|" * len(named))
        for x in xs:
            cells = [f"{v[x]:,.0f} ns" if x in v else "—" for _, v in named]
            out.append(f"| {x:,} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def splice(text: str, begin: str, end: str, section: str) -> str:
    if begin in text:
        return text[: text.index(begin)] + section + text[text.index(end) + len(end) :]
    return text + "\n" + section + "\n"


def lab_table(data: dict[str, object]) -> str:
    """Real Xen: each implementation against the libxenctrl C loop (snapshot, pin) or xl."""
    rows: dict[str, dict[str, tuple[float, int]]] = defaultdict(dict)
    for b in data["benchmarks"]:  # type: ignore[attr-defined]
        info = b["extra_info"]
        if info.get("suite") == "lab":
            rows[info["op"]][info["impl"]] = (b["stats"]["median"], int(info["per"]))
    lines = [
        "| operation | implementation | median per call | vCPUs per call | per vCPU "
        "| vs baseline |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for op, impls in sorted(rows.items()):
        base_name = "xl vcpu-list" if op == "host listing" else "libxenctrl-C"
        base = impls.get(base_name)
        for impl, (t, per) in sorted(impls.items()):
            pv = t / per
            ratio = f"{pv / (base[0] / base[1]):.2f}x {base_name}" if base else "—"
            lines.append(
                f"| {op} | {impl} | {fmt_time(t)} | {per} | {pv * 1e6:,.1f} µs | {ratio} |"
            )
    return "\n".join(lines)


def main_lab(path: Path) -> None:
    data = json.loads(path.read_text())
    section = (
        f"{LAB_BEGIN}\n"
        f"Measured with `make xen-bench` inside the QEMU lab (Xen {LAB_XEN}, TCG emulation: "
        "absolute times are inflated, ratios are what carries over). Ratios are per vCPU "
        "against the baseline named; below 1 means xenvcpu is cheaper.\n\n"
        f"{lab_table(data)}\n{LAB_END}"
    )
    text = OUT.read_text() if OUT.exists() else "# Benchmarks\n\n"
    OUT.write_text(splice(text, LAB_BEGIN, LAB_END, section))
    print(section)


LAB_XEN = "4.17"


def main() -> None:
    if sys.argv[1:2] == ["--lab"]:
        main_lab(Path(sys.argv[2]))
        return
    data = run(sys.argv[1:])
    cpu = data["machine_info"]["cpu"]["brand_raw"]  # type: ignore[index]
    section = (
        f"{BEGIN}\n"
        f"Measured with `make bench` (= `python benches/report.py`) on {cpu}, "
        f"Python {platform.python_version()}, medians; speed-up = baseline time / xenvcpu time.\n\n"
        f"{table(data)}\n{END}"
    )
    scale = (
        f"{SCALE_BEGIN}\n"
        f"Measured in the same run; fastest round of each case (see `BULK_STAT` in "
        "benches/report.py). Ratios are per vCPU: below 1 means cheaper.\n\n"
        f"{scale_table(data)}\n{SCALE_END}"
    )
    text = OUT.read_text() if OUT.exists() else "# Benchmarks\n\n"
    text = splice(text, BEGIN, END, section)
    text = splice(text, SCALE_BEGIN, SCALE_END, scale)
    curves = (
        f"{SCALING_BEGIN}\n"
        "Measured in the same run (fastest round of each case; per vCPU = time per call / "
        "vCPUs per call; log-log axes, so a flat line is cost linear in vCPUs).\n\n"
        f"{scaling(data)}{SCALING_END}"
    )
    text = splice(text, SCALING_BEGIN, SCALING_END, curves)
    OUT.write_text(text)
    print(section)
    print(scale)
    print(curves)


if __name__ == "__main__":
    main()
