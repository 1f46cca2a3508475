"""Run the benchmarks with timing on and write the ratios to docs/benchmarks.md.

    python benches/report.py [pytest args...]
    python benches/report.py --metrics [pytest args...]   # only bench_metrics.py's table
    python benches/report.py --fleet [pytest args...]   (the Ansible fleet: docs/ansible.md)

Each benchmark records ``extra_info`` = {op, impl, width, ...}; cases that share every key
but ``impl`` form one comparison, and the report gives each baseline's median time divided
by xenvcpu's ("rust") median time: above 1 means xenvcpu is faster.
"""

from __future__ import annotations

import json
import os
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
PLACEMENT_BEGIN, PLACEMENT_END = "<!-- placement:begin -->", "<!-- placement:end -->"
METRICS_BEGIN, METRICS_END = "<!-- metrics:begin -->", "<!-- metrics:end -->"
FILES = [
    "benches/bench_cpumap.py",
    "benches/bench_scale.py",
    "benches/bench_scaling.py",
    "benches/bench_placement.py",
    "benches/bench_metrics.py",
]


def run(args: list[str], files: list[str] = FILES) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as d:
        js = Path(d) / "bench.json"
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            *files,
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
        if info.get("suite") in ("scale", "scaling", "placement", "metrics"):
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


def metrics_table(data: dict[str, object]) -> str:
    """Monitoring at scale: each case against the per-vCPU loop of the same group."""
    rows: dict[str, dict[str, tuple[float, int]]] = defaultdict(dict)
    calls: dict[tuple[str, str], object] = {}
    for b in data["benchmarks"]:  # type: ignore[attr-defined]
        info = b["extra_info"]
        if info.get("suite") == "metrics":
            rows[info["op"]][info["impl"]] = (b["stats"]["median"], int(info["per"]))
            calls[info["op"], info["impl"]] = info.get("hypercalls")
    lines = [
        "| operation | implementation | median per call | vCPUs per call | per vCPU "
        "| vs per-vCPU loop | hypercalls per call |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for op, impls in sorted(rows.items()):
        base = impls.get("per-vCPU loop")
        for impl, (t, per) in sorted(impls.items(), key=lambda kv: kv[0] != "xenvcpu"):
            pv = t / per
            ratio = f"{pv / (base[0] / base[1]):.2f}x" if base else "—"
            n = calls.get((op, impl))
            lines.append(
                f"| {op} | {impl} | {fmt_time(t)} | {per} | {pv * 1e9:,.0f} ns | {ratio} "
                f"| {'—' if n is None else n} |"
            )
    return "\n".join(lines)


def metrics_section(data: dict[str, object]) -> str:
    return (
        f"{METRICS_BEGIN}\n"
        "Measured with `python benches/report.py --metrics` (or `make bench`). Ratios are per "
        "vCPU against the per-vCPU loop in the same run: below 1 means xenvcpu is cheaper.\n\n"
        f"{metrics_table(data)}\n{METRICS_END}"
    )


def placement_table(data: dict[str, object]) -> str:
    """Plan against the snapshot it starts from; apply against per-domain and per-vCPU pins."""
    rows: dict[str, dict[str, tuple[float, int]]] = defaultdict(dict)
    for b in data["benchmarks"]:  # type: ignore[attr-defined]
        info = b["extra_info"]
        if info.get("suite") == "placement":
            rows[info["op"]][info["impl"]] = (b["stats"]["median"], int(info["per"]))
    lines = [
        "| operation | implementation | median per call | per vCPU | vs baseline |",
        "|---|---|---:|---:|---:|",
    ]
    baselines = {"plan": "snapshot (baseline)", "apply": "Plan.apply (one batch)"}
    for op, impls in rows.items():
        base = impls.get(baselines.get(op, ""))
        for impl, (t, per) in impls.items():
            ratio = f"{t / base[0]:.2f}x" if base else "—"
            lines.append(f"| {op} | {impl} | {fmt_time(t)} | {t / per * 1e9:,.0f} ns | {ratio} |")
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
            ratio = "—"
            if base:
                r = pv / (base[0] / base[1])
                ratio = f"{r:.2f}x {base_name}"
                if r < 0.1:  # a speed-up: 0.00x would hide it
                    ratio = f"{r:.3f}x {base_name} ({1 / r:,.0f}x faster)"
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

FLEET_OUT = ROOT / "docs" / "ansible.md"
FLEET_BEGIN, FLEET_END = "<!-- fleet:begin -->", "<!-- fleet:end -->"


def fleet_table(data: dict[str, object]) -> str:
    """Wall time of one ansible-playbook run against the number of hosts."""
    rows: dict[int, dict[str, float]] = defaultdict(dict)
    forks = 0
    for b in data["benchmarks"]:  # type: ignore[attr-defined]
        info = b["extra_info"]
        if info.get("suite") == "ansible-fleet":
            rows[int(info["hosts"])][info["phase"]] = b["stats"]["median"]
            forks = int(info["forks"])
    lines = [
        "| hosts | apply (changed on each) | per host | rerun (ok, nothing changed) | per host |",
        "|---:|---:|---:|---:|---:|",
    ]
    for hosts, phases in sorted(rows.items()):
        cells = []
        for phase in ("apply", "rerun"):
            t = phases.get(phase)
            cells += [f"{t:.2f} s", f"{t / hosts * 1e3:,.0f} ms"] if t else ["—", "—"]
        lines.append(f"| {hosts} | " + " | ".join(cells) + " |")
    return f"forks = {forks}\n\n" + "\n".join(lines)


def main_fleet(args: list[str]) -> None:
    with tempfile.TemporaryDirectory() as d:
        js = Path(d) / "bench.json"
        cmd = [sys.executable, "-m", "pytest", "benches/bench_ansible_fleet.py", "-q"]
        cmd += ["-p", "no:cacheprovider", "--benchmark-enable", "--benchmark-only"]
        subprocess.run([*cmd, f"--benchmark-json={js}", *args], cwd=ROOT, check=True)
        data = json.loads(js.read_text())
    cpu = data["machine_info"]["cpu"]["brand_raw"]
    cores = os.cpu_count()
    section = (
        f"{FLEET_BEGIN}\n"
        f"Measured with `make bench-ansible` (= `python benches/report.py --fleet`) on {cpu} "
        f"({cores} cores), Python {platform.python_version()}, ansible-core "
        f"{_ansible_version()}; medians of 3 runs, wall time of the whole `ansible-playbook` "
        f"process.\n\n{fleet_table(data)}\n{FLEET_END}"
    )
    text = FLEET_OUT.read_text()
    FLEET_OUT.write_text(splice(text, FLEET_BEGIN, FLEET_END, section))
    print(section)


def _ansible_version() -> str:
    from importlib.metadata import version

    return version("ansible-core")


def placement_section(data: dict[str, object]) -> str:
    return (
        f"{PLACEMENT_BEGIN}\n"
        "Measured in the same run (1000 domains x 8 vCPUs, 4096 CPUs). Plan rows are "
        "against the snapshot a plan starts from; apply rows against `Plan.apply`.\n\n"
        f"{placement_table(data)}\n{PLACEMENT_END}"
    )


def main() -> None:
    if sys.argv[1:2] == ["--lab"]:
        main_lab(Path(sys.argv[2]))
        return
    # One file's table alone: (its bench file, how its section is made, its markers).
    alone = {
        "--metrics": ("benches/bench_metrics.py", metrics_section, METRICS_BEGIN, METRICS_END),
        "--placement": (
            "benches/bench_placement.py",
            placement_section,
            PLACEMENT_BEGIN,
            PLACEMENT_END,
        ),
    }
    if sys.argv[1:2] == ["--fleet"]:
        main_fleet(sys.argv[2:])
        return
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode in alone:
        bench_file, make, begin, end = alone[mode]
        section = make(run(sys.argv[2:], [bench_file]))
        text = OUT.read_text() if OUT.exists() else "# Benchmarks\n\n"
        OUT.write_text(splice(text, begin, end, section))
        print(section)
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
    placement = placement_section(data)
    text = OUT.read_text() if OUT.exists() else "# Benchmarks\n\n"
    text = splice(text, BEGIN, END, section)
    text = splice(text, SCALE_BEGIN, SCALE_END, scale)
    text = splice(text, PLACEMENT_BEGIN, PLACEMENT_END, placement)
    text = splice(text, METRICS_BEGIN, METRICS_END, metrics_section(data))
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
    print(placement)
    print(curves)


if __name__ == "__main__":
    main()
