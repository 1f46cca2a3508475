#!/usr/bin/python
# Copyright: the xenvcpu authors
# MIT License (see the collection's README.md)
"""Ansible module: a placement spec as desired state (xenvcpu's plan / apply)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: placement
short_description: Pin the vCPUs of a Xen host's domains and set their online vCPUs from a spec
version_added: "0.1.0"
description:
  - Makes the domains of a Xen host have the vCPU placement a spec asks for - hard and
    soft affinity of every vCPU and the set of online vCPUs - through xenvcpu's placement
    API (a plan, then an all-or-nothing apply).
  - The spec has the shape of xenvcpu's placement files - optional C(defaults) and a list
    of C(domain) entries, each with C(match) (a name, shell glob or UUID) and any of
    C(hard), C(soft), C(online), C(layout) and C(vcpu) (per-vCPU C(hard)/C(soft)).
    Cpulists may use topology terms such as C(node:0), C(socket:1), C(pool:NAME).
  - Idempotent - when the host already is as the spec says nothing is changed and the
    task reports C(changed=false).
  - An apply that fails part way puts back everything it had changed and the task fails
    with what failed and what was rolled back.
author:
  - xenvcpu maintainers (@xenvcpu)
extends_documentation_fragment:
  - xenvcpu.xen.xenvcpu
options:
  spec:
    description:
      - The placement spec as a mapping with C(defaults) and C(domain) keys.
      - In C(online), a number is a count (vCPUs 0..n-1) and a list such as V("0,2-3") is a
        set of vCPUs. A string of digits alone (V("2")) is taken as a count too, unlike in a
        placement file, since templating on ansible-core before 2.19 turns numbers into
        strings; vCPU 2 alone is V("2-2").
      - Mutually exclusive with O(src).
    type: dict
  src:
    description:
      - A placement file (TOML, or JSON with the same shape) on the target.
      - Mutually exclusive with O(spec).
    type: path
  state:
    description:
      - V(present) makes the host as the spec says. It is the only state - a placement
        cannot be absent, a vCPU always has an affinity.
    type: str
    choices: [present]
    default: present
  timeout:
    description:
      - Seconds to wait, together, for the guests to follow changes of their online vCPUs.
    type: float
    default: 30
  strict:
    description:
      - If true, an entry naming a domain exactly (by name or UUID) that matches none, or an
        online set that cannot be changed, fails the task before anything changes.
      - If false, such domains are left alone and named in warnings.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    description: Plans only - reports what would change and changes nothing.
  diff_mode:
    support: full
    description: One diff per domain that changes, its vCPUs before and after.
notes:
  - Everything is checked before the first change - cpulists against the host's topology,
    per-vCPU overrides and online sets against each domain, hard affinities against each
    domain's cpupool; a bad cpulist fails the task with the file, the entry, the key and
    the token named.
seealso:
  - module: xenvcpu.xen.vcpus
  - module: xenvcpu.xen.vcpu_info
"""

EXAMPLES = r"""
- name: Pin every guest to NUMA node 0, two vCPUs online
  xenvcpu.xen.placement:
    spec:
      domain:
        - match: "*"
          hard: node:0
          online: 2

- name: One vCPU per physical CPU of socket 1 for the database, vCPU 0 apart
  xenvcpu.xen.placement:
    spec:
      defaults:
        soft: node:0
      domain:
        - match: db
          hard: socket:1
          layout: spread
          vcpu:
            "0":
              hard: "0"

- name: A placement file kept on the host, on a simulated host
  xenvcpu.xen.placement:
    uri: sim:///etc/xen/lab-host.toml
    src: /etc/xenvcpu/placement.toml
  check_mode: true
  diff: true
"""

RETURN = r"""
changes:
  description:
    - Every difference between the host (before) and the spec, one per vCPU and key,
      and one for each online set that changes. In check mode, what would change.
  returned: always
  type: list
  elements: dict
  contains:
    domain:
      description: The domain's name.
      type: str
      sample: web
    id:
      description: The domain id.
      type: int
      sample: 1
    vcpu:
      description: The vCPU, or null for the domain's online set.
      type: int
      sample: 0
    key:
      description: hard, soft or online.
      type: str
      sample: hard
    current:
      description: What the host had (a cpulist, or none).
      type: str
      sample: "0-63"
    wanted:
      description: What the spec wants.
      type: str
      sample: "0-31"
domains:
  description: The domains the spec matched (name, id, uuid), changed or not.
  returned: always
  type: list
  elements: dict
  sample: [{"name": "web", "id": 1, "uuid": "3f1c0d2e-...", "changed": true}]
plan:
  description: The plan as xenvcpu's C(Plan.to_json()) gives it (schema 1).
  returned: always
  type: dict
applied:
  description:
    - What the apply did - C(pinned) (vCPU pins made), C(online_changed) (domains),
      C(vanished) (domains gone since the plan), C(seconds).
    - Null in check mode and when nothing changed.
  returned: always
  type: dict
  sample: {"pinned": 6, "online_changed": ["web (id 1)"], "vanished": [], "seconds": 0.01}
failed_items:
  description: On a failed apply, each failure with its domain, vCPU, step and message.
  returned: failure during apply
  type: list
  elements: dict
rolled_back:
  description: On a failed apply, what was put back to the state read before.
  returned: failure during apply
  type: list
  elements: str
rollback_failed:
  description: On a failed apply, what could not be put back (empty when the host is as it was).
  returned: failure during apply
  type: list
  elements: str
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
    from xenvcpu.errors import PlanFailed, XenvcpuError
    from xenvcpu.placement import load_spec, make_plan


def domain_diff(d: Any) -> dict[str, str]:
    """One domain's changes as an Ansible diff: the lines it has before and after.

    vCPUs with the same change share a line, so a guest moved as a whole reads as one line.
    """
    groups: dict[tuple[str, str, str], list[int]] = {}
    order: list[tuple[str, str, str]] = []
    online: tuple[str, str] | None = None
    for c in d.changes():
        if c.vcpu is None:
            online = (c.current, c.wanted)
            continue
        k = (c.key, c.current, c.wanted)
        if k not in groups:
            groups[k] = []
            order.append(k)
        groups[k].append(c.vcpu)
    before: list[str] = []
    after: list[str] = []
    for key, current, wanted in order:
        vcpus = groups[(key, current, wanted)]
        what = f"vcpu {vcpus[0]}" if len(vcpus) == 1 else f"vcpus {group_vcpus(vcpus)}"
        before.append(f"{what} {key}: {current}")
        after.append(f"{what} {key}: {wanted}")
    if online is not None:
        before.append(f"online: {online[0]}")
        after.append(f"online: {online[1]}")
    return {
        "before_header": f"{d.label} (now)",
        "after_header": f"{d.label} (wanted)",
        "before": "\n".join(before) + "\n",
        "after": "\n".join(after) + "\n",
    }


def templated_counts(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec with each C(online) that is a string of digits made a count: on
    ansible-core before 2.19 a templated number (C("{{ n }}")) arrives as a string."""

    def fix(entry: Any) -> Any:
        if isinstance(entry, dict) and isinstance(entry.get("online"), str):
            if entry["online"].strip().isdigit():
                return {**entry, "online": int(entry["online"])}
        return entry

    out = dict(spec)
    if "defaults" in out:
        out["defaults"] = fix(out["defaults"])
    if isinstance(out.get("domain"), list):
        out["domain"] = [fix(e) for e in out["domain"]]
    return out


def run(module: AnsibleModule) -> dict[str, Any]:
    p = module.params
    host = connect(module)
    try:
        spec = load_spec(p["src"] if p["src"] is not None else templated_counts(p["spec"]))
        plan = make_plan(host, spec, strict=p["strict"])
        for w in plan.warnings:
            module.warn(w)
        changed = bool(plan)
        result: dict[str, Any] = {
            "changed": changed,
            "changes": [
                {
                    "domain": c.domain,
                    "id": c.domid,
                    "vcpu": c.vcpu,
                    "key": c.key,
                    "current": c.current,
                    "wanted": c.wanted,
                }
                for c in plan.changes
            ],
            "domains": [
                {"name": d.name, "id": d.id, "uuid": d.uuid, "changed": bool(d)}
                for d in plan.domains
            ],
            "plan": plan.to_json(),
            "applied": None,
        }
        if module._diff:
            result["diff"] = [domain_diff(d) for d in plan.domains if d]
        if changed and not module.check_mode:
            try:
                result["applied"] = plan.apply(timeout=p["timeout"]).to_json()
            except PlanFailed as e:
                fail_with(module, e, changes=result["changes"])
    except XenvcpuError as e:
        fail_with(module, e)
    finally:
        host.close()
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "uri": dict(URI_OPTION),
            "spec": {"type": "dict"},
            "src": {"type": "path"},
            "state": {"type": "str", "choices": ["present"], "default": "present"},
            "timeout": {"type": "float", "default": 30.0},
            "strict": {"type": "bool", "default": True},
        },
        mutually_exclusive=[("spec", "src")],
        required_one_of=[("spec", "src")],
        supports_check_mode=True,
    )
    require_xenvcpu(module)
    module.exit_json(**run(module))


if __name__ == "__main__":
    main()
