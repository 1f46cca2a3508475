"""Guest types through the xenvcpu API on real Xen: `Domain.guest_type`, `Domain.set_vcpus`
on the PVH and the HVM guest, and the CLI's view (`xenvcpu doctor`, `xenvcpu list --json`).

Every result is checked against what Xen's own tools and the guest show: `xl vcpu-list`, the
xenstore nodes libxl writes, QEMU's `query-cpus-fast` (the HVM guest's device model) and the
online CPUs the guest's init reports on its console (lab/domu-init.sh).

Which guests exist (docs/lab.md): by default the PV guest "domu"; the paused HVM guest of the
`hvm_paused` fixture (created per module, ~3 s) wherever Xen offers HVM; the running PVH guest
"domu-pvh" and HVM guest "domu-hvm" only when XEN_TEST_GUESTS names them (the PVH guest needs
multi-threaded TCG, which makes the whole run 2-3 times slower, and the HVM guest takes 15
minutes or more to boot). A fixture of a guest the run did not start skips and says how to start it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import xl
from conftest import HVM_PAUSED, LAB_GUESTS, started_guests
from qmp import Qmp

import xenvcpu
from xenvcpu import Domain, GuestType, Host
from xenvcpu.daemon.qmp import report_of
from xenvcpu.errors import QmpError

URI = "xen:///system"


@pytest.fixture(scope="module")
def host() -> Iterator[Host]:
    with xenvcpu.connect(URI) as h:
        yield h


def cli_json(*args: str) -> dict[str, Any]:
    """Run `xenvcpu --connect xen:///system ARGS --json` (the installed wheel) and parse it."""
    r = subprocess.run(
        [sys.executable, "-m", "xenvcpu", "--connect", URI, *args, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    doc: dict[str, Any] = json.loads(r.stdout)
    return doc


def online_in_xl(name: str) -> list[int]:
    return [v.vcpu for v in xl.vcpus(name) if v.online]


def availability(domid: int) -> list[str | None]:
    return [xl.xenstore_read(f"/local/domain/{domid}/cpu/{i}/availability") for i in range(4)]


def qemu_cpus(domid: int) -> list[tuple[int, str]]:
    """(cpu-index, qom-path) of every CPU the HVM guest's QEMU has, by cpu-index."""
    with Qmp(domid) as q:
        cpus = q.execute("query-cpus-fast")
    return sorted((int(c["cpu-index"]), str(c["qom-path"])) for c in cpus)


def libxl_type(domid: int) -> str | None:
    return xl.xenstore_read(f"/libxl/{domid}/type")


def rule_for(domid: int, kind: str) -> str:
    """The rule xenvcpu.guests.classify gives for a domain that libxl built."""
    if kind == "pv":
        return "XEN_DOMINF_hvm_guest is clear: a PV guest"
    return f"XEN_DOMINF_hvm_guest is set and /libxl/{domid}/type is '{kind}'"


# --- classification -------------------------------------------------------------------------
def test_dom0_and_the_pv_guest_are_pv(host: Host, guest: str) -> None:
    for d in (host.domain(0), host.domain(guest)):
        assert d.guest_type is GuestType.PV
        assert d.guest_type_rule == rule_for(d.id, "pv")
        assert d.info().hvm is False
    assert libxl_type(xl.domid(guest)) == "pv"


def test_pvh_guest_is_pvh(host: Host, pvh_guest: str) -> None:
    d = host.domain(pvh_guest)
    assert d.guest_type is GuestType.PVH
    # an HVM container to Xen; libxl's record decides, as in classify()
    assert d.info().hvm is True
    assert libxl_type(d.id) == "pvh"
    assert d.guest_type_rule == rule_for(d.id, "pvh")
    # and the API path needs no device model: none is registered
    assert not xl.xenstore_exists(f"/local/domain/0/device-model/{d.id}")
    d.check_online_path(wait=True)


def test_hvm_guest_is_hvm(host: Host, hvm_paused: str) -> None:
    d = host.domain(hvm_paused)
    assert d.guest_type is GuestType.HVM
    assert d.info().hvm is True
    assert libxl_type(d.id) == "hvm"
    assert d.guest_type_rule == rule_for(d.id, "hvm")
    d.check_online_path(wait=True)  # its QMP socket is there


def test_doctor_shows_each_type_and_rule(hvm_paused: str) -> None:
    """`xenvcpu doctor`: one "guest type" check per domain, saying the type and the rule;
    a "qmp" check for the HVM guest's QEMU, which answers. Its probes get 30 s, not the
    default 1 s: under emulation, with multi-threaded TCG running three guests, the paused
    guest's QEMU took longer than 1 s to answer `qmp_capabilities` (2026-12-01)."""
    doc = cli_json("doctor", "--timeout", "30")
    checks = doc["checks"]
    types = {c["path"]: c for c in checks if c["name"] == "guest type"}
    domains = xl.domains()
    assert set(types) == {f"{d.name} ({d.domid})" for d in domains}
    for d in domains:
        check = types[f"{d.name} ({d.domid})"]
        kind = "pv" if d.domid == 0 else libxl_type(d.domid)
        assert kind is not None and kind in ("pv", "pvh", "hvm"), (d, kind)
        assert check["ok"] is True
        assert check["detail"] == f"{kind.upper()}: {rule_for(d.domid, kind)}"
    hvm = [hvm_paused] + [LAB_GUESTS["hvm"]] * ("hvm" in started_guests())
    qmp_checks = [c for c in checks if c["name"] == "qmp"]
    assert sorted(c["path"] for c in qmp_checks) == sorted(
        f"/var/run/xen/qmp-libxl-{xl.domid(name)}" for name in hvm
    )
    assert all(c["ok"] for c in qmp_checks), qmp_checks
    assert all(re.fullmatch(r"QEMU 7\.\d+\.\d+ answers", c["detail"]) for c in qmp_checks)


def test_list_json_has_every_domain_with_its_type(hvm_paused: str) -> None:
    doc = cli_json("list")
    got = {d["name"]: (d["id"], d["guest_type"]) for d in doc["domains"]}
    want = {d.name: (d.domid, "pv" if d.domid == 0 else libxl_type(d.domid)) for d in xl.domains()}
    assert got == want
    assert got[HVM_PAUSED][1] == "hvm"
    for kind in started_guests():
        assert got[LAB_GUESTS[kind]][1] == kind
    # and the vCPUs it lists are the ones xl lists
    for d in doc["domains"]:
        assert [v["vcpu"] for v in d["vcpus"] if v["online"]] == online_in_xl(d["name"])


# --- PVH: the xenstore path, verified by wait=True ---------------------------------------
@pytest.fixture
def pvh(host: Host, pvh_guest: str) -> Iterator[Domain]:
    d = host.domain(pvh_guest)
    yield d
    d.set_vcpus(2, wait=True, timeout=90)
    xl.wait_guest_online(pvh_guest, {0, 1}, timeout=60)


@pytest.mark.parametrize("counts", [(1, 4, 3), (4, 1, 2)])
def test_pvh_set_vcpus_down_and_up(pvh: Domain, counts: tuple[int, ...]) -> None:
    assert pvh.max_vcpus == 4
    for n in counts:
        pvh.set_vcpus(n, wait=True, timeout=90)
        # wait=True returned: Xen shows exactly vCPU 0..n-1 online, through xl too
        assert [v.number for v in pvh.vcpus() if v.online] == list(range(n))
        assert online_in_xl(pvh.name) == list(range(n))
        assert pvh.online_vcpus == n
        assert availability(pvh.id) == ["online" if i < n else "offline" for i in range(4)]
        # and the guest's own view follows
        xl.wait_guest_online(pvh.name, range(n), timeout=60)


def test_pvh_set_online_chooses_which(pvh: Domain) -> None:
    pvh.set_online("0,2-3", wait=True, timeout=90)
    assert online_in_xl(pvh.name) == [0, 2, 3]
    assert availability(pvh.id) == ["online", "offline", "online", "online"]
    xl.wait_guest_online(pvh.name, {0, 2, 3}, timeout=60)


# --- HVM: QMP under libxl's lock; adding works, removing is refused -------------------------
def refused_removal(d: Domain, n: int) -> QmpError:
    """set_vcpus(n) below QEMU's count: the typed error, with nothing changed anywhere."""
    before = (qemu_cpus(d.id), availability(d.id), online_in_xl(d.name))
    with pytest.raises(QmpError) as info:
        d.set_vcpus(n, wait=True, timeout=60)
    err = info.value
    assert err.qmp_class == "GenericError"
    assert "not supported device type" in err.desc
    assert "legacy CPU hotplug interface" in str(err)
    assert "offline them inside the guest" in str(err)
    report = report_of(err)
    assert report is not None and report.added == () and report.removed == ()
    # the domain is left as it was: QEMU's CPUs, xenstore, Xen
    assert (qemu_cpus(d.id), availability(d.id), online_in_xl(d.name)) == before
    return err


def test_hvm_paused_add_through_api_then_refused_removal(host: Host, hvm_paused: str) -> None:
    """On the paused HVM guest (its QEMU answers, its vCPUs never run, so no wait=True):
    set_vcpus(3) hot-adds vCPU 2 in QEMU as `xl vcpu-set` would and writes availability;
    set_vcpus(2) then raises QmpError and changes nothing."""
    d = host.domain(hvm_paused)
    assert qemu_cpus(d.id) == [
        (0, "/machine/unattached/device[2]"),
        (1, "/machine/unattached/device[3]"),
    ]
    d.set_vcpus(3)
    assert qemu_cpus(d.id)[2:] == [(2, "/machine/peripheral/cpu-2")]
    assert availability(d.id) == ["online", "online", "online", "offline"]
    assert len(xl.vcpus(hvm_paused)) == 4
    err = refused_removal(d, 2)
    assert err.vcpu == 2
    assert "vCPU 0-2 stay online" in str(err)
    assert availability(d.id)[2] == "online"  # never written "offline", unlike xl vcpu-set


def test_hvm_guest_add_with_wait_then_refused_removal(host: Host, hvm_guest: str) -> None:
    """The running HVM guest: set_vcpus(n + 1, wait=True) returns when Xen shows the new
    vCPU online; QEMU and the guest (ACPI hot-add, its init onlines the CPU) agree.
    set_vcpus(n) then raises QmpError and nothing changes: vCPUs of Xen's HVM guests can
    be added, never removed, so the one added here stays for the rest of the run."""
    d = host.domain(hvm_guest)
    assert d.guest_type is GuestType.HVM
    n = len(qemu_cpus(d.id))
    assert n < d.max_vcpus, f"{hvm_guest} already has all {n} vCPUs: nothing left to add"
    assert online_in_xl(hvm_guest) == list(range(n))
    d.set_vcpus(n + 1, wait=True, timeout=300)
    assert online_in_xl(hvm_guest) == list(range(n + 1))
    assert [i for i, _ in qemu_cpus(d.id)] == list(range(n + 1))
    assert qemu_cpus(d.id)[n] == (n, f"/machine/peripheral/cpu-{n}")
    assert availability(d.id)[: n + 1] == ["online"] * (n + 1)
    xl.wait_guest_online(hvm_guest, range(n + 1), timeout=300)
    err = refused_removal(d, n)
    assert err.vcpu == n
    assert xl.guest_online(hvm_guest) == set(range(n + 1))
