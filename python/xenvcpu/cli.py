"""The ``xenvcpu`` command."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from xenvcpu import CpuMap, __version__
from xenvcpu.errors import XenvcpuError

JSON_SCHEMA_VERSION = 1


def cmd_cpumap(args: argparse.Namespace) -> int:
    """Convert a CPU set between the cpulist, byte and bool forms."""
    if args.hex is not None:
        m = CpuMap.from_bytes(bytes.fromhex(args.spec), args.width)
    else:
        m = CpuMap.parse(args.spec, args.width)
    if args.json:
        doc = {
            "schema": JSON_SCHEMA_VERSION,
            "width": m.width,
            "cpulist": m.to_cpulist(),
            "cpus": m.to_list(),
            "bytes_hex": m.to_bytes().hex(),
        }
        print(json.dumps(doc))
    else:
        print(f"width:   {m.width}")
        print(f"cpulist: {m.to_cpulist() or '(empty)'}")
        print(f"count:   {len(m)}")
        print(f"bytes:   {m.to_bytes().hex()}  (little-endian: CPU0-7 in the first byte)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="xenvcpu", description="Manage the virtual CPUs of running Xen domains."
    )
    p.add_argument("--version", action="version", version=f"xenvcpu {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    c = sub.add_parser("cpumap", help="convert a CPU set between cpulist, bytes and bools")
    c.add_argument("spec", help="a cpulist such as '0-3,^2' (or hex bytes with --hex)")
    c.add_argument("--width", type=int, default=None, help="number of CPUs in the map")
    c.add_argument("--hex", action="store_const", const=True, help="SPEC is hex-encoded bytes")
    c.add_argument("--json", action="store_true", help="print JSON (versioned schema)")
    c.set_defaults(func=cmd_cpumap)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "cpumap" and args.width is None and args.hex is None:
        print("xenvcpu: error: cpumap needs --width for a cpulist", file=sys.stderr)
        return 2
    try:
        rc: int = args.func(args)
    except (XenvcpuError, ValueError) as e:
        print(f"xenvcpu: error: {e}", file=sys.stderr)
        return 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
