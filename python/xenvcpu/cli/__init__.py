"""The ``xenvcpu`` command: host, list, pin, set, plan, apply, watch, top, exporter, doctor,
cpumap.

Output follows ``xl`` where ``xl`` has an equivalent (``xl info``, ``xl vcpu-list``,
``xl vcpu-pin``, ``xl vcpu-set``); ``--json`` prints one JSON document with a versioned
schema (``"schema": 1``) described in docs/cli.md.

Exit codes: 0 success, 1 the operation failed (or, for ``doctor``, no backend can serve),
2 usage error; ``plan`` and ``apply --check``: 0 nothing to change, 2 changes pending, 1
any error (``plan``'s usage errors included). Every failure is one line
``xenvcpu: error: <message>`` on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Callable, NoReturn

from xenvcpu import __version__
from xenvcpu.cli import doctor, info, monitor, placement, vcpus
from xenvcpu.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    JSON_SCHEMA_VERSION,
    URI_ENV,
    CliError,
    one_line,
)
from xenvcpu.errors import XenvcpuError

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "JSON_SCHEMA_VERSION",
    "URI_ENV",
    "build_parser",
    "main",
]

# One module per command family: info (host, cpumap), vcpus (list, pin, set), placement
# (plan, apply, watch), monitor (top, exporter), doctor.

# Where exit status 2 means "changes pending", a usage error is 1 like any other error.
_PENDING_EXIT_COMMANDS = ("xenvcpu plan",)


class _Parser(argparse.ArgumentParser):
    """Usage errors: one line on stderr, exit status 2."""

    def error(self, message: str) -> NoReturn:
        where = self.prog.replace("xenvcpu", "", 1).strip()
        prefix = f"{where}: " if where else ""
        print(
            f"xenvcpu: error: {prefix}{message} (see 'xenvcpu --help')",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_FAILED if self.prog in _PENDING_EXIT_COMMANDS else EXIT_USAGE)


def _common(p: argparse.ArgumentParser) -> None:
    # SUPPRESS: given after the command it wins; absent, the value given before stays.
    p.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print JSON (versioned schema, see docs/cli.md)",
    )
    p.add_argument(
        "--connect",
        "-c",
        metavar="URI",
        default=argparse.SUPPRESS,
        help="hypervisor URI (also accepted before the command)",
    )


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="xenvcpu",
        description="Manage the virtual CPUs of running Xen domains.",
        epilog=(
            f"URI: --connect, else ${URI_ENV}, else xen:///system on a Xen host. "
            "Without Xen, use sim:///default. Exit codes: 0 ok, 1 operation failed, 2 usage."
        ),
    )
    p.add_argument("--version", action="version", version=f"xenvcpu {__version__}")
    p.add_argument(
        "--connect",
        "-c",
        metavar="URI",
        default=None,
        help=f"hypervisor URI: xen:///system, sim:///default ... (default: ${URI_ENV}, "
        "else xen:///system on a Xen host)",
    )
    p.add_argument("--json", action="store_true", default=False, help="print JSON")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    h = sub.add_parser("host", help="CPU, NUMA and cpupool facts of the host (like xl info)")
    _common(h)
    h.set_defaults(func=info.cmd_host)

    ls = sub.add_parser("list", help="vCPUs of every domain, or of the given ones (xl vcpu-list)")
    ls.add_argument("domains", nargs="*", metavar="DOMAIN", help="domain name or id")
    ls.add_argument(
        "--long", "-l", action="store_true", help="also each domain's guest type and cpupool"
    )
    _common(ls)
    ls.set_defaults(func=vcpus.cmd_list)

    pn = sub.add_parser("pin", help="set hard/soft affinity of a vCPU or all (xl vcpu-pin)")
    pn.add_argument("domain", metavar="DOMAIN", help="domain name or id")
    pn.add_argument("vcpu", metavar="VCPU", help="vCPU number, or 'all'")
    pn.add_argument("hard", metavar="HARD", help="hard affinity cpulist ('-' = unchanged)")
    pn.add_argument(
        "soft", metavar="SOFT", nargs="?", default=None, help="soft affinity ('-' = unchanged)"
    )
    pn.add_argument("--force", "-f", action="store_true", help="override a temporary pin (EBUSY)")
    _common(pn)
    pn.set_defaults(func=vcpus.cmd_pin)

    st = sub.add_parser("set", help="choose how many / which vCPUs are online (xl vcpu-set)")
    st.add_argument("domain", metavar="DOMAIN", help="domain name or id")
    st.add_argument(
        "vcpus", metavar="N|CPULIST", help="a count (vCPUs 0..N-1) or a list of vCPUs, e.g. 0,2-3"
    )
    st.add_argument("--wait", "-w", action="store_true", help="wait until the guest followed")
    st.add_argument(
        "--timeout", type=float, default=None, metavar="S", help="seconds --wait waits (30)"
    )
    _common(st)
    st.set_defaults(func=vcpus.cmd_set)

    pl = sub.add_parser(
        "plan", help="what a placement file would change (exit 0 none, 2 pending, 1 error)"
    )
    pl.add_argument("file", metavar="FILE", help="placement spec (TOML or JSON)")
    _common(pl)
    pl.set_defaults(func=placement.cmd_plan)

    ap = sub.add_parser("apply", help="make the placement so, all or nothing")
    ap.add_argument("file", metavar="FILE", help="placement spec (TOML or JSON)")
    ap.add_argument(
        "--check", action="store_true", help="change nothing; exit 0 none, 2 pending, 1 error"
    )
    ap.add_argument("--diff", action="store_true", help="print the changes (like plan)")
    ap.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds to wait for guests to follow online changes (30)",
    )
    _common(ap)
    ap.set_defaults(func=placement.cmd_apply)

    wa = sub.add_parser("watch", help="keep the placement: re-apply after restores, drift")
    wa.add_argument("file", metavar="FILE", help="placement spec (TOML or JSON)")
    wa.add_argument(
        "--interval", type=float, default=10.0, metavar="S", help="seconds between re-plans (10)"
    )
    wa.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds to wait for guests to follow online changes (30)",
    )
    _common(wa)
    wa.set_defaults(func=placement.cmd_watch)

    tp = sub.add_parser(
        "top", help="live view of vCPU utilisation, per domain and per pCPU (NUMA strips)"
    )
    tp.add_argument(
        "--interval",
        "-d",
        type=float,
        default=monitor.DEFAULT_INTERVAL,
        metavar="S",
        help=f"seconds between samples ({monitor.DEFAULT_INTERVAL:g})",
    )
    tp.add_argument("--once", action="store_true", help="print one frame (or one JSON line), exit")
    tp.add_argument(
        "--iterations",
        "-n",
        type=int,
        default=None,
        metavar="N",
        help="with --json: stop after N samples",
    )
    _common(tp)
    tp.set_defaults(func=monitor.cmd_top)

    ex = sub.add_parser("exporter", help="serve Prometheus metrics of every vCPU over HTTP")
    ex.add_argument(
        "--listen",
        "-l",
        default="127.0.0.1:9825",
        metavar="HOST:PORT",
        help="address to serve /metrics on (127.0.0.1:9825; [::1]:9825; port 0: any free one)",
    )
    ex.add_argument(
        "--connect",
        "-c",
        metavar="URI",
        default=argparse.SUPPRESS,
        help="hypervisor URI (also accepted before the command)",
    )
    ex.set_defaults(func=monitor.cmd_exporter)

    dr = sub.add_parser("doctor", help="which backend serves each operation, and why")
    dr.add_argument(
        "--timeout",
        type=float,
        default=1.0,
        metavar="S",
        help="seconds each daemon probed (xenstored, an HVM guest's QEMU) may take to "
        "answer (default 1; more on a loaded or emulated host)",
    )
    _common(dr)
    dr.set_defaults(func=doctor.cmd_doctor)

    c = sub.add_parser("cpumap", help="convert a CPU set between cpulist, bytes and bools")
    c.add_argument("spec", help="a cpulist such as '0-3,^2' (or hex bytes with --hex)")
    c.add_argument("--width", type=int, default=None, help="number of CPUs in the map")
    c.add_argument("--hex", action="store_true", help="SPEC is hex-encoded bytes")
    _common(c)
    c.set_defaults(func=info.cmd_cpumap)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (the console script exits with it)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except CliError as e:
        print(f"xenvcpu: error: {one_line(e)}", file=sys.stderr)
        return e.code
    except BrokenPipeError:
        # `xenvcpu list | head`: the reader left; say nothing more, like xl does.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_FAILED
    except (XenvcpuError, ValueError, OSError) as e:
        print(f"xenvcpu: error: {one_line(e)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("xenvcpu: error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
