"""``xenvcpu host`` (like ``xl info``) and ``xenvcpu cpumap`` (CPU set conversions).

Each command gathers one JSON document; the text form is rendered from that document, so
the two outputs cannot say different things.
"""

from __future__ import annotations

import argparse

from xenvcpu import CpuMap
from xenvcpu.cli.common import EXIT_OK, EXIT_USAGE, CliError, Json, connect, document, emit_json

__all__ = ["cmd_cpumap", "cmd_host"]


# ---------------------------------------------------------------------------------- host


def host_document(args: argparse.Namespace) -> Json:
    host = connect(args)
    info = host.info
    topo = host.topology
    online: CpuMap = host.cpus
    nodes = [(n, CpuMap.from_cpus(topo.node_cpus(n), host.max_cpus)) for n in topo.nodes]
    return document(
        "host",
        uri=host.uri,
        backend=host.backend,
        xen_version=info.xen_version,
        nr_cpus=info.nr_cpus,
        max_cpu_id=info.max_cpu_id,
        online_cpus=online.to_cpulist(),
        threads_per_core=info.threads_per_core,
        cores_per_socket=info.cores_per_socket,
        sockets=len(topo.sockets) or None,
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
            for p in host.cpupools
        ],
    )


def render_host(doc: Json) -> None:
    rows: list[tuple[str, object]] = [
        ("uri", doc["uri"]),
        ("backend", doc["backend"]),
        ("xen_version", doc["xen_version"]),
        ("nr_cpus", doc["nr_cpus"]),
        ("max_cpu_id", doc["max_cpu_id"]),
        ("online_cpus", doc["online_cpus"] or "none"),
        ("nr_nodes", doc["nr_nodes"]),
        ("sockets", doc["sockets"] if doc["sockets"] is not None else "unknown"),
        ("cores_per_socket", doc["cores_per_socket"]),
        ("threads_per_core", doc["threads_per_core"]),
        ("cpu_mhz", doc["cpu_mhz"]),
        ("total_memory", doc["total_memory_mib"]),
        ("free_memory", doc["free_memory_mib"]),
    ]
    for key, value in rows:
        print(f"{key:<23}: {value}")
    print(f"{'numa_nodes':<23}:")
    print(f"{'node':>6}  cpus")
    for n in doc["nodes"]:
        print(f"{n['node']:>6}  {n['cpus'] or 'none'}")
    print(f"{'cpupools':<23}:")
    pools = doc["cpupools"]
    width = max([len("name"), *(len(p["name"]) for p in pools)])
    print(f"  {'name':<{width}} {'id':>4} {'sched':<9} {'ndoms':>5}  cpus")
    for p in pools:
        print(
            f"  {p['name']:<{width}} {p['id']:>4} {p['scheduler']:<9} {p['n_domains']:>5}  "
            f"{p['cpus'] or 'none'}"
        )


def cmd_host(args: argparse.Namespace) -> int:
    doc = host_document(args)
    if args.json:
        emit_json(doc)
    else:
        render_host(doc)
    return EXIT_OK


# -------------------------------------------------------------------------------- cpumap


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
    doc = document(
        "cpumap",
        width=m.width,
        cpulist=m.to_cpulist(),
        cpus=m.to_list(),
        count=len(m),
        bytes_hex=m.to_bytes().hex(),
    )
    if args.json:
        emit_json(doc)
    else:
        print(f"width:   {doc['width']}")
        print(f"cpulist: {doc['cpulist'] or '(empty)'}")
        print(f"count:   {doc['count']}")
        print(f"bytes:   {doc['bytes_hex']}  (little-endian: CPU0-7 in the first byte)")
    return EXIT_OK
