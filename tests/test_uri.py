"""The one URI dispatcher (xenvcpu.uri): what each scheme accepts, and what it refuses."""

from __future__ import annotations

import pytest

import xenvcpu
from xenvcpu import uri
from xenvcpu.errors import InvalidUri, NotSupported


def test_xen_forms() -> None:
    for text in ("xen:///system", "xen:///", "xen://", "xen:", "xen://localhost/system"):
        u = uri.parse(text)
        assert (u.scheme, u.text, u.needs_native) == ("xen", text, True)
    for bad in ("xen:///other", "xen://host/system", "xen:///system?x=1"):
        with pytest.raises(InvalidUri):
            uri.parse(bad)


def test_sim_forms() -> None:
    u = uri.parse("sim:///default")
    assert (u.sim_base, u.path, dict(u.params)) == ("default", None, {})
    u = uri.parse("sim:///default?version=4.10.1&follow=never")
    assert dict(u.params) == {"version": "4.10.1", "follow": "never"}
    u = uri.parse("sim:///?cpus=4096&domains=1000")
    assert (u.sim_base, dict(u.params)) == ("scale", {"cpus": "4096", "domains": "1000"})
    u = uri.parse("sim:///srv/hosts/lab%20one.toml?delay_ms=5")
    assert (u.sim_base, u.path, dict(u.params)) == (
        "toml",
        "/srv/hosts/lab one.toml",
        {"delay_ms": "5"},
    )
    for bad, why in [
        ("sim:///elsewhere", "unknown simulated host"),
        ("sim://host/default", "sim:///default"),
        ("sim:///default?version", "not NAME=VALUE"),
        ("sim:///default?a=1&a=2", "given twice"),
        ("sim:///default#frag", "sim:///default"),
    ]:
        with pytest.raises(InvalidUri, match=why):
            uri.parse(bad)


def test_xend_forms() -> None:
    assert uri.parse("xend+unix:///var/lib/xend/xend-socket").path == "/var/lib/xend/xend-socket"
    assert uri.parse("xend+unix://").path == "/var/lib/xend/xend-socket"
    assert uri.parse("xend+http://xenhost").host == ("xenhost", 8000)
    assert uri.parse("xend+http://xenhost:8001").host == ("xenhost", 8001)
    for bad in (
        "xend+unix://host/path",
        "xend+http://",
        "xend+http://h:99999",
        "xend+http://h?x=1",
    ):
        with pytest.raises(InvalidUri):
            uri.parse(bad)


def test_xenstore_forms() -> None:
    assert uri.parse("xenstore:///").path is None and uri.parse("xenstore://").path is None
    assert uri.parse("xenstore:///run/xenstored/socket").path == "/run/xenstored/socket"
    assert uri.parse("xenstore://localhost/dev/xen/xenbus").path == "/dev/xen/xenbus"
    with pytest.raises(InvalidUri, match="no host"):
        uri.parse("xenstore://somehost/x")


def test_unknown_and_hostile() -> None:
    for bad in ("qemu:///system", "http://x", "", "default", "/dev/xen/privcmd"):
        with pytest.raises(NotSupported, match="unknown hypervisor URI"):
            uri.parse(bad)
    with pytest.raises(InvalidUri, match="4096"):
        uri.parse("sim:///default?" + "a" * 5000)
    with pytest.raises(InvalidUri, match="control characters"):
        uri.parse("sim:///default\n")
    with pytest.raises(TypeError):
        uri.parse(b"sim:///default")  # type: ignore[arg-type]
    # InvalidUri is a ValueError, for callers that catch those
    assert issubclass(InvalidUri, ValueError)


def test_connect_goes_through_the_dispatcher() -> None:
    """Every form connect() accepts is the form parse() accepts: a refused URI never
    reaches a backend, and a simulated host names a parameter it does not know."""
    with pytest.raises(InvalidUri):
        xenvcpu.connect("sim:///elsewhere")
    with pytest.raises(xenvcpu.XenvcpuError, match='unknown sim host parameter "bogus"'):
        xenvcpu.connect("sim:///default?bogus=1")
    with pytest.raises(xenvcpu.XenvcpuError, match="scale host"):
        xenvcpu.connect("sim:///default?cpus=8")
    assert xenvcpu.connect("sim:///?cpus=8&domains=1").max_cpus == 8
