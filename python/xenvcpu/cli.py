"""The ``xenvcpu`` command: host, list, pin, set, doctor, cpumap.

Output follows ``xl`` where ``xl`` has an equivalent (``xl info``, ``xl vcpu-list``,
``xl vcpu-pin``, ``xl vcpu-set``); ``--json`` prints one JSON document with a versioned
schema (``"schema": 1``) described in docs/cli.md.

Exit codes: 0 success, 1 the operation failed (or, for ``doctor``, no backend can serve),
2 usage error. Every failure is one line ``xenvcpu: error: <message>`` on stderr.
"""

from __future__ import annotations

import argparse
import errno as _errno
import json
import os
import re
import socket
import stat
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, NoReturn

from xenvcpu import CpuMap, __version__
from xenvcpu.daemon.xenstore import probe_endpoints
from xenvcpu.errors import AffinityNarrowed, XenvcpuError
from xenvcpu.host import Domain, Host
from xenvcpu.records import VcpuInfo

JSON_SCHEMA_VERSION = 1

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

#: Environment variable naming the URI used when ``--connect`` is not given.
URI_ENV = "XENVCPU_URI"

# Paths ``doctor`` inspects (module-level so that tests can point them elsewhere).
PRIVCMD_NODES: tuple[str, ...] = ("/dev/xen/privcmd", "/proc/xen/privcmd")
HYPERCALL_NODE = "/dev/xen/hypercall"
XEND_SOCKET = "/var/lib/xend/xend-socket"
XENSTORE_PROBE_TIMEOUT = 1.0

Json = dict[str, Any]


class CliError(Exception):
    """A failure detected by the CLI itself (not by the API); exits with ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


# ------------------------------------------------------------------------------- helpers


def _emit_json(doc: Json) -> None:
    print(json.dumps(doc, indent=2))


def _doc(command: str, **fields: Any) -> Json:
    return {"schema": JSON_SCHEMA_VERSION, "command": command, **fields}


def _uri(args: argparse.Namespace) -> str | None:
    uri: str | None = args.connect or os.environ.get(URI_ENV) or None
    return uri


def _connect(args: argparse.Namespace) -> Host:
    # Looked up at call time, so that tests can wrap xenvcpu.host.connect.
    from xenvcpu import host

    return host.connect(_uri(args))


def fmt_map(m: CpuMap | None, online: CpuMap) -> str:
    """A map as ``xl`` prints it: ``all`` when it holds every online CPU, ``none`` when
    empty, a cpulist otherwise."""
    if m is None:
        return "-"
    if not m:
        return "none"
    if m.is_full() or online.issubset(m):
        return "all"
    return m.to_cpulist()


def state_letters(v: VcpuInfo) -> str:
    """``xl vcpu-list``'s State: ``r`` running (column 1), ``b`` blocked (column 2),
    ``p`` offline (column 3); a runnable vCPU is ``---``."""
    if not v.online:
        return "--p"
    return f"{'r' if v.running else '-'}{'b' if v.blocked else '-'}-"


@contextmanager
def _narrowed_to_stderr(collected: list[str]) -> Iterator[None]:
    """Turn AffinityNarrowed warnings into ``xenvcpu: warning:`` lines on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for w in caught:
                msg = str(w.message)
                if issubclass(w.category, AffinityNarrowed):
                    collected.append(msg)
                print(f"xenvcpu: warning: {msg}", file=sys.stderr)


# ------------------------------------------------------------------------------- cpumap


def cmd_cpumap(args: argparse.Namespace) -> int:
    """Convert a CPU set between the cpulist, byte and bool forms."""
    if args.hex:
        try:
            data = bytes.fromhex(args.spec)
        except ValueError as e:
            raise CliError(f"invalid hex bytes {args.spec!r}: {e}") from None
        m = CpuMap.from_bytes(data, args.width)
    else:
        if args.width is None:
            raise CliError("cpumap needs --width for a cpulist", EXIT_USAGE)
        m = CpuMap.parse(args.spec, args.width)
    if args.json:
        _emit_json(
            _doc(
                "cpumap",
                width=m.width,
                cpulist=m.to_cpulist(),
                cpus=m.to_list(),
                count=len(m),
                bytes_hex=m.to_bytes().hex(),
            )
        )
    else:
        print(f"width:   {m.width}")
        print(f"cpulist: {m.to_cpulist() or '(empty)'}")
        print(f"count:   {len(m)}")
        print(f"bytes:   {m.to_bytes().hex()}  (little-endian: CPU0-7 in the first byte)")
    return EXIT_OK


# --------------------------------------------------------------------------------- host


def cmd_host(args: argparse.Namespace) -> int:
    host = _connect(args)
    info = host.info
    topo = host.topology
    online: CpuMap = host.cpus
    sockets = len(topo.sockets) or None
    nodes = [(n, CpuMap.from_cpus(topo.node_cpus(n), host.max_cpus)) for n in topo.nodes]
    pools = host.cpupools
    if args.json:
        _emit_json(
            _doc(
                "host",
                uri=host.uri,
                backend=host.backend,
                xen_version=info.xen_version,
                nr_cpus=info.nr_cpus,
                max_cpu_id=info.max_cpu_id,
                online_cpus=online.to_cpulist(),
                threads_per_core=info.threads_per_core,
                cores_per_socket=info.cores_per_socket,
                sockets=sockets,
                nr_nodes=info.nr_nodes,
                cpu_mhz=info.cpu_mhz,
                total_memory_mib=info.total_memory_mib,
                free_memory_mib=info.free_memory_mib,
                nodes=[{"node": n, "cpus": m.to_cpulist()} for n, m in nodes],
                cpupools=[
                    {
                        "id": p.id,
                        "name": p.name,
                        "scheduler": p.scheduler,
                        "cpus": p.cpus.to_cpulist(),
                        "n_domains": p.n_domains,
                    }
                    for p in pools
                ],
            )
        )
        return EXIT_OK
    rows: list[tuple[str, object]] = [
        ("uri", host.uri),
        ("backend", host.backend),
        ("xen_version", info.xen_version),
        ("nr_cpus", info.nr_cpus),
        ("max_cpu_id", info.max_cpu_id),
        ("online_cpus", online.to_cpulist() or "none"),
        ("nr_nodes", info.nr_nodes),
        ("sockets", sockets if sockets is not None else "unknown"),
        ("cores_per_socket", info.cores_per_socket),
        ("threads_per_core", info.threads_per_core),
        ("cpu_mhz", info.cpu_mhz),
        ("total_memory", info.total_memory_mib),
        ("free_memory", info.free_memory_mib),
    ]
    for key, value in rows:
        print(f"{key:<23}: {value}")
    print(f"{'numa_nodes':<23}:")
    print(f"{'node':>6}  cpus")
    for n, m in nodes:
        print(f"{n:>6}  {m.to_cpulist() or 'none'}")
    print(f"{'cpupools':<23}:")
    width = max([len("name"), *(len(p.name) for p in pools)])
    print(f"  {'name':<{width}} {'id':>4} {'sched':<9} {'ndoms':>5}  cpus")
    for p in pools:
        print(
            f"  {p.name:<{width}} {p.id:>4} {p.scheduler:<9} {p.n_domains:>5}  "
            f"{p.cpus.to_cpulist() or 'none'}"
        )
    return EXIT_OK


# --------------------------------------------------------------------------------- list

LIST_HEADER = (
    f"{'Name':<32} {'ID':>5} {'VCPU':>5} {'CPU':>5} {'State':>5} {'Time(s)':>9} "
    "Affinity (Hard / Soft)"
)


def _list_row(dom: Domain, v: VcpuInfo, online: CpuMap) -> str:
    # The very widths of xl's print_vcpuinfo (xl_vcpu.c), its one-column shift included.
    cpu = "-" if v.cpu is None or not v.online else str(v.cpu)
    return (
        f"{dom.name:<32} {dom.id:>5} {v.number:>5}{cpu:>5} {state_letters(v):>5} "
        f"{v.cpu_time_ns / 1e9:9.1f}  "
        f"{fmt_map(v.hard_affinity, online)} / {fmt_map(v.soft_affinity, online)}"
    )


def _vcpu_json(v: VcpuInfo) -> Json:
    return {
        "vcpu": v.number,
        "state": v.state.name.lower(),
        "state_xl": state_letters(v),
        "online": bool(v.online),
        "cpu": v.cpu if v.online else None,
        "time_s": round(v.cpu_time_ns / 1e9, 1),
        "cpu_time_ns": v.cpu_time_ns,
        "hard_affinity": v.hard_affinity.to_cpulist(),
        "soft_affinity": v.soft_affinity.to_cpulist(),
    }


def cmd_list(args: argparse.Namespace) -> int:
    host = _connect(args)
    online: CpuMap = host.cpus
    rows: list[tuple[Domain, list[VcpuInfo], XenvcpuError | None]] = []
    if args.domains:
        doms = [host.domain(ref) for ref in args.domains]  # unknown -> DomainNotFound
        for dom in doms:
            try:
                rows.append((dom, dom.vcpus(), None))
            except XenvcpuError as e:
                rows.append((dom, [], e))
    else:
        rows = [(d.domain, d.vcpus, d.error) for d in host.snapshot()]
    failed = [(dom, err) for dom, _, err in rows if err is not None]
    if args.json:
        _emit_json(
            _doc(
                "list",
                uri=host.uri,
                domains=[
                    {
                        "name": dom.name,
                        "id": dom.id,
                        "uuid": dom.uuid,
                        "max_vcpus": dom.max_vcpus,
                        "cpupool": dom.cpupool,
                        "vcpus": [_vcpu_json(v) for v in vcpus],
                        "error": None if err is None else str(err),
                    }
                    for dom, vcpus, err in rows
                ],
            )
        )
    else:
        print(LIST_HEADER)
        for dom, vcpus, _ in rows:
            for v in vcpus:
                print(_list_row(dom, v, online))
    if failed:
        detail = "; ".join(f"{dom.label}: {err}" for dom, err in failed)
        raise CliError(f"could not read the vCPUs of {len(failed)} domain(s): {detail}")
    return EXIT_OK


# ---------------------------------------------------------------------------------- pin


def _map_arg(text: str | None) -> str | None:
    """``-`` (or absent) leaves that affinity unchanged, as in ``xl vcpu-pin``."""
    return None if text is None or text == "-" else text


def _vcpu_arg(text: str) -> int | None:
    if text == "all":
        return None
    if not re.fullmatch(r"[+-]?\d+", text.strip()):
        raise CliError(f"invalid vCPU {text!r}: give a vCPU number or 'all'", EXIT_USAGE)
    return int(text)


def cmd_pin(args: argparse.Namespace) -> int:
    vcpu = _vcpu_arg(args.vcpu)
    hard_spec, soft_spec = _map_arg(args.hard), _map_arg(args.soft)
    if hard_spec is None and soft_spec is None:
        raise CliError("nothing to change: HARD and SOFT are both '-'", EXIT_USAGE)
    host = _connect(args)
    dom = host.domain(args.domain)
    # Parse here so that a bad cpulist names which argument it came from.
    hard = None if hard_spec is None else host.cpumap(hard_spec, what="hard affinity")
    soft = None if soft_spec is None else host.cpumap(soft_spec, what="soft affinity")
    narrowed: list[str] = []
    with _narrowed_to_stderr(narrowed):
        if vcpu is None:
            pins = dom.pin_all(hard=hard, soft=soft, force=args.force)
        else:
            pins = [dom.pin_vcpu(vcpu, hard=hard, soft=soft, force=args.force)]
    online: CpuMap = host.cpus
    if args.json:

        def cl(m: CpuMap | None) -> str | None:
            return None if m is None else m.to_cpulist()

        _emit_json(
            _doc(
                "pin",
                uri=host.uri,
                domain={"name": dom.name, "id": dom.id},
                force=bool(args.force),
                pins=[
                    {
                        "vcpu": p.vcpu,
                        "requested_hard": cl(p.requested_hard),
                        "requested_soft": cl(p.requested_soft),
                        "hard": cl(p.hard),
                        "soft": cl(p.soft),
                        "narrowed": p.narrowed,
                    }
                    for p in pins
                ],
                warnings=narrowed,
            )
        )
        return EXIT_OK
    for p in pins:
        parts = []
        for kind, req, eff in (
            ("hard", p.requested_hard, p.hard),
            ("soft", p.requested_soft, p.soft),
        ):
            if req is None:
                parts.append(f"{kind} unchanged")
            elif eff == req:
                parts.append(f"{kind} {fmt_map(eff, online)}")
            else:
                parts.append(
                    f"{kind} requested {fmt_map(req, online)}, effective {fmt_map(eff, online)}"
                )
        print(f"{dom.name} ({dom.id}) vCPU {p.vcpu}: {'; '.join(parts)}")
    return EXIT_OK


# ---------------------------------------------------------------------------------- set


def cmd_set(args: argparse.Namespace) -> int:
    if args.timeout is not None and args.timeout < 0:
        raise CliError(f"--timeout must not be negative (got {args.timeout:g})", EXIT_USAGE)
    spec: str = args.vcpus.strip()
    host = _connect(args)
    dom = host.domain(args.domain)
    timeout = 30.0 if args.timeout is None else args.timeout
    if re.fullmatch(r"[+-]?\d+", spec):
        count = int(spec)
        dom.set_vcpus(count, wait=args.wait, timeout=timeout)
        wanted = CpuMap.from_cpus(range(count), dom.max_vcpus)
    else:
        wanted = CpuMap.parse(spec, max(dom.max_vcpus, 1))
        dom.set_online(wanted, wait=args.wait, timeout=timeout)
    now = CpuMap.from_cpus((v.number for v in dom.vcpus() if v.online), max(dom.max_vcpus, 1))
    if args.json:
        _emit_json(
            _doc(
                "set",
                uri=host.uri,
                domain={"name": dom.name, "id": dom.id},
                max_vcpus=dom.max_vcpus,
                requested=wanted.to_cpulist(),
                requested_count=len(wanted),
                waited=bool(args.wait),
                online=now.to_cpulist(),
                online_count=len(now),
            )
        )
        return EXIT_OK
    print(
        f"{dom.name} ({dom.id}): asked vCPU {wanted.to_cpulist()} online "
        f"({len(wanted)} of {dom.max_vcpus})"
    )
    if args.wait:
        print(f"{dom.name} ({dom.id}): online now: vCPU {now.to_cpulist()} (the guest followed)")
    else:
        print(
            f"{dom.name} ({dom.id}): online now: vCPU {now.to_cpulist() or 'none'} "
            "(the guest acts on the request by itself; use --wait to wait for it)"
        )
    return EXIT_OK


# ------------------------------------------------------------------------------- doctor


@dataclass
class Check:
    name: str
    path: str | None
    ok: bool
    detail: str

    def json(self) -> Json:
        return {"name": self.name, "path": self.path, "ok": self.ok, "detail": self.detail}


def _open_device(path: str) -> tuple[bool, str]:
    """Can this process open ``path`` read-write? (False, why) otherwise."""
    if not os.path.exists(path):
        return False, "does not exist"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (_errno.EACCES, _errno.EPERM):
            return False, "present but not openable: permission denied (needs root)"
        return False, f"present but not openable: {e.strerror or e}"
    os.close(fd)
    return True, "present and openable (read-write)"


def _probe_endpoint(path: str) -> tuple[bool, str]:
    """A unix socket we can connect to, or a device we can open."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return False, "does not exist"
    except OSError as e:
        return False, f"cannot stat: {e.strerror or e}"
    if not stat.S_ISSOCK(mode):
        return _open_device(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(2.0)
        sock.connect(path)
    except OSError as e:
        if e.errno in (_errno.EACCES, _errno.EPERM):
            return False, "socket present but permission denied (needs root)"
        if e.errno == _errno.ECONNREFUSED:
            return False, "stale socket: connection refused (is the daemon running?)"
        return False, f"socket present but cannot connect: {e.strerror or e}"
    finally:
        sock.close()
    return True, "socket accepts connections"


def cmd_doctor(args: argparse.Namespace) -> int:
    uri = _uri(args)
    checks: list[Check] = []

    # The native module (Rust core): needed for every hypercall, and for sim:///.
    try:
        import xenvcpu._native as native

        native_ok, native_detail = True, f"xenvcpu._native loads ({native.__file__})"
    except Exception as e:  # ImportError, or an OSError from the loader
        native_ok, native_detail = False, f"cannot import xenvcpu._native: {e}"
    checks.append(Check("native module", None, native_ok, native_detail))

    is_root = os.geteuid() == 0
    checks.append(
        Check(
            "root",
            None,
            is_root,
            "running as root" if is_root else f"running as uid {os.geteuid()}, not root",
        )
    )

    privcmd_ok = False
    privcmd_why = []
    for path in PRIVCMD_NODES:
        ok, detail = _open_device(path)
        checks.append(Check("privcmd", path, ok, detail))
        privcmd_ok = privcmd_ok or ok
        privcmd_why.append(f"{path}: {detail}")
    hc_ok, hc_detail = _open_device(HYPERCALL_NODE)
    if not hc_ok:
        hc_detail += " (the locked-memory fallback is used for hypercall buffers)"
    checks.append(Check("hypercall buffers", HYPERCALL_NODE, hc_ok, hc_detail))

    xs_ok = False
    xs_where = ""
    xs_why = []
    # One cheap request (GET_DOMAIN_PATH 0) at each place the client would look.
    for ep in probe_endpoints(timeout=XENSTORE_PROBE_TIMEOUT):
        checks.append(Check("xenstore", ep.path, ep.ok, ep.detail))
        if ep.ok and not xs_ok:
            xs_ok, xs_where = True, ep.path
        xs_why.append(f"{ep.path}: {ep.detail}")

    xend_ok, xend_detail = _probe_endpoint(XEND_SOCKET)
    checks.append(Check("xend", XEND_SOCKET, xend_ok, xend_detail))

    # Can we actually talk to the hypervisor (or the simulator) the URI names?
    sim = uri is not None and uri.startswith("sim:")
    hv_ok = False
    hv_why = ""
    if sim or (native_ok and privcmd_ok):
        target = uri if uri is not None else "xen:///system"
        try:
            from xenvcpu import host

            h = host.connect(target)
            hv_ok = True
            hv_why = f"{target}: Xen {h.xen_version} via {h.backend}"
        except Exception as e:
            hv_why = f"{target}: {e}"
        checks.append(Check("connect", target, hv_ok, hv_why))

    ops: list[Json] = []

    def op(name: str, candidates: list[tuple[str, bool, str]]) -> None:
        served = next(((b, why) for b, ok, why in candidates if ok), None)
        ops.append(
            {
                "operation": name,
                "backend": served[0] if served else None,
                "why": served[1] if served else "no backend can serve it",
                "not_used": [
                    {"backend": b, "why": why}
                    for b, ok, why in candidates
                    if not served or b != served[0]
                ],
            }
        )

    if sim:
        sim_line = ("sim", hv_ok, hv_why if hv_ok else f"cannot connect: {hv_why}")
        for name in ("host info", "vCPU info", "pinning", "online vCPU count"):
            op(name, [sim_line])
    else:
        if not native_ok:
            privcmd_reason = f"native module unavailable ({native_detail})"
        elif not privcmd_ok:
            privcmd_reason = "no usable privcmd device: " + "; ".join(privcmd_why)
        elif not hv_ok:
            privcmd_reason = f"privcmd opens but the hypervisor does not answer: {hv_why}"
        else:
            privcmd_reason = f"privcmd hypercalls ({hv_why})"
        privcmd_line = ("privcmd", hv_ok, privcmd_reason)
        xend_line = (
            "xend",
            xend_ok,
            f"legacy xend at {XEND_SOCKET}: {xend_detail}"
            + (f" (use --connect xend+unix://{XEND_SOCKET})" if xend_ok else ""),
        )
        xs_line = (
            "xenstore",
            xs_ok,
            f"xenstore at {xs_where}" if xs_ok else "no xenstore endpoint: " + "; ".join(xs_why),
        )
        for name in ("host info", "vCPU info", "pinning"):
            op(name, [privcmd_line, xend_line])
        op("online vCPU count", [xs_line, xend_line])
        op("legacy hosts (Xen <= 4.4)", [xend_line])

    usable = any(o["backend"] is not None for o in ops)
    if usable:
        verdict = "at least one backend can serve"
    elif sim:
        verdict = f"the simulated host {uri} cannot be used: {hv_why}"
    else:
        verdict = (
            "no backend can serve: this machine is not a usable Xen control domain; "
            "only sim:/// URIs work here (try: xenvcpu --connect sim:///default list)"
        ) + ("" if native_ok else ", once the native module loads")

    if args.json:
        _emit_json(
            _doc(
                "doctor",
                uri=uri,
                checks=[c.json() for c in checks],
                operations=ops,
                usable=usable,
                verdict=verdict,
            )
        )
    else:
        print(f"uri: {uri or '(none: the default xen:///system on a Xen host)'}")
        print("checks:")
        for c in checks:
            where = f" {c.path}" if c.path else ""
            print(f"  [{'ok' if c.ok else '--'}] {c.name}{where}: {c.detail}")
        print("operations:")
        for o in ops:
            backend = o["backend"] or "NONE"
            print(f"  {o['operation']:<26} -> {backend}: {o['why']}")
            for alt in o["not_used"]:
                print(f"  {'':<26}    not {alt['backend']}: {alt['why']}")
        print(f"verdict: {verdict}")
    if not usable:
        print(f"xenvcpu: error: {verdict}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


# ------------------------------------------------------------------------------- parser


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
    h.set_defaults(func=cmd_host)

    ls = sub.add_parser("list", help="vCPUs of every domain, or of the given ones (xl vcpu-list)")
    ls.add_argument("domains", nargs="*", metavar="DOMAIN", help="domain name or id")
    _common(ls)
    ls.set_defaults(func=cmd_list)

    pn = sub.add_parser("pin", help="set hard/soft affinity of a vCPU or all (xl vcpu-pin)")
    pn.add_argument("domain", metavar="DOMAIN", help="domain name or id")
    pn.add_argument("vcpu", metavar="VCPU", help="vCPU number, or 'all'")
    pn.add_argument("hard", metavar="HARD", help="hard affinity cpulist ('-' = unchanged)")
    pn.add_argument(
        "soft", metavar="SOFT", nargs="?", default=None, help="soft affinity ('-' = unchanged)"
    )
    pn.add_argument("--force", "-f", action="store_true", help="override a temporary pin (EBUSY)")
    _common(pn)
    pn.set_defaults(func=cmd_pin)

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
    st.set_defaults(func=cmd_set)

    dr = sub.add_parser("doctor", help="which backend serves each operation, and why")
    _common(dr)
    dr.set_defaults(func=cmd_doctor)

    c = sub.add_parser("cpumap", help="convert a CPU set between cpulist, bytes and bools")
    c.add_argument("spec", help="a cpulist such as '0-3,^2' (or hex bytes with --hex)")
    c.add_argument("--width", type=int, default=None, help="number of CPUs in the map")
    c.add_argument("--hex", action="store_true", help="SPEC is hex-encoded bytes")
    _common(c)
    c.set_defaults(func=cmd_cpumap)
    return p


def _one_line(message: object) -> str:
    return " ".join(str(message).split()) or "unknown error"


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
        print(f"xenvcpu: error: {_one_line(e)}", file=sys.stderr)
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
        print(f"xenvcpu: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("xenvcpu: error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
