"""``xenvcpu plan``, ``apply`` and ``watch``: placement as desired state (docs/placement.md).

``plan`` exits 0 when nothing would change, 2 when changes are pending and 1 on error
(Terraform's ``-detailed-exitcode`` convention; ``apply --check`` does the same).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from types import FrameType
from typing import Any

from xenvcpu.cli.common import EXIT_FAILED, EXIT_OK, CliError, connect, document, emit_json
from xenvcpu.errors import PlacementError, PlanFailed
from xenvcpu.placement import Plan, load_spec
from xenvcpu.placement.watch import Event, Watcher

__all__ = ["EXIT_PENDING", "cmd_apply", "cmd_plan", "cmd_watch"]

#: ``plan`` and ``apply --check``: changes are pending.
EXIT_PENDING = 2


def _plan(args: argparse.Namespace) -> Plan:
    spec = load_spec(args.file)  # before connecting: a bad file is reported first
    return connect(args).plan(spec)


def _warn(plan: Plan) -> None:
    for w in plan.warnings:
        print(f"xenvcpu: warning: {w}", file=sys.stderr)


def _plan_doc(command: str, plan: Plan, **more: Any) -> dict[str, Any]:
    body = {k: v for k, v in plan.to_json().items() if k != "schema"}
    return document(command, pending=bool(plan), **body, **more)


def cmd_plan(args: argparse.Namespace) -> int:
    plan = _plan(args)
    if args.json:
        emit_json(_plan_doc("plan", plan))
    else:
        _warn(plan)
        print(
            plan.diff()
            if plan
            else f"{plan.spec.source}: no changes ({len(plan.domains)} domains matched)"
        )
    return EXIT_PENDING if plan else EXIT_OK


def _failure_lines(e: PlanFailed) -> list[str]:
    lines = [
        f"failed: {dom}{'' if v is None else f' vCPU {v}'} {what}: {msg}"
        for dom, v, what, msg in e.failed
    ]
    lines += [f"rolled back: {d}" for d in e.rolled_back]
    lines += [f"vanished: {d}" for d in e.vanished]
    lines += [f"NOT rolled back: {d}" for d in e.rollback_failed]
    return lines


def cmd_apply(args: argparse.Namespace) -> int:
    plan = _plan(args)
    if args.check:
        if args.json:
            emit_json(_plan_doc("apply", plan, applied=False, check=True))
        else:
            _warn(plan)
            if plan:
                print(
                    plan.diff()
                    if args.diff
                    else f"{len(plan.changes)} changes pending "
                    f"(domains: {len(plan.changed_domains())}); --diff shows them"
                )
            else:
                print(f"{plan.spec.source}: no changes")
        return EXIT_PENDING if plan else EXIT_OK
    if not plan:
        if args.json:
            emit_json(_plan_doc("apply", plan, applied=False, check=False))
        else:
            _warn(plan)
            print(f"{plan.spec.source}: no changes")
        return EXIT_OK
    try:
        result = plan.apply(timeout=args.timeout)
    except PlanFailed as e:
        if args.json:
            emit_json(
                _plan_doc(
                    "apply",
                    plan,
                    applied=False,
                    check=False,
                    error=str(e),
                    failed=[list(f) for f in e.failed],
                    rolled_back=list(e.rolled_back),
                    vanished=list(e.vanished),
                    rollback_failed=list(e.rollback_failed),
                )
            )
            return EXIT_FAILED
        for line in _failure_lines(e):
            print(f"xenvcpu: {line}", file=sys.stderr)
        raise CliError(str(e)) from None
    if args.json:
        emit_json(_plan_doc("apply", plan, applied=True, check=False, result=result.to_json()))
        return EXIT_OK
    _warn(plan)
    if args.diff:
        print(plan.diff())
    done = f"applied {plan.spec.source}: {result.pinned} vCPU pins"
    if result.online_changed:
        done += f", online vCPUs of {', '.join(result.online_changed)}"
    if result.vanished:
        done += f"; vanished meanwhile (left alone): {', '.join(result.vanished)}"
    print(f"{done} ({result.seconds * 1000:.1f} ms)")
    return EXIT_OK


def cmd_watch(args: argparse.Namespace) -> int:
    if not (args.interval > 0 and args.interval <= 86400):
        raise CliError(f"--interval {args.interval:g}: expected seconds in (0, 86400]", code=2)

    def emit(event: Event) -> None:
        if args.json:
            print(json.dumps(event), flush=True)
        else:
            print(f"{event['time']} {event['message']}", flush=True)

    try:
        watcher = Watcher(
            lambda: connect(args),
            args.file,
            emit=emit,
            interval=args.interval,
            timeout=args.timeout,
        )
    except PlacementError as e:
        raise CliError(f"cannot read the placement file: {e}") from None

    def on_stop(_sig: int, _frame: FrameType | None) -> None:
        watcher.request_stop()

    def on_reload(_sig: int, _frame: FrameType | None) -> None:
        watcher.request_reload()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_reload)
    return watcher.run()
