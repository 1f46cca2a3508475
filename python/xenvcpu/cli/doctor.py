"""``xenvcpu doctor``: which backend serves each operation on this machine, and why.

Three steps, each its own function: :func:`probe` looks at the machine (native module,
root, privcmd, hypercall buffers, xenstore, xend, a connection to the URI, and through it
every domain's guest type with the rule that decided it, and each HVM domain's QMP socket);
:func:`operations` decides, per operation, which backend serves it; :func:`verdict`
sums up. The text and JSON outputs render the same :class:`Diagnosis`.
"""

from __future__ import annotations

import argparse
import errno as _errno
import os
import socket
import stat
import sys
from dataclasses import dataclass, field

from xenvcpu._limits import timeout_arg
from xenvcpu.cli.common import EXIT_FAILED, EXIT_OK, Json, document, emit_json, uri_of
from xenvcpu.daemon import qmp
from xenvcpu.daemon.xenstore import probe_endpoints
from xenvcpu.errors import XenvcpuError
from xenvcpu.host import Host
from xenvcpu.types import GuestType

__all__ = ["Check", "Diagnosis", "cmd_doctor", "operations", "probe", "verdict"]

# Paths doctor inspects (module-level so that tests can point them elsewhere).
PRIVCMD_NODES: tuple[str, ...] = ("/dev/xen/privcmd", "/proc/xen/privcmd")
HYPERCALL_NODE = "/dev/xen/hypercall"
XEND_SOCKET = "/var/lib/xend/xend-socket"
#: How long each probe waits for an answer by default (``doctor --timeout``).
PROBE_TIMEOUT = 1.0


@dataclass
class Check:
    """One thing looked at: what, where, whether it is usable, and the detail."""

    name: str
    path: str | None
    ok: bool
    detail: str

    def json(self) -> Json:
        return {"name": self.name, "path": self.path, "ok": self.ok, "detail": self.detail}


@dataclass
class Diagnosis:
    """Everything doctor found, for both renderers."""

    uri: str | None
    checks: list[Check] = field(default_factory=list)
    native: tuple[bool, str] = (False, "")
    privcmd: tuple[bool, list[str]] = (False, [])
    xenstore: tuple[bool, str, list[str]] = (False, "", [])
    xend: tuple[bool, str] = (False, "")
    connected: tuple[bool, str] = (False, "")
    operations: list[Json] = field(default_factory=list)
    usable: bool = False
    verdict: str = ""

    @property
    def sim(self) -> bool:
        return self.uri is not None and self.uri.startswith("sim:")


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


def probe(uri: str | None, timeout: float = PROBE_TIMEOUT) -> Diagnosis:
    """Look at the machine: every check doctor reports, in order; ``timeout``: how long
    each daemon probed (xenstored, each HVM guest's QEMU) may take to answer."""
    d = Diagnosis(uri)
    try:  # the native module (Rust core): needed for every hypercall, and for sim:///
        import xenvcpu._native as native

        d.native = (True, f"xenvcpu._native loads ({native.__file__})")
    except Exception as e:  # ImportError, or an OSError from the loader
        d.native = (False, f"cannot import xenvcpu._native: {e}")
    d.checks.append(Check("native module", None, *d.native))

    root = os.geteuid() == 0
    who = "running as root" if root else f"running as uid {os.geteuid()}, not root"
    d.checks.append(Check("root", None, root, who))

    privcmd_ok, why = False, []
    for path in PRIVCMD_NODES:
        ok, detail = _open_device(path)
        d.checks.append(Check("privcmd", path, ok, detail))
        privcmd_ok = privcmd_ok or ok
        why.append(f"{path}: {detail}")
    d.privcmd = (privcmd_ok, why)
    hc_ok, hc_detail = _open_device(HYPERCALL_NODE)
    if not hc_ok:
        hc_detail += " (the locked-memory fallback is used for hypercall buffers)"
    d.checks.append(Check("hypercall buffers", HYPERCALL_NODE, hc_ok, hc_detail))

    xs_ok, xs_where, xs_why = False, "", []
    # One cheap request (GET_DOMAIN_PATH 0) at each place the client would look.
    for ep in probe_endpoints(timeout=timeout):
        d.checks.append(Check("xenstore", ep.path, ep.ok, ep.detail))
        if ep.ok and not xs_ok:
            xs_ok, xs_where = True, ep.path
        xs_why.append(f"{ep.path}: {ep.detail}")
    d.xenstore = (xs_ok, xs_where, xs_why)

    d.xend = _probe_endpoint(XEND_SOCKET)
    d.checks.append(Check("xend", XEND_SOCKET, *d.xend))

    # Can we actually talk to the hypervisor (or the simulator) the URI names?
    if d.sim or (d.native[0] and privcmd_ok):
        target = uri if uri is not None else "xen:///system"
        try:
            from xenvcpu import host

            h = host.connect(target)
            d.connected = (True, f"{target}: Xen {h.xen_version} via {h.backend}")
        except Exception as e:
            d.connected = (False, f"{target}: {e}")
        d.checks.append(Check("connect", target, *d.connected))
        if d.connected[0]:
            d.checks += guest_checks(h, timeout)
    return d


def guest_checks(h: Host, timeout: float = PROBE_TIMEOUT) -> list[Check]:
    """Per domain: its guest type and the rule that decided it; per HVM domain: its QMP
    socket and whether its QEMU answers (the path ``set_vcpus`` takes for it)."""
    checks = []
    run_dir = h.toolstack.run_dir
    for dom in h.domains():
        where = f"{dom.name} ({dom.id})"
        try:
            kind, rule = dom.guest_type, dom.guest_type_rule
        except XenvcpuError as e:
            checks.append(Check("guest type", where, False, f"cannot tell: {e}"))
            continue
        checks.append(Check("guest type", where, True, f"{kind.name}: {rule}"))
        if kind is not GuestType.HVM:
            continue
        if run_dir is None:
            why = "no run directory: online vCPUs cannot be changed (connect with run_dir=)"
            checks.append(Check("qmp", where, False, why))
            continue
        path = qmp.libxl_socket_path(dom.id, run_dir)
        try:
            with qmp.QmpClient(path, timeout=timeout) as client:
                version = ".".join(map(str, client.version))
            checks.append(Check("qmp", path, True, f"QEMU {version} answers"))
        except XenvcpuError as e:
            checks.append(Check("qmp", path, False, str(e)))
    return checks


def _op(name: str, candidates: list[tuple[str, bool, str]]) -> Json:
    served = next(((b, why) for b, ok, why in candidates if ok), None)
    return {
        "operation": name,
        "backend": served[0] if served else None,
        "why": served[1] if served else "no backend can serve it",
        "not_used": [
            {"backend": b, "why": why} for b, ok, why in candidates if not served or b != served[0]
        ],
    }


def operations(d: Diagnosis) -> list[Json]:
    """Per operation: the first backend that can serve it, and why the others cannot."""
    hv_ok, hv_why = d.connected
    if d.sim:
        line = ("sim", hv_ok, hv_why if hv_ok else f"cannot connect: {hv_why}")
        return [
            _op(name, [line]) for name in ("host info", "vCPU info", "pinning", "online vCPU count")
        ]
    native_ok, native_detail = d.native
    privcmd_ok, privcmd_why = d.privcmd
    if not native_ok:
        privcmd_reason = f"native module unavailable ({native_detail})"
    elif not privcmd_ok:
        privcmd_reason = "no usable privcmd device: " + "; ".join(privcmd_why)
    elif not hv_ok:
        privcmd_reason = f"privcmd opens but the hypervisor does not answer: {hv_why}"
    else:
        privcmd_reason = f"privcmd hypercalls ({hv_why})"
    privcmd = ("privcmd", hv_ok, privcmd_reason)
    xend_ok, xend_detail = d.xend
    xend = (
        "xend",
        xend_ok,
        f"legacy xend at {XEND_SOCKET}: {xend_detail}"
        + (f" (use --connect xend+unix://{XEND_SOCKET})" if xend_ok else ""),
    )
    xs_ok, xs_where, xs_why = d.xenstore
    xs = (
        "xenstore",
        xs_ok,
        f"xenstore at {xs_where}" if xs_ok else "no xenstore endpoint: " + "; ".join(xs_why),
    )
    return [
        *(_op(name, [privcmd, xend]) for name in ("host info", "vCPU info", "pinning")),
        _op("online vCPU count", [xs, xend]),
        _op("legacy hosts (Xen <= 4.4)", [xend]),
    ]


def verdict(d: Diagnosis) -> tuple[bool, str]:
    """Whether any backend can serve, and the sentence that says so."""
    if any(o["backend"] is not None for o in d.operations):
        return True, "at least one backend can serve"
    if d.sim:
        return False, f"the simulated host {d.uri} cannot be used: {d.connected[1]}"
    return False, (
        "no backend can serve: this machine is not a usable Xen control domain; "
        "only sim:/// URIs work here (try: xenvcpu --connect sim:///default list)"
    ) + ("" if d.native[0] else ", once the native module loads")


def render_json(d: Diagnosis) -> None:
    emit_json(
        document(
            "doctor",
            uri=d.uri,
            checks=[c.json() for c in d.checks],
            operations=d.operations,
            usable=d.usable,
            verdict=d.verdict,
        )
    )


def render_text(d: Diagnosis) -> None:
    print(f"uri: {d.uri or '(none: the default xen:///system on a Xen host)'}")
    print("checks:")
    for c in d.checks:
        where = f" {c.path}" if c.path else ""
        print(f"  [{'ok' if c.ok else '--'}] {c.name}{where}: {c.detail}")
    print("operations:")
    for o in d.operations:
        print(f"  {o['operation']:<26} -> {o['backend'] or 'NONE'}: {o['why']}")
        for alt in o["not_used"]:
            print(f"  {'':<26}    not {alt['backend']}: {alt['why']}")
    print(f"verdict: {d.verdict}")


def cmd_doctor(args: argparse.Namespace) -> int:
    d = probe(uri_of(args), timeout_arg(args.timeout, zero=False))
    d.operations = operations(d)
    d.usable, d.verdict = verdict(d)
    (render_json if args.json else render_text)(d)
    if not d.usable:
        print(f"xenvcpu: error: {d.verdict}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
