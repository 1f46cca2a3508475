"""``xenvcpu list`` / ``pin`` / ``set``: the vCPU commands (``xl vcpu-list`` / ``vcpu-pin`` /
``vcpu-set``).

Each command first does its work and gathers the result, then renders it either as text
(``xl``'s layout) or as one JSON document (docs/cli.md); the renderers only format.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

from xenvcpu import CpuMap, Domain, Pinning
from xenvcpu._limits import timeout_arg
from xenvcpu.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    Json,
    connect,
    document,
    emit_json,
    fmt_map,
    narrowed_to_stderr,
    state_letters,
)
from xenvcpu.errors import XenvcpuError
from xenvcpu.records import VcpuInfo

__all__ = ["LIST_HEADER", "cmd_list", "cmd_pin", "cmd_set"]

# ---------------------------------------------------------------------------------- list

LIST_HEADER = (
    f"{'Name':<32} {'ID':>5} {'VCPU':>5} {'CPU':>5} {'State':>5} {'Time(s)':>9} "
    "Affinity (Hard / Soft)"
)

Row = tuple[Domain, list[VcpuInfo], "XenvcpuError | None"]


def _list_row(dom: Domain, v: VcpuInfo, online: CpuMap, middle: str = "") -> str:
    # The very widths of xl's print_vcpuinfo (xl_vcpu.c), its one-column shift included.
    cpu = "-" if v.cpu is None or not v.online else str(v.cpu)
    return (
        f"{dom.name:<32} {dom.id:>5}{middle} {v.number:>5}{cpu:>5} {state_letters(v):>5} "
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


def _guest_type(dom: Domain) -> str | None:
    try:
        return dom.guest_type.value
    except XenvcpuError:  # the toolstack could not be asked: the list still shows the rest
        return None


def list_json(uri: str, rows: list[Row]) -> Json:
    return document(
        "list",
        uri=uri,
        domains=[
            {
                "name": dom.name,
                "id": dom.id,
                "uuid": dom.uuid,
                "max_vcpus": dom.max_vcpus,
                "cpupool": dom.cpupool,
                "guest_type": _guest_type(dom),
                "vcpus": [_vcpu_json(v) for v in vcpus],
                "error": None if err is None else str(err),
            }
            for dom, vcpus, err in rows
        ],
    )


def list_text(rows: list[Row], online: CpuMap, long: bool = False) -> None:
    """xl vcpu-list's layout; ``long`` adds each domain's guest type and cpupool after ID."""
    header = LIST_HEADER
    if long:
        header = header.replace(" VCPU ", f" {'Type':>4} {'Pool':>4}  VCPU ", 1)
    print(header)
    for dom, vcpus, _ in rows:
        middle = f" {_guest_type(dom) or '?':>4} {dom.cpupool:>4}" if long else ""
        for v in vcpus:
            print(_list_row(dom, v, online, middle))


def cmd_list(args: argparse.Namespace) -> int:
    host = connect(args)
    online: CpuMap = host.cpus
    rows: list[Row] = []
    if args.domains:
        doms = [host.domain(ref) for ref in args.domains]  # unknown -> DomainNotFound
        for dom in doms:
            try:
                rows.append((dom, dom.vcpus(), None))
            except XenvcpuError as e:
                rows.append((dom, [], e))
    else:
        rows = [(d.domain, d.vcpus, d.error) for d in host.snapshot()]
    if args.json:
        emit_json(list_json(host.uri, rows))
    else:
        list_text(rows, online, args.long)
    failed = [(dom, err) for dom, _, err in rows if err is not None]
    if failed:
        detail = "; ".join(f"{dom.label}: {err}" for dom, err in failed)
        raise CliError(f"could not read the vCPUs of {len(failed)} domain(s): {detail}")
    return EXIT_OK


# ----------------------------------------------------------------------------------- pin


def _map_arg(text: str | None) -> str | None:
    """``-`` (or absent) leaves that affinity unchanged, as in ``xl vcpu-pin``."""
    return None if text is None or text == "-" else text


def _vcpu_arg(text: str) -> int | None:
    if text == "all":
        return None
    if not re.fullmatch(r"[+-]?\d+", text.strip()):
        raise CliError(f"invalid vCPU {text!r}: give a vCPU number or 'all'", EXIT_USAGE)
    return int(text)


def _cpulist(m: CpuMap | None) -> str | None:
    return None if m is None else m.to_cpulist()


def pin_json(uri: str, dom: Domain, force: bool, pins: list[Pinning], warned: list[str]) -> Json:
    return document(
        "pin",
        uri=uri,
        domain={"name": dom.name, "id": dom.id},
        force=force,
        pins=[
            {
                "vcpu": p.vcpu,
                "requested_hard": _cpulist(p.requested_hard),
                "requested_soft": _cpulist(p.requested_soft),
                "hard": _cpulist(p.hard),
                "soft": _cpulist(p.soft),
                "narrowed": p.narrowed,
            }
            for p in pins
        ],
        warnings=warned,
    )


def pin_text(dom: Domain, pins: list[Pinning], online: CpuMap) -> None:
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


def cmd_pin(args: argparse.Namespace) -> int:
    vcpu = _vcpu_arg(args.vcpu)
    hard_spec, soft_spec = _map_arg(args.hard), _map_arg(args.soft)
    if hard_spec is None and soft_spec is None:
        raise CliError("nothing to change: HARD and SOFT are both '-'", EXIT_USAGE)
    host = connect(args)
    dom = host.domain(args.domain)
    # Parse here so that a bad cpulist names which argument it came from.
    hard = None if hard_spec is None else host.cpumap(hard_spec, what="hard affinity")
    soft = None if soft_spec is None else host.cpumap(soft_spec, what="soft affinity")
    warned: list[str] = []
    with narrowed_to_stderr(warned):
        if vcpu is None:
            pins = dom.pin_all(hard=hard, soft=soft, force=args.force)
        else:
            pins = [dom.pin_vcpu(vcpu, hard=hard, soft=soft, force=args.force)]
    if args.json:
        emit_json(pin_json(host.uri, dom, bool(args.force), pins, warned))
    else:
        pin_text(dom, pins, host.cpus)
    return EXIT_OK


# ----------------------------------------------------------------------------------- set


@dataclass(frozen=True)
class SetResult:
    """What ``set`` asked for and what was online afterwards."""

    dom: Domain
    wanted: CpuMap
    now: CpuMap
    waited: bool


def set_json(uri: str, r: SetResult) -> Json:
    return document(
        "set",
        uri=uri,
        domain={"name": r.dom.name, "id": r.dom.id},
        max_vcpus=r.dom.max_vcpus,
        requested=r.wanted.to_cpulist(),
        requested_count=len(r.wanted),
        waited=r.waited,
        online=r.now.to_cpulist(),
        online_count=len(r.now),
    )


def set_text(r: SetResult) -> None:
    who = f"{r.dom.name} ({r.dom.id})"
    print(
        f"{who}: asked vCPU {r.wanted.to_cpulist()} online ({len(r.wanted)} of {r.dom.max_vcpus})"
    )
    if r.waited:
        print(f"{who}: online now: vCPU {r.now.to_cpulist()} (the guest followed)")
    else:
        print(
            f"{who}: online now: vCPU {r.now.to_cpulist() or 'none'} "
            "(the guest acts on the request by itself; use --wait to wait for it)"
        )


def cmd_set(args: argparse.Namespace) -> int:
    if args.timeout is not None:
        try:
            timeout_arg(args.timeout, "--timeout")
        except ValueError as e:
            raise CliError(str(e), EXIT_USAGE) from None
    spec: str = args.vcpus.strip()
    host = connect(args)
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
    result = SetResult(dom, wanted, now, bool(args.wait))
    if args.json:
        emit_json(set_json(host.uri, result))
    else:
        set_text(result)
    return EXIT_OK
