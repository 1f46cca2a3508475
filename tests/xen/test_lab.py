"""The lab itself: real Xen devices, xenstored, dom0 and the PV guest, and the xl helpers."""

import os
import stat

import pytest
import xl


@pytest.mark.parametrize("dev", ["/dev/xen/privcmd", "/dev/xen/hypercall"])
def test_xen_device_exists(dev: str) -> None:
    assert stat.S_ISCHR(os.stat(dev).st_mode), f"{dev} is not a character device"


def test_running_as_root_in_control_domain() -> None:
    assert os.geteuid() == 0
    with open("/proc/xen/capabilities") as f:
        assert "control_d" in f.read()


def test_xl_list_shows_dom0_and_guest(guest: str) -> None:
    doms = {d.name: d for d in xl.domains()}
    assert doms["Domain-0"].domid == 0
    assert doms["Domain-0"].vcpus >= 1
    assert doms[guest].domid > 0
    assert doms[guest].vcpus == 2  # vcpus=2 in lab/domu.cfg


def test_xl_info_topology(nr_cpus: int) -> None:
    info = xl.info()
    assert info["xen_major"] == 4 and info["xen_minor"] == 17
    assert nr_cpus == 4 == info["nr_cpus"]  # qemu -smp 4
    per_socket = int(info["threads_per_core"]) * int(info["cores_per_socket"])
    assert per_socket >= 1 and nr_cpus % per_socket == 0
    assert int(info["nr_nodes"]) >= 1


def test_vcpu_list_shapes(guest: str, nr_cpus: int) -> None:
    dom0 = xl.vcpus(0)
    assert [v.vcpu for v in dom0] == list(range(len(dom0))) and len(dom0) == 2  # dom0_max_vcpus=2
    assert all(v.online and v.cpu in range(nr_cpus) for v in dom0)
    g = xl.vcpus(guest)
    assert len(g) == 4  # maxvcpus=4
    assert sum(v.online for v in g) == 2
    for v in g:
        assert v.name == guest and v.domid == xl.domid(guest)
        assert (v.cpu is None) == (not v.online)
        assert v.hard <= set(range(nr_cpus)) and v.soft <= set(range(nr_cpus))


def test_guest_brings_vcpus_online_and_offline(guest: str) -> None:
    """xl's own vcpu-set against the guest's onlining loop (what the API tests rely on)."""
    try:
        xl.vcpu_set(guest, 4, timeout=90)
        assert [v.online for v in xl.vcpus(guest)] == [True] * 4
        xl.vcpu_set(guest, 1, timeout=90)
        assert [v.online for v in xl.vcpus(guest)] == [True, False, False, False]
    finally:
        xl.vcpu_set(guest, 2, timeout=90)


@pytest.mark.parametrize(
    "text,expect",
    [
        ("0-2,5", {0, 1, 2, 5}),
        ("all", {0, 1, 2, 3}),
        ("none", set()),
        ("-", set()),
        ("3", {3}),
        ("0-3,^2", {0, 1, 3}),
        ("all,^0", {1, 2, 3}),
    ],
)
def test_parse_cpulist(text: str, expect: set[int]) -> None:
    assert xl.parse_cpulist(text, 4) == expect


def test_format_cpulist() -> None:
    assert xl.format_cpulist({0, 1, 3}) == "0-1,3"
    assert xl.format_cpulist([]) == ""
    assert xl.format_cpulist(range(4)) == "0-3"
