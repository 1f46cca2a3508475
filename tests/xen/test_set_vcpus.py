"""The daemon path on real Xen: change the online vCPUs of the running PV guest.

The lab's guest (maxvcpus=4, vcpus=2) runs an init that brings available vCPUs online as a
udev rule would; xenvcpu writes every `availability` node in one xenstore transaction and
waits until Xen's getvcpuinfo shows the wanted set.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import xl

import xenvcpu
from xenvcpu import Host
from xenvcpu.daemon import vcpus as daemon_vcpus
from xenvcpu.daemon.xenstore import XenstoreClient
from xenvcpu.errors import VcpuCountError


@pytest.fixture(scope="module")
def host() -> Iterator[Host]:
    with xenvcpu.connect() as h:
        yield h


@pytest.fixture
def restore_two(host: Host, guest: str) -> Iterator[None]:
    yield
    host.domain(guest).set_vcpus(2, wait=True, timeout=90)


def online_in_xl(guest: str) -> list[int]:
    return [v.vcpu for v in xl.vcpus(guest) if v.online]


def test_set_vcpus_4_1_3_with_wait(host: Host, guest: str, restore_two: None) -> None:
    d = host.domain(guest)
    assert d.max_vcpus == 4
    for n in (4, 1, 3):
        d.set_vcpus(n, wait=True, timeout=90)
        assert [v.number for v in d.vcpus() if v.online] == list(range(n))
        assert online_in_xl(guest) == list(range(n))
        assert d.online_vcpus == n
        assert host.toolstack.availability(d.id) == {i: i < n for i in range(4)}


def test_set_online_chooses_which(host: Host, guest: str, restore_two: None) -> None:
    d = host.domain(guest)
    d.set_online("0,2-3", wait=True, timeout=90)
    assert online_in_xl(guest) == [0, 2, 3]


@pytest.mark.parametrize("n", [0, 5, -1])
def test_bad_counts_change_nothing(host: Host, guest: str, n: int) -> None:
    d = host.domain(guest)
    before = host.toolstack.availability(d.id)
    with pytest.raises(VcpuCountError, match=r"1\.\.4"):
        d.set_vcpus(n)
    assert host.toolstack.availability(d.id) == before


class ConflictingClient(XenstoreClient):
    """Before the first commit, another connection changes a node the transaction read.

    oxenstored only fails a commit when a node the transaction read now holds a different
    value (rewriting the same value does not conflict), so the intruder writes a marker;
    the test restores the original value afterwards.
    """

    def __init__(self, domid: int) -> None:
        super().__init__()
        self.home = f"/local/domain/{domid}"
        self.original = self.read(self.home)
        self.commits = 0

    def transaction_end(self, tx: int, *, commit: bool = True) -> None:
        if commit:
            self.commits += 1
            if self.commits == 1:
                with XenstoreClient() as other:
                    other.write(self.home, self.original + b"-conflict")
        super().transaction_end(tx, commit=commit)


def test_transaction_conflict_is_retried(host: Host, guest: str, restore_two: None) -> None:
    d = host.domain(guest)
    with ConflictingClient(d.id) as xs:
        try:
            attempts = daemon_vcpus.write_availability(xs, d.id, 4, {0, 1, 2})
        finally:
            xs.write(xs.home, xs.original)
        assert attempts == 2 and xs.commits == 2
        assert daemon_vcpus.read_availability(xs, d.id) == {0: True, 1: True, 2: True, 3: False}
    daemon_vcpus.wait_online(
        lambda: {v.number for v in d.vcpus() if v.online}, {0, 1, 2}, 90, domain=guest
    )
    assert online_in_xl(guest) == [0, 1, 2]
