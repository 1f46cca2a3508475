#!/usr/bin/python
# Copyright: the xenvcpu authors
# MIT License (see the collection's README.md)
"""Ansible module: the online vCPUs of one running Xen domain."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: vcpus
short_description: Set which vCPUs of a running Xen domain are online
version_added: "0.1.0"
description:
  - Brings a running domain's vCPUs online or offline through xenvcpu, as C(xl vcpu-set)
    does - the toolstack asks a PV or PVH guest through xenstore; an HVM guest's QEMU
    hot-adds or hot-removes the CPUs.
  - Idempotent - when exactly the wanted vCPUs are online the task changes nothing and
    reports C(changed=false).
author:
  - xenvcpu maintainers (@xenvcpu)
extends_documentation_fragment:
  - xenvcpu.xen.xenvcpu
options:
  domain:
    description:
      - The domain, by name or id.
    type: str
    required: true
  online:
    description:
      - A number is a count - vCPUs 0 to n-1 online, the others offline. A string of digits
        alone (V("2")) is a count too, since templating on ansible-core before 2.19 turns
        numbers into strings.
      - A list such as V("0,2-3"), or a list of numbers such as V([0, 2, 3]), is the set of
        vCPUs to have online; the others go offline. vCPU 2 alone is V("2-2") or V([2]).
    type: raw
    required: true
  wait:
    description:
      - Wait until Xen shows exactly that set online (the guest has followed); fail if it
        has not within O(timeout).
      - Without waiting the task returns once the request is made, and a later run may
        report a change again while the guest has not followed yet.
    type: bool
    default: true
  timeout:
    description:
      - Seconds the change may take as a whole, the wait included.
    type: float
    default: 30
attributes:
  check_mode:
    support: full
    description: Checks the request against the domain and reports whether it would change.
  diff_mode:
    support: full
    description: The online vCPUs before and after.
seealso:
  - module: xenvcpu.xen.placement
  - module: xenvcpu.xen.vcpu_info
"""

EXAMPLES = r"""
- name: Two vCPUs online (0 and 1) for web
  xenvcpu.xen.vcpus:
    domain: web
    online: 2

- name: vCPUs 0, 2 and 3 online for domain 7, without waiting for the guest (or [0, 2, 3])
  xenvcpu.xen.vcpus:
    domain: "7"
    online: "0,2-3"
    wait: false
"""

RETURN = r"""
domain:
  description: The domain's name.
  returned: success
  type: str
  sample: web
id:
  description: The domain id.
  returned: success
  type: int
  sample: 1
guest_type:
  description: pv, pvh or hvm.
  returned: success
  type: str
  sample: pvh
max_vcpus:
  description: How many vCPUs the domain has.
  returned: success
  type: int
  sample: 4
before:
  description: The vCPUs online before, as a list such as V(0-3).
  returned: success
  type: str
  sample: "0-3"
online:
  description: The vCPUs online now (in check mode, those that would be).
  returned: success
  type: str
  sample: "0-1"
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.xenvcpu.xen.plugins.module_utils.xenvcpu_common import (
    HAS_XENVCPU,
    URI_OPTION,
    connect,
    fail_with,
    group_vcpus,
    require_xenvcpu,
)

if HAS_XENVCPU:
    from xenvcpu import CpuMap
    from xenvcpu.errors import VcpuCountError, XenvcpuError


def wanted_set(online: Any, name: str, max_vcpus: int) -> tuple[int | None, frozenset[int]]:
    """(the count, or None for a set) and the set of vCPUs the option asks for.

    Raises VcpuCountError (or CpuListError) when the domain cannot have it.
    """
    if isinstance(online, bool):
        raise VcpuCountError(f"online = {online!r}: a count or a list of vCPUs such as '0,2-3'")
    if isinstance(online, str) and online.strip().isdigit():
        online = int(online)  # a templated number (ansible-core < 2.19 makes it a string)
    if isinstance(online, list):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in online):
            raise VcpuCountError(f"online = {online!r}: a list of vCPU numbers")
        online = ",".join(str(v) for v in online)
    if isinstance(online, (int, float)):
        if online != int(online) or not 1 <= online <= max_vcpus:
            raise VcpuCountError(
                f"{name}: online = {online!r}: the count must be 1 to {max_vcpus}",
                domain=name,
            )
        return int(online), frozenset(range(int(online)))
    if not isinstance(online, str):
        raise VcpuCountError(f"online = {online!r}: a count or a list of vCPUs such as '0,2-3'")
    vcpus = frozenset(CpuMap.parse(online, max(max_vcpus, 1)))
    if not vcpus:
        raise VcpuCountError(f"{name}: online = {online!r}: at least one vCPU must stay online")
    return None, vcpus


def run(module: AnsibleModule) -> dict[str, Any]:
    p = module.params
    host = connect(module)
    try:
        ref = p["domain"]
        dom = host.domain(int(ref) if ref.isdigit() else ref)
        count, want = wanted_set(p["online"], dom.name, dom.max_vcpus)
        now = frozenset(v.number for v in dom.vcpus() if v.online)
        changed = now != want
        if changed:
            dom.check_online_path(wait=p["wait"])  # before anything changes, in check mode too
        if changed and not module.check_mode:
            if count is not None:
                dom.set_vcpus(count, wait=p["wait"], timeout=p["timeout"])
            else:
                dom.set_online(sorted(want), wait=p["wait"], timeout=p["timeout"])
        result: dict[str, Any] = {
            "changed": changed,
            "domain": dom.name,
            "id": dom.id,
            "guest_type": dom.guest_type.value,
            "max_vcpus": dom.max_vcpus,
            "before": group_vcpus(sorted(now)),
            "online": group_vcpus(sorted(want)),
        }
    except XenvcpuError as e:
        fail_with(module, e)
    finally:
        host.close()
    if module._diff and changed:
        result["diff"] = {
            "before_header": f"{dom.label} online vCPUs",
            "after_header": f"{dom.label} online vCPUs",
            "before": f"online: {result['before'] or 'none'}\n",
            "after": f"online: {result['online']}\n",
        }
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "uri": dict(URI_OPTION),
            "domain": {"type": "str", "required": True},
            "online": {"type": "raw", "required": True},
            "wait": {"type": "bool", "default": True},
            "timeout": {"type": "float", "default": 30.0},
        },
        supports_check_mode=True,
    )
    require_xenvcpu(module)
    module.exit_json(**run(module))


if __name__ == "__main__":
    main()
