"""xenvcpu.xen.vcpus, in-process on a simulated host shared by the module runs."""

from __future__ import annotations

import pytest
from ansible_collections.xenvcpu.xen.plugins.modules import vcpus

import xenvcpu

from .conftest import RunModule


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> xenvcpu.Host:
    h = xenvcpu.connect("sim:///default?delay_ms=0")
    monkeypatch.setattr(h, "close", lambda: None)
    monkeypatch.setattr(vcpus, "connect", lambda module: h)
    return h


def online(h: xenvcpu.Host, name: str) -> list[int]:
    return [v.number for v in h.domain(name).vcpus() if v.online]


def test_count_then_again(run_module: RunModule, host: xenvcpu.Host) -> None:
    first = run_module(vcpus.main, {"domain": "web", "online": 2})
    assert first["changed"] is True
    assert (first["before"], first["online"]) == ("0-3", "0-1")
    assert online(host, "web") == [0, 1]
    again = run_module(vcpus.main, {"domain": "web", "online": 2})
    assert again["changed"] is False and again["online"] == "0-1"


def test_a_set_by_domain_id(run_module: RunModule, host: xenvcpu.Host) -> None:
    domid = host.domain("batch").id
    result = run_module(vcpus.main, {"domain": str(domid), "online": "0,2-3"})
    assert result["changed"] is True and result["domain"] == "batch"
    assert result["guest_type"] == "pvh"
    assert online(host, "batch") == [0, 2, 3]


@pytest.mark.parametrize(
    ("value", "want"),
    [("3", [0, 1, 2]), ("2-2", [2]), ([0, 3], [0, 3]), ("1,3", [1, 3]), (2.0, [0, 1])],
)
def test_online_forms(
    run_module: RunModule, host: xenvcpu.Host, value: object, want: list[int]
) -> None:
    """A templated number is a string on ansible-core < 2.19: digits alone are a count."""
    result = run_module(vcpus.main, {"domain": "web", "online": value})
    assert result["changed"] is True
    assert online(host, "web") == want


def test_check_mode_and_diff(run_module: RunModule, host: xenvcpu.Host) -> None:
    result = run_module(vcpus.main, {"domain": "web", "online": 1}, check=True, diff=True)
    assert result["changed"] is True
    assert result["diff"]["before"] == "online: 0-3\n"
    assert result["diff"]["after"] == "online: 0\n"
    assert online(host, "web") == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (5, "1 to 4"),
        (0, "1 to 4"),
        ("0-7", "7"),
        (True, "a count or a list"),
        ("x", "x"),
        ([0, "a"], "vCPU numbers"),
        (1.5, "1 to 4"),
    ],
)
def test_bad_online_fails_before_any_change(
    run_module: RunModule, host: xenvcpu.Host, value: object, words: str
) -> None:
    result = run_module(vcpus.main, {"domain": "web", "online": value})
    assert result["failed"] is True and words in result["msg"]
    assert online(host, "web") == [0, 1, 2, 3]


def test_unknown_domain(run_module: RunModule, host: xenvcpu.Host) -> None:
    result = run_module(vcpus.main, {"domain": "nosuch", "online": 1})
    assert result["failed"] is True
    assert result["error"] == "DomainNotFound" and "nosuch" in result["msg"]


def test_hvm_without_device_model_fails_in_check_mode_too(
    run_module: RunModule, host: xenvcpu.Host
) -> None:
    result = run_module(vcpus.main, {"domain": "db", "online": 2}, check=True)
    assert result["failed"] is True and result["error"] == "NotSupported"
