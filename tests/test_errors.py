"""The one Rust -> Python error mapping: every class is reachable by name, with its context."""

from __future__ import annotations

import pickle

import pytest

from xenvcpu import _native, errors

CLASSES = [
    name
    for name in errors.__all__
    if isinstance(getattr(errors, name), type)
    and issubclass(getattr(errors, name), errors.XenvcpuError)
]


def test_every_error_class_is_listed() -> None:
    assert len(CLASSES) >= 15
    assert "AffinityNarrowed" not in CLASSES  # a warning, not an error


@pytest.mark.parametrize("name", CLASSES)
def test_rust_raises_the_python_class(name: str) -> None:
    cls = getattr(errors, name)
    with pytest.raises(cls) as info:
        _native._raise_error(name, f"{name} happened", errno=22, domain=7, vcpu=3)
    e = info.value
    assert type(e) is cls
    assert (e.errno, e.domain, e.vcpu, str(e)) == (22, 7, 3, f"{name} happened")
    clone = pickle.loads(pickle.dumps(e))
    assert type(clone) is cls and (clone.errno, clone.domain, clone.vcpu) == (22, 7, 3)


def test_unknown_name_falls_back_to_the_base_class() -> None:
    with pytest.raises(errors.XenvcpuError) as info:
        _native._raise_error("NoSuchError", "boom")
    assert type(info.value) is errors.XenvcpuError
    assert info.value.errno is None and info.value.domain is None


def test_builtin_bases_for_idiomatic_catching() -> None:
    assert issubclass(errors.CpuListError, ValueError)
    assert issubclass(errors.DomainNotFound, LookupError)
    assert issubclass(errors.PermissionDenied, PermissionError)
    assert issubclass(errors.VcpuTimeout, TimeoutError)
    assert issubclass(errors.AffinityNarrowed, UserWarning)


def test_pickle_keeps_extra_attributes() -> None:
    e = errors.VcpuTimeout("vCPU 2 still offline", domain="web", vcpu=2)
    e.pending = (2, 3)
    x = errors.XenstoreError("no such node", errno=2)
    x.name = "ENOENT"
    q = errors.QmpError("QEMU refused device_del", domain=4, vcpu=3)
    q.qmp_class, q.desc = "GenericError", "acpi: device unplug request for not supported ..."
    for orig, attr in ((e, "pending"), (x, "name"), (q, "qmp_class"), (q, "desc")):
        clone = pickle.loads(pickle.dumps(orig))
        assert getattr(clone, attr) == getattr(orig, attr) and str(clone) == str(orig)
    clone = pickle.loads(pickle.dumps(q))
    assert (type(clone), clone.domain, clone.vcpu) == (errors.QmpError, 4, 3)


def test_qmp_error_is_a_daemon_error_with_empty_defaults() -> None:
    assert issubclass(errors.QmpError, errors.DaemonError)
    e = errors.QmpError("QEMU went away", errno=104)
    assert (e.qmp_class, e.desc, e.errno) == ("", "", 104)
