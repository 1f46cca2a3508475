"""A notification callback for the tests: every task result as one JSON line.

ansible-core ships no JSON stdout callback any more, and the tests want both what a person
sees (the default callback's output, diffs included) and the task results as data. Enabled
with ANSIBLE_CALLBACKS_ENABLED=record_results; writes to the file named by
XENVCPU_ANSIBLE_RECORD. Written for ansible-core 2.14 (the lab's dom0) and 2.19.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "record_results"
    CALLBACK_NEEDS_ENABLED = True

    def _record(self, status: str, result: Any) -> None:
        path = os.environ.get("XENVCPU_ANSIBLE_RECORD")
        if not path:
            return
        line = {
            "host": result._host.get_name(),
            "task": result._task.get_name(),
            "status": status,
            "result": dict(result._result),
        }
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line, default=str) + "\n")

    def v2_runner_on_ok(self, result: Any) -> None:
        self._record("ok", result)

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._record("failed", result)

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._record("skipped", result)

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._record("unreachable", result)
