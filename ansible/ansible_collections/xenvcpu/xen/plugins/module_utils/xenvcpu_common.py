# Copyright: the xenvcpu authors
# MIT License (see the LICENSE note in the collection's README.md)
"""What the xenvcpu.xen modules share: importing xenvcpu on the target, connecting, and
turning xenvcpu's typed errors into fail_json results.

Runs on the target's Python (3.9 or newer) under ansible-core 2.14 and later, so it uses
nothing newer than both.
"""

from __future__ import annotations

import traceback
from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    import xenvcpu
    from xenvcpu.errors import PlacementError, PlanFailed, XenvcpuError
except ImportError:
    HAS_XENVCPU = False
    XENVCPU_IMPORT_ERROR: str | None = traceback.format_exc()
else:
    HAS_XENVCPU = True
    XENVCPU_IMPORT_ERROR = None

DEFAULT_URI = "xen:///system"

#: Said after ansible's own "failed to import" text: how to put xenvcpu on a target.
INSTALL_HINT = (
    "Install xenvcpu on the target, for the Python that runs the module: "
    "'python3 -m pip install xenvcpu-<version>-<platform>.whl' (a wheel built with "
    "'maturin build --release' from the xenvcpu checkout), or "
    "'python3 -m pip install /path/to/xenvcpu-checkout' where a Rust toolchain exists; "
    "see docs/ansible.md of xenvcpu."
)

#: The uri option, the same in every module.
URI_OPTION: dict[str, Any] = {"type": "str", "default": DEFAULT_URI}


def require_xenvcpu(module: AnsibleModule) -> None:
    """Fail the task with an install hint when xenvcpu cannot be imported on the target."""
    if not HAS_XENVCPU:
        module.fail_json(
            msg=missing_required_lib("xenvcpu") + " " + INSTALL_HINT,
            exception=XENVCPU_IMPORT_ERROR,
        )


def connect(module: AnsibleModule) -> Any:
    """The Host of the module's uri; fails the task with xenvcpu's message if it cannot."""
    try:
        return xenvcpu.connect(module.params["uri"])
    except XenvcpuError as e:
        fail_with(module, e)


def error_fields(e: BaseException) -> dict[str, Any]:
    """What a typed xenvcpu error knows, as task result fields."""
    out: dict[str, Any] = {"error": type(e).__name__}
    for name in ("errno", "domain", "vcpu"):
        value = getattr(e, name, None)
        if value is not None:
            out[name] = value
    if HAS_XENVCPU and isinstance(e, PlacementError):
        for name in ("source", "entry", "key", "token", "column", "reason"):
            value = getattr(e, name, None)
            if value is not None:
                out[name] = value
    if HAS_XENVCPU and isinstance(e, PlanFailed):
        out["failed_items"] = [
            {"domain": who, "vcpu": vcpu, "step": step, "message": message}
            for who, vcpu, step, message in e.failed
        ]
        out["rolled_back"] = list(e.rolled_back)
        out["rollback_failed"] = list(e.rollback_failed)
        out["vanished"] = list(e.vanished)
    return out


def fail_with(module: AnsibleModule, e: BaseException, **extra: Any) -> None:
    """fail_json with the error's own message and its fields."""
    fields = error_fields(e)
    fields.update(extra)
    module.fail_json(msg=str(e), **fields)


def group_vcpus(numbers: list[int]) -> str:
    """vCPU numbers as ranges: [0, 1, 2, 5] -> '0-2,5'."""
    out: list[str] = []
    nums = sorted(set(numbers))
    i = 0
    while i < len(nums):
        j = i
        while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:
            j += 1
        out.append(str(nums[i]) if i == j else f"{nums[i]}-{nums[j]}")
        i = j + 1
    return ",".join(out)
