#!/usr/bin/python
# Copyright: the xenvcpu authors
# MIT License (see the collection's README.md)
"""Ansible module: the host's topology, cpupools and every domain's vCPUs."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: vcpu_info
short_description: Read a Xen host's CPU topology, cpupools and every domain's vCPUs
version_added: "0.1.0"
description:
  - Reads, through xenvcpu, what C(xenvcpu host --json) and C(xenvcpu list --json) show
    on the target, and returns both documents.
  - Reads only; the task never reports a change.
author:
  - xenvcpu maintainers (@xenvcpu)
extends_documentation_fragment:
  - xenvcpu.xen.xenvcpu
options:
  domains:
    description:
      - Only these domains (names or ids); all domains when empty.
      - A name that no domain has fails the task.
    type: list
    elements: str
    default: []
attributes:
  check_mode:
    support: full
    description: Reads only, so it runs the same in check mode.
  diff_mode:
    support: none
    description: Reads only; there is nothing to show a difference of.
notes:
  - The documents have the schema of xenvcpu's CLI JSON output (docs/cli.md of xenvcpu).
"""

EXAMPLES = r"""
- name: Read the topology and every vCPU of the local Xen host
  xenvcpu.xen.vcpu_info:
  register: xen

- name: Show the NUMA nodes and the domains
  ansible.builtin.debug:
    msg: "{{ xen.host.nodes }} / {{ xen.domains | map(attribute='name') | list }}"

- name: Read two domains of a simulated host
  xenvcpu.xen.vcpu_info:
    uri: sim:///default
    domains: [web, db]
"""

RETURN = r"""
host:
  description: The host document of C(xenvcpu host --json).
  returned: success
  type: dict
  contains:
    uri:
      description: The URI that was read.
      type: str
      sample: xen:///system
    backend:
      description: How the host was reached (privcmd, sim, ...).
      type: str
      sample: privcmd
    xen_version:
      description: The Xen release.
      type: str
      sample: "4.17.3"
    nr_cpus:
      description: Physical CPUs online.
      type: int
      sample: 64
    online_cpus:
      description: The online physical CPUs, as a cpulist.
      type: str
      sample: "0-63"
    nodes:
      description: Each NUMA node and its CPUs (a cpulist).
      type: list
      elements: dict
      sample: [{"node": 0, "cpus": "0-31"}, {"node": 1, "cpus": "32-63"}]
    cpupools:
      description: Each cpupool with its id, name, scheduler, CPUs and number of domains.
      type: list
      elements: dict
      sample: [{"id": 0, "name": "Pool-0", "scheduler": "credit2", "cpus": "0-47",
                "n_domains": 3}]
domains:
  description: Every domain (or those asked for) with its vCPUs, as in C(xenvcpu list --json).
  returned: success
  type: list
  elements: dict
  contains:
    name:
      description: The domain's name.
      type: str
      sample: web
    id:
      description: The domain id.
      type: int
      sample: 1
    uuid:
      description: The domain's UUID.
      type: str
    max_vcpus:
      description: How many vCPUs the domain has (online or not).
      type: int
      sample: 4
    cpupool:
      description: The id of the domain's cpupool.
      type: int
      sample: 0
    guest_type:
      description: pv, pvh or hvm; null if the toolstack could not be asked.
      type: str
      sample: pv
    vcpus:
      description:
        - One entry per vCPU with C(vcpu), C(state), C(online), C(cpu), C(cpu_time_ns),
          C(hard_affinity) and C(soft_affinity) (cpulists).
      type: list
      elements: dict
      sample: [{"vcpu": 0, "state": "running", "online": true, "cpu": 3,
                "hard_affinity": "0-3", "soft_affinity": "0-7"}]
    error:
      description: Why the vCPUs of this domain could not be read, or null.
      type: str
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.xenvcpu.xen.plugins.module_utils.xenvcpu_common import (
    HAS_XENVCPU,
    URI_OPTION,
    connect,
    fail_with,
    require_xenvcpu,
)

if HAS_XENVCPU:
    from xenvcpu.cli.info import host_json
    from xenvcpu.cli.vcpus import list_json
    from xenvcpu.errors import XenvcpuError


def read(module: AnsibleModule) -> dict[str, Any]:
    host = connect(module)
    try:
        host_doc = host_json(host)
        wanted = module.params["domains"]
        rows: list[Any] = []  # (Domain, its vCPUs, the error reading them)
        if wanted:
            for ref in wanted:
                dom = host.domain(int(ref) if ref.isdigit() else ref)
                try:
                    rows.append((dom, dom.vcpus(), None))
                except XenvcpuError as e:
                    rows.append((dom, [], e))
        else:
            rows = [(d.domain, d.vcpus, d.error) for d in host.snapshot()]
        list_doc = list_json(host.uri, rows)
    except XenvcpuError as e:
        fail_with(module, e)
    finally:
        host.close()
    for key in ("schema", "command"):
        host_doc.pop(key, None)
    return {"changed": False, "host": host_doc, "domains": list_doc["domains"]}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "uri": dict(URI_OPTION),
            "domains": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    require_xenvcpu(module)
    module.exit_json(**read(module))


if __name__ == "__main__":
    main()
