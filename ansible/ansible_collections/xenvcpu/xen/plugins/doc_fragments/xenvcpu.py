# Copyright: the xenvcpu authors
# MIT License (see the LICENSE note in the collection's README.md)
"""What every xenvcpu.xen module's documentation shares: the requirement and the uri
option (``extends_documentation_fragment: [xenvcpu.xen.xenvcpu]``)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
requirements:
  - xenvcpu installed for the Python that runs the module on the target
    (see the collection's README).
options:
  uri:
    description:
      - The hypervisor, as C(xenvcpu.connect) takes it.
      - V(xen:///system) is the local Xen host (the target must be a dom0 and the module
        must run as root); a V(sim:) URI is a simulated host, for trying playbooks without Xen.
    type: str
    default: xen:///system
"""
