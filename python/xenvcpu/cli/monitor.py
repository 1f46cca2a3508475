"""``xenvcpu top`` (a live view of vCPU utilisation) and ``xenvcpu exporter`` (Prometheus).

``top`` samples the host (:class:`xenvcpu.metrics.Sampler`) every interval and renders a
frame (:mod:`xenvcpu.cli.topview`): in a terminal with curses, once as text (``--once``), or
as one JSON document per sample on a line of its own (``--json``: docs/cli.md). ``exporter``
serves ``/metrics`` (:mod:`xenvcpu.exporter`), one batched snapshot per scrape.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import signal
import sys
import threading
import time
from types import FrameType

from xenvcpu._impl import CpuMap
from xenvcpu._limits import timeout_arg
from xenvcpu.cli.common import EXIT_OK, EXIT_USAGE, CliError, Json, connect, document
from xenvcpu.cli.topview import View, frame, run_curses
from xenvcpu.metrics import Sample, Sampler, node_loads
from xenvcpu.types import VcpuState

__all__ = ["cmd_exporter", "cmd_top", "sample_json"]

#: Seconds between refreshes, by default.
DEFAULT_INTERVAL = 2.0
#: The live view's first refresh comes sooner, so utilisation shows at once.
FIRST_REFRESH = 0.5
STATE_NAMES = [s.name.lower() for s in VcpuState]


def _interval(value: float) -> float:
    try:
        seconds = timeout_arg(value, "--interval", zero=False)
    except (TypeError, ValueError) as e:
        raise CliError(str(e), EXIT_USAGE) from None
    return seconds


def _util(u: float) -> float | None:
    return None if math.isnan(u) else round(u, 6)


def sample_json(sample: Sample, maps: dict[bytes, str] | None = None) -> Json:
    """One sample as a JSON document (``top --json`` prints one per line)."""
    maps = {} if maps is None else maps
    snap = sample.snapshot
    width, maplen = snap.native.width, snap.native.maplen
    hard, soft = snap.maps("hard"), snap.maps("soft")

    def cpulist(data: bytes) -> str:
        text = maps.get(data)
        if text is None:
            text = maps[data] = CpuMap.from_bytes(data, width).to_cpulist()
        return text

    domains = []
    for d in sample.domains:
        vcpus = []
        for k in range(d.start, d.stop):
            at = k * maplen
            cpu = sample.cpu[k]
            vcpus.append(
                {
                    "vcpu": sample.number[k],
                    "state": STATE_NAMES[sample.state[k]],
                    "cpu": cpu if cpu >= 0 else None,
                    "util": _util(sample.util[k]),
                    "cpu_time_ns": sample.cpu_time_ns[k],
                    "hard_affinity": cpulist(hard[at : at + maplen]),
                    "soft_affinity": cpulist(soft[at : at + maplen]),
                }
            )
        domains.append(
            {
                "name": d.name,
                "id": d.id,
                "uuid": d.uuid,
                "status": d.status,
                "previous_id": d.previous_id,
                "error": None if d.error is None else str(d.error),
                "max_vcpus": d.max_vcpus,
                "online_vcpus": d.online_vcpus,
                "cpupool": d.cpupool,
                "interval_s": d.interval_s,
                "util": _util(d.util),
                "vcpus": vcpus,
            }
        )
    return document(
        "top",
        uri=sample.host.uri,
        time_ns=sample.time_ns,
        interval_s=sample.interval_s,
        masked=sample.masked,
        domains=domains,
        pcpus=[
            {"cpu": cpu, "node": n.node, "load": round(load, 6), "vcpus": count}
            for n in node_loads(sample)
            for cpu, load, count in zip(n.cpus, n.load, n.vcpus)
        ],
        vanished=[{"name": g.name, "id": g.id, "uuid": g.uuid} for g in sample.vanished],
    )


def cmd_top(args: argparse.Namespace) -> int:
    interval = _interval(args.interval)
    if args.iterations is not None and args.iterations < 1:
        raise CliError("--iterations: give 1 or more", EXIT_USAGE)
    live = not (args.once or args.json)
    if live and not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise CliError(
            "top's live view needs a terminal: use --once (one frame as text) or --json "
            "(samples as JSON lines)"
        )
    if live:
        try:
            import curses  # noqa: F401
        except ImportError as e:
            raise CliError(f"top's live view needs curses ({e}): use --once or --json") from None
    host = connect(args)
    sampler = Sampler(host)
    if live:
        try:
            run_curses(sampler, interval, min(interval, FIRST_REFRESH))
        except KeyboardInterrupt:  # Ctrl-C stops a live view as q does
            return EXIT_OK
        except Exception as e:
            if type(e).__module__ == "_curses":  # curses.error: no usable terminal
                raise CliError(f"top cannot draw on this terminal: {e}") from None
            raise
        return EXIT_OK
    maps: dict[bytes, str] = {}
    if args.once:
        sample = sampler.sample_over(interval)
        if args.json:
            print(json.dumps(sample_json(sample, maps)), flush=True)
        else:
            width = shutil.get_terminal_size((120, 40)).columns
            for line in frame(sample, View(), max(width, 40), maps=maps):
                print(line.text)
        return EXIT_OK
    try:
        sampler.sample()
        n = 0
        while args.iterations is None or n < args.iterations:
            time.sleep(interval)
            print(json.dumps(sample_json(sampler.sample(), maps)), flush=True)
            n += 1
    except KeyboardInterrupt:  # the way to stop an endless stream: not an error
        pass
    return EXIT_OK


def cmd_exporter(args: argparse.Namespace) -> int:
    from xenvcpu import exporter

    try:
        listen = exporter.parse_listen(args.listen)
    except ValueError as e:
        raise CliError(str(e), EXIT_USAGE) from None
    exporter.prometheus_client()  # before connecting: say what is missing first
    host = connect(args)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    def ready(addr: str, port: int) -> None:
        shown = f"[{addr}]" if ":" in addr else addr
        print(
            f"xenvcpu exporter: serving http://{shown}:{port}/metrics for {host.uri}",
            file=sys.stderr,
            flush=True,
        )

    old = signal.signal(signal.SIGTERM, on_signal)
    try:
        exporter.serve(host, listen, ready=ready, stop=stop)
    except OSError as e:
        raise CliError(f"cannot listen on {args.listen}: {e.strerror or e}") from None
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, old)
    return EXIT_OK
