"""The ``xenvcpu`` command: host, list, pin, set, doctor, cpumap.

Output follows ``xl`` where ``xl`` has an equivalent (``xl info``, ``xl vcpu-list``,
``xl vcpu-pin``, ``xl vcpu-set``); ``--json`` prints one JSON document with a versioned
schema (``"schema": 1``) described in docs/cli.md.

Exit codes: 0 success, 1 the operation failed (or, for ``doctor``, no backend can serve),
2 usage error. Every failure is one line ``xenvcpu: error: <message>`` on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Callable, NoReturn

from xenvcpu import __version__
from xenvcpu.cli import doctor, info, vcpus
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

# One module per command family: info (host, cpumap), vcpus (list, pin, set), doctor.


class _Parser(argparse.ArgumentParser):
    """Usage errors: one line on stderr, exit status 2."""

    def error(self, message: str) -> NoReturn:
        where = self.prog.replace("xenvcpu", "", 1).strip()
        prefix = f"{where}: " if where else ""
        print(
            f"xenvcpu: error: {prefix}{message} (see 'xenvcpu --help')",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_USAGE)


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

    dr = sub.add_parser("doctor", help="which backend serves each operation, and why")
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
