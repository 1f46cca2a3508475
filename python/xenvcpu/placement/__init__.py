"""Placement as desired state: a spec (data) -> a :class:`Plan` (what would change) -> apply
(all or nothing) -> watch (keep it so).

>>> import xenvcpu
>>> host = xenvcpu.connect("sim:///default")
>>> plan = host.plan({"domain": [{"match": "web", "hard": "node:0", "online": 2}]})
>>> bool(plan), len(plan.changes)
(True, 5)
>>> result = plan.apply()
>>> bool(host.plan({"domain": [{"match": "web", "hard": "node:0", "online": 2}]}))
False

* :mod:`.spec` -- the spec's shape (TOML, JSON or a dict) and :func:`load_spec`;
* :mod:`.plan` -- :func:`make_plan`: the host read once, compared with the spec;
* :mod:`.apply` -- :func:`apply_plan`: pins batched across domains, then online sets,
  rolled back on any failure.

A plan is a pure function of the spec and what the host has; apply is the only writer.
"""

from __future__ import annotations

from xenvcpu.placement.apply import ApplyResult, apply_plan
from xenvcpu.placement.plan import Change, DomainPlan, PlacementHost, Plan, make_plan
from xenvcpu.placement.spec import LAYOUTS, Entry, Spec, SpecSource, load_spec

__all__ = [
    "LAYOUTS",
    "ApplyResult",
    "Change",
    "DomainPlan",
    "Entry",
    "PlacementHost",
    "Plan",
    "Spec",
    "SpecSource",
    "apply_plan",
    "load_spec",
    "make_plan",
    "plan",
]


def plan(host: PlacementHost, spec: SpecSource) -> Plan:
    """The plan of ``spec`` (a path to a TOML/JSON file, a dict, or a :class:`Spec`) on
    ``host``: what would change. Reads only."""
    return make_plan(host, load_spec(spec))
