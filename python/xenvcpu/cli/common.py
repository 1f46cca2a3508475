"""What every command shares: connecting, errors, JSON documents, xl-style formatting."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from xenvcpu import CpuMap
from xenvcpu.errors import AffinityNarrowed
from xenvcpu.host import Host
from xenvcpu.records import VcpuInfo

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "JSON_SCHEMA_VERSION",
    "URI_ENV",
    "CliError",
    "Json",
    "connect",
    "document",
    "emit_json",
    "fmt_map",
    "narrowed_to_stderr",
    "one_line",
    "state_letters",
    "uri_of",
]

JSON_SCHEMA_VERSION = 1

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

#: Environment variable naming the URI used when ``--connect`` is not given.
URI_ENV = "XENVCPU_URI"

Json = dict[str, Any]


class CliError(Exception):
    """A failure detected by the CLI itself (not by the API); exits with ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def emit_json(doc: Json) -> None:
    print(json.dumps(doc, indent=2))


def document(command: str, **fields: Any) -> Json:
    """A JSON document of a command, with the versioned schema (docs/cli.md)."""
    return {"schema": JSON_SCHEMA_VERSION, "command": command, **fields}


def uri_of(args: argparse.Namespace) -> str | None:
    """``--connect``, else ``$XENVCPU_URI``, else None (connect() picks xen:///system)."""
    uri: str | None = args.connect or os.environ.get(URI_ENV) or None
    return uri


def connect(args: argparse.Namespace) -> Host:
    # Looked up at call time, so that tests can wrap xenvcpu.host.connect.
    from xenvcpu import host

    return host.connect(uri_of(args))


def one_line(message: object) -> str:
    return " ".join(str(message).split()) or "unknown error"


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
def narrowed_to_stderr(collected: list[str]) -> Iterator[None]:
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
