"""Running a module's main() in-process: its arguments in, its exit_json/fail_json result out."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from ansible.module_utils.testing import patch_module_args


class ModuleExit(Exception):
    """exit_json or fail_json was called; ``result`` is what the module returned."""

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__(json.dumps(result, default=str)[:500])
        self.result = result


RunModule = Callable[..., dict[str, Any]]


@pytest.fixture
def run_module(monkeypatch: pytest.MonkeyPatch) -> RunModule:
    """run_module(main, {args}, check=False, diff=False) -> the module's result dict."""
    from ansible.module_utils import basic

    def exit_json(self: basic.AnsibleModule, **kwargs: Any) -> None:
        kwargs.setdefault("changed", False)
        raise ModuleExit(kwargs)

    def fail_json(self: basic.AnsibleModule, msg: str, **kwargs: Any) -> None:
        kwargs.pop("exception", None)
        raise ModuleExit({"failed": True, "msg": msg, **kwargs})

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)

    def run(
        main: Callable[[], None], args: dict[str, Any], check: bool = False, diff: bool = False
    ) -> dict[str, Any]:
        full = dict(args)
        full["_ansible_check_mode"] = check
        full["_ansible_diff"] = diff
        with patch_module_args(full), pytest.raises(ModuleExit) as e:
            main()
        return e.value.result

    return run
