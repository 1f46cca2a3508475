"""Setting the online vCPUs through xenstore (xen-interfaces.md §5.4, §5.5) and waiting for the
guest.

write_availability / read_availability run against the real oxenstored; wait_online
uses fake read_online callables (the hypervisor's view) and a fake clock.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable

import pytest

from xenvcpu._limits import DOMID_FIRST_RESERVED, MAX_DOMAIN_NAME, MAX_VCPUS
from xenvcpu.daemon import vcpus
from xenvcpu.daemon.vcpus import (
    availability_path,
    check_settable,
    find_domid,
    list_domains,
    max_vcpus_from_xenstore,
    read_availability,
    validate_count,
    validate_online,
    wait_online,
    write_availability,
)
from xenvcpu.daemon.xenstore import Op, XenstoreClient
from xenvcpu.errors import (
    DomainDying,
    DomainNotFound,
    VcpuCountError,
    VcpuTimeout,
    XenstoreError,
    XenvcpuError,
)
from xenvcpu.toolstack import XenstoreToolstack

from .xs_script import PairServer, Peer


class RecordingClient(XenstoreClient):
    """Records (op, tx_id) of every request; can run a hook before each one."""

    def __init__(self, path: str) -> None:
        super().__init__(path, timeout=5)
        self.log: list[tuple[Op, int]] = []
        self.before: dict[Op, object] = {}

    def _request(self, op: Op, payload: bytes, tx: int = 0, *, what: str = "") -> bytes:
        self.log.append((op, tx))
        hook = self.before.get(op)
        if callable(hook):
            hook()
        return super()._request(op, payload, tx, what=what)


def make_domain(xs: XenstoreClient, domid: int, max_vcpus: int, online: int) -> None:
    """What libxl writes at build time (xen-interfaces.md §5.4)."""
    xs.write(f"/local/domain/{domid}/name", f"guest{domid}")
    for n in range(max_vcpus):
        xs.write(availability_path(domid, n), "online" if n < online else "offline")


# ------------------------------------------------------------------ validation


def test_availability_path() -> None:
    assert availability_path(7, 3) == "/local/domain/7/cpu/3/availability"


@pytest.mark.parametrize("n", [1, 2, 4])
def test_validate_count_accepts_1_to_max(n: int) -> None:
    assert validate_count(7, n, 4) == frozenset(range(n))


@pytest.mark.parametrize("n", [0, -1, 5, 100])
def test_validate_count_refuses_outside_range(n: int) -> None:
    with pytest.raises(VcpuCountError) as info:
        validate_count(7, n, 4)
    message = str(info.value)
    assert "domain 7" in message and "1..4" in message and str(n) in message
    assert info.value.domain == 7
    assert isinstance(info.value, ValueError)


def test_validate_count_names_domain_by_name() -> None:
    with pytest.raises(VcpuCountError, match=r"domain 'web'.*1\.\.2"):
        validate_count("web", 3, 2)


def test_validate_count_types() -> None:
    with pytest.raises(TypeError):
        validate_count(1, True, 4)
    with pytest.raises(TypeError):
        validate_count(1, 2.0, 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        validate_count(1, 1, 0)


def test_validate_online() -> None:
    assert validate_online(3, [0, 2, 2], 4) == frozenset({0, 2})
    with pytest.raises(VcpuCountError, match=r"at least one vCPU.*0\.\.3") as info:
        validate_online(3, [], 4)
    assert info.value.domain == 3
    with pytest.raises(VcpuCountError, match=r"no vCPU 4-5.*0\.\.3") as info:
        validate_online(3, {0, 4, 5}, 4)
    assert info.value.vcpu == 4
    with pytest.raises(VcpuCountError, match="no vCPU -1"):
        validate_online(3, {-1}, 4)


def test_check_settable() -> None:
    # HVM guests are no longer refused here: they take the QMP path (tests/qmp, test_guests)
    check_settable(1, dying=False)
    with pytest.raises(DomainDying, match="dying") as info2:
        check_settable("vm", dying=True)
    assert info2.value.domain == "vm"


def test_format_ranges() -> None:
    from xenvcpu._ranges import format_ranges, valid_range

    assert format_ranges([5, 0, 1, 2]) == "0-2,5"
    assert format_ranges([3]) == "3"
    assert format_ranges([]) == ""
    assert format_ranges([-2, -1, 7, 10**30]) == f"-2--1,7,{10**30}"
    assert [valid_range(n) for n in (0, 1, 2, 8)] == ["none", "0", "0-1", "0-7"]


# ------------------------------------------------------------------ writing (real xenstored)


def test_write_availability_sets_every_vcpu(xs: XenstoreClient, domid: int) -> None:
    make_domain(xs, domid, max_vcpus=8, online=8)
    attempts = write_availability(xs, domid, 8, {0, 2, 5})
    assert attempts == 1
    for n in range(8):
        want = b"online" if n in (0, 2, 5) else b"offline"
        assert xs.read(availability_path(domid, n)) == want, n
    assert read_availability(xs, domid) == {n: n in (0, 2, 5) for n in range(8)}


def test_write_availability_is_one_transaction(xenstored_path: str, domid: int) -> None:
    with RecordingClient(xenstored_path) as xs:
        make_domain(xs, domid, max_vcpus=4, online=1)
        xs.log.clear()
        write_availability(xs, domid, 4, {0, 1, 2})
        ops = [op for op, _ in xs.log]
        assert ops.count(Op.TRANSACTION_START) == 1
        assert ops.count(Op.TRANSACTION_END) == 1
        writes = [(op, tx) for op, tx in xs.log if op == Op.WRITE]
        assert len(writes) == 4  # every vCPU 0..max-1, not only the changed ones
        tx_ids = {tx for _, tx in xs.log if _ != Op.TRANSACTION_START}
        assert len(tx_ids) == 1 and 0 not in tx_ids  # every request inside the same tx


def test_write_availability_is_atomic_for_a_watcher(
    xs: XenstoreClient, xs2: XenstoreClient, domid: int
) -> None:
    """A guest watching its cpu subtree sees nothing until the commit, then all of it."""
    make_domain(xs, domid, max_vcpus=4, online=4)
    base = f"/local/domain/{domid}/cpu"
    seen_mid_transaction: list[object] = []

    class Peeking(XenstoreClient):
        def _request(self, op: Op, payload: bytes, tx: int = 0, *, what: str = "") -> bytes:
            if op == Op.TRANSACTION_END:
                seen_mid_transaction.append(xs2.read_watch(0.1))
                seen_mid_transaction.append(xs2.read(availability_path(domid, 3)))
            return super()._request(op, payload, tx, what=what)

    token = xs2.watch(base)
    assert xs2.read_watch(2) is not None  # the initial firing
    with Peeking(xs.endpoint, timeout=5) as writer:
        write_availability(writer, domid, 4, {0})
    assert seen_mid_transaction == [None, b"online"]
    changed = set()
    while (event := xs2.read_watch(0.3)) is not None:
        assert event.token == token
        changed.add(event.path)
    assert changed >= {availability_path(domid, n) for n in (1, 2, 3)}
    assert xs2.read(availability_path(domid, 3)) == b"offline"


def test_write_availability_retries_on_conflict(
    xenstored_path: str, xs2: XenstoreClient, domid: int
) -> None:
    """The body reads /local/domain/<id> inside the transaction; another client
    changes that node before our commit: the commit conflicts (EAGAIN) and the whole
    body runs again.  (oxenstored validates the nodes a transaction read; seen here:
    writes to children of a node that was read, or new children, do not conflict.)"""
    with RecordingClient(xenstored_path) as xs:
        make_domain(xs, domid, max_vcpus=4, online=4)
        fired: list[bool] = []

        def intruder() -> None:
            if not fired:
                fired.append(True)
                xs2.write(f"/local/domain/{domid}", "touched")

        xs.before[Op.TRANSACTION_END] = intruder
        attempts = write_availability(xs, domid, 4, {0, 1})
        assert attempts == 2
        assert [op for op, _ in xs.log].count(Op.TRANSACTION_START) == 2
    assert read_availability(xs2, domid) == {0: True, 1: True, 2: False, 3: False}
    assert xs2.read(f"/local/domain/{domid}") == b"touched"


def test_domain_destroyed_mid_transaction(
    xenstored_path: str, xs2: XenstoreClient, domid: int
) -> None:
    """The domain's directory is removed (domain destroyed) before our commit: the
    retry finds no domain and nothing is re-created under /local/domain/<id>."""
    with RecordingClient(xenstored_path) as xs:
        make_domain(xs, domid, max_vcpus=2, online=2)

        def destroy() -> None:
            if xs2.exists(f"/local/domain/{domid}"):
                xs2.rm(f"/local/domain/{domid}")

        xs.before[Op.TRANSACTION_END] = destroy
        with pytest.raises(DomainNotFound):
            write_availability(xs, domid, 2, {0})
    assert not xs2.exists(f"/local/domain/{domid}")


def test_write_availability_unknown_domain_creates_nothing(xs: XenstoreClient, domid: int) -> None:
    with pytest.raises(DomainNotFound) as info:
        write_availability(xs, domid, 2, {0})
    assert info.value.domain == domid and info.value.errno == errno.ENOENT
    assert not xs.exists(f"/local/domain/{domid}")


def test_write_availability_validates_before_any_request(xenstored_path: str, domid: int) -> None:
    with RecordingClient(xenstored_path) as xs:
        with pytest.raises(VcpuCountError):
            write_availability(xs, domid, 4, set())
        with pytest.raises(VcpuCountError):
            write_availability(xs, domid, 4, {4})
        assert xs.log == []


def test_read_availability_unknown_domain(xs: XenstoreClient, domid: int) -> None:
    with pytest.raises(DomainNotFound):
        read_availability(xs, domid)


# ------------------------------------------------------------------ waiting for the guest


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def guest(states: list[set[int]]) -> tuple[list[int], Callable[[], set[int]]]:
    """read_online returning each state in turn, then the last one forever."""
    calls = [0]

    def read_online() -> set[int]:
        i = min(calls[0], len(states) - 1)
        calls[0] += 1
        return states[i]

    return calls, read_online


def test_wait_online_returns_at_once_when_already_there() -> None:
    clock = FakeClock()
    calls, read = guest([{0, 1}])
    assert wait_online(read, {0, 1}, 5, clock=clock, sleep=clock.sleep) == {0, 1}
    assert calls == [1] and clock.sleeps == []


def test_wait_online_polls_until_guest_follows() -> None:
    clock = FakeClock()
    calls, read = guest([{0, 1, 2, 3}, {0, 1, 2}, {0, 1, 2}, {0}])
    result = wait_online(read, {0}, 5, clock=clock, sleep=clock.sleep)
    assert result == frozenset({0})
    assert calls == [4]
    assert clock.sleeps == [0.005, 0.01, 0.02]  # backs off, starting small


def test_wait_online_backoff_is_capped_by_poll_interval() -> None:
    clock = FakeClock()
    _, read = guest([{0}])
    with pytest.raises(VcpuTimeout):
        wait_online(read, {0, 1}, 2, poll_interval=0.1, clock=clock, sleep=clock.sleep)
    assert max(clock.sleeps) == pytest.approx(0.1)
    assert sum(clock.sleeps) == pytest.approx(2)  # never sleeps past the deadline


def test_wait_online_timeout_names_the_vcpus_that_did_not_follow() -> None:
    clock = FakeClock()
    _, read = guest([{0, 1, 3}])  # asked for {0, 2}: 2 never came up, 1 and 3 never went
    with pytest.raises(VcpuTimeout) as info:
        wait_online(read, {0, 2}, 1.5, domain=9, clock=clock, sleep=clock.sleep)
    err = info.value
    assert err.pending == (1, 2, 3)
    assert err.domain == 9
    message = str(err)
    assert "domain 9" in message and "1.5 s" in message
    assert "vCPU 2 still offline" in message
    assert "vCPU 1,3 still online" in message
    assert isinstance(err, TimeoutError) and isinstance(err, XenvcpuError)


def test_wait_online_timeout_zero_checks_once() -> None:
    clock = FakeClock()
    calls, read = guest([{0}])
    with pytest.raises(VcpuTimeout) as info:
        wait_online(read, {0, 1}, 0, clock=clock, sleep=clock.sleep)
    assert calls == [1] and clock.sleeps == []
    assert info.value.pending == (1,)


def test_wait_online_uses_wait_event_instead_of_sleep() -> None:
    clock = FakeClock()
    waited: list[float] = []

    def wait_event(t: float) -> None:
        waited.append(t)
        clock.now += t / 2  # woke early, as a watch would

    _calls, read = guest([{0}, {0}, {0, 1}])
    wait_online(read, {0, 1}, 5, wait_event=wait_event, clock=clock, sleep=clock.sleep)
    assert len(waited) == 2 and clock.sleeps == []


def test_wait_online_propagates_domain_errors() -> None:
    def gone() -> set[int]:
        raise DomainNotFound("domain 3 vanished", domain=3)

    with pytest.raises(DomainNotFound):
        wait_online(gone, {0}, 5)


def test_wait_online_real_clock_is_bounded() -> None:
    start = time.monotonic()
    with pytest.raises(VcpuTimeout) as info:
        wait_online(lambda: {0}, {0, 1}, 0.2, poll_interval=0.05)
    assert 0.2 <= time.monotonic() - start < 1.5
    assert info.value.pending == (1,)


def test_wait_online_negative_timeout() -> None:
    with pytest.raises(ValueError):
        wait_online(lambda: {0}, {0}, -1)


def test_module_exports() -> None:
    for name in vcpus.__all__:
        assert hasattr(vcpus, name)


# ------------------------------------------------------------------ the whole path, with a guest


class FakeGuest:
    """Plays the guest kernel of xen-interfaces.md §5.5: watches its cpu subtree on its own xenstore
    connection and, after ``delay``, brings vCPUs up/down as ``availability`` says.
    ``follows=False`` is a guest without vCPU hotplug support (it never reacts)."""

    def __init__(
        self, path: str, domid: int, initial: set[int], delay: float = 0.05, follows: bool = True
    ) -> None:
        self.domid = domid
        self.delay = delay
        self.follows = follows
        self._online = set(initial)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self.reactions = 0
        self.xs = XenstoreClient(path, timeout=5)
        self.xs.watch(f"/local/domain/{domid}/cpu")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self.xs.read_watch(0.05) is None or not self.follows:
                    continue
                time.sleep(self.delay)
                wanted = {n for n, up in read_availability(self.xs, self.domid).items() if up}
                with self._lock:
                    self._online = wanted
                    self.reactions += 1
        except BaseException as exc:
            self.error = exc

    def read_online(self) -> set[int]:
        """The hypervisor's view (what getvcpuinfo would say)."""
        with self._lock:
            return set(self._online)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.xs.close()
        if self.error is not None:
            raise self.error


def test_write_then_wait_4_1_3(xs: XenstoreClient, xenstored_path: str, domid: int) -> None:
    """The lab scenario (PV guest, maxvcpus=4): 4 -> 1 -> 3 -> {0, 3}, each written in one
    transaction to a real xenstored and waited for through a guest that follows its watch."""
    make_domain(xs, domid, max_vcpus=4, online=2)
    guest = FakeGuest(xenstored_path, domid, {0, 1})
    try:
        for wanted in (set(range(4)), {0}, set(range(3)), {0, 3}):
            write_availability(xs, domid, 4, wanted)
            assert wait_online(guest.read_online, wanted, 5, domain=domid) == wanted
            assert read_availability(xs, domid) == {v: v in wanted for v in range(4)}
    finally:
        guest.close()


def test_wait_for_a_guest_that_never_follows(
    xs: XenstoreClient, xenstored_path: str, domid: int
) -> None:
    make_domain(xs, domid, max_vcpus=4, online=2)
    guest = FakeGuest(xenstored_path, domid, {0, 1}, follows=False)
    try:
        write_availability(xs, domid, 4, {0, 1, 2})
        start = time.monotonic()
        with pytest.raises(VcpuTimeout) as info:
            wait_online(guest.read_online, {0, 1, 2}, 0.3, domain=domid)
        assert time.monotonic() - start < 2
        assert info.value.pending == (2,)
        assert info.value.domain == domid
        assert "vCPU 2 still offline" in str(info.value)
        # the request itself was written: a guest that catches up later will follow it
        assert read_availability(xs, domid) == {0: True, 1: True, 2: True, 3: False}
    finally:
        guest.close()


def test_refusals_write_nothing(xenstored_path: str, domid: int) -> None:
    with RecordingClient(xenstored_path) as xs:
        with pytest.raises(DomainDying):
            check_settable(domid, dying=True)
        with pytest.raises(VcpuCountError, match=r"1\.\.4"):
            validate_count(domid, 5, 4)
        with pytest.raises(VcpuCountError):
            write_availability(xs, domid, 4, set())
        assert xs.log == []
    with XenstoreClient(xenstored_path) as xs2, pytest.raises(DomainNotFound):
        write_availability(xs2, domid, 4, {0, 1})  # no such domain in xenstore


# ------------------------------------------------------------------ pure-Python lookups


def test_list_and_find_domains(xs: XenstoreClient, domid: int) -> None:
    make_domain(xs, domid, max_vcpus=3, online=1)
    xs.write(f"/local/domain/{domid}/name", "web server")
    domains = list_domains(xs)
    assert domains[domid] == "web server"
    assert find_domid(xs, "web server") == domid
    assert find_domid(xs, domid) == domid
    assert find_domid(xs, str(domid)) == domid
    with pytest.raises(DomainNotFound) as info:
        find_domid(xs, "no-such-vm")
    assert "web server" in str(info.value) and info.value.errno == errno.ESRCH
    with pytest.raises(DomainNotFound):
        find_domid(xs, 99999)
    assert max_vcpus_from_xenstore(xs, domid) == 3


def test_max_vcpus_from_xenstore_without_cpu_nodes(xs: XenstoreClient, domid: int) -> None:
    xs.write(f"/local/domain/{domid}/name", "bare")
    xs.mkdir(f"/local/domain/{domid}/cpu")
    with pytest.raises(DomainNotFound, match="no cpu"):
        max_vcpus_from_xenstore(xs, domid)


# ------------------------------------------------------------------ hostile xenstore contents


class FakeTree:
    """A scripted xenstored (xs_script) serving fixed DIRECTORY and READ answers inside
    transactions: what no real xenstored would hold (names that are not UTF-8, a
    million-entry directory). ``reads`` records every READ asked."""

    def __init__(self, dirs: dict[str, bytes], values: dict[str, bytes]) -> None:
        self.dirs = dirs
        self.values = values
        self.reads: list[str] = []
        self.pair = PairServer(self.script)
        self.xs = XenstoreClient.from_fd(self.pair.detach_client_fd(), timeout=5)

    def script(self, peer: Peer) -> None:
        try:
            while True:
                mtype, rid, tx, payload = peer.recv()
                path = payload.split(b"\0")[0].decode()
                if mtype == Op.TRANSACTION_START:
                    peer.send(mtype, rid, 0, b"7\0")
                elif mtype == Op.TRANSACTION_END:
                    peer.send(mtype, rid, tx, b"OK\0")
                elif mtype == Op.DIRECTORY and path in self.dirs:
                    peer.send(mtype, rid, tx, self.dirs[path])
                elif mtype == Op.READ and path in self.values:
                    self.reads.append(path)
                    peer.send(mtype, rid, tx, self.values[path])
                else:
                    if mtype == Op.READ:
                        self.reads.append(path)
                    peer.send(Op.ERROR, rid, tx, b"ENOENT\0")
        except (EOFError, OSError):
            return

    def close(self) -> None:
        self.xs.close()
        self.pair.close()


def names(*entries: bytes) -> bytes:
    return b"".join(e + b"\0" for e in entries)


def test_list_domains_skips_what_is_no_domid() -> None:
    tree = FakeTree(
        {"/local/domain": names(b"0", b"\xff\xfe", b"99999999999", b"007", b"32752", b"5")},
        {"/local/domain/0/name": b"Domain-0", "/local/domain/5/name": b"caf\xc3\xa9 \xff"},
    )
    try:
        assert list_domains(tree.xs) == {0: "Domain-0", 5: "caf\u00e9 \ufffd"}
        # no read below an entry that is no domid (007 would have been domain 7 twice)
        assert tree.reads == ["/local/domain/0/name", "/local/domain/5/name"]
    finally:
        tree.close()


def test_list_domains_of_a_huge_directory_reads_nothing_below_it() -> None:
    tree = FakeTree({"/local/domain": names(*(b"%d" % (i % 30000) for i in range(40000)))}, {})
    try:
        start = time.monotonic()
        with pytest.raises(XenstoreError) as info:
            list_domains(tree.xs)
        assert time.monotonic() - start < 2
        assert info.value.errno == errno.E2BIG
        assert f"40000 entries, more than the {DOMID_FIRST_RESERVED}" in str(info.value)
        assert tree.reads == []
    finally:
        tree.close()


def test_overlong_domain_name_is_no_name() -> None:
    tree = FakeTree(
        {"/local/domain": names(b"3")}, {"/local/domain/3/name": b"x" * (MAX_DOMAIN_NAME + 1)}
    )
    try:
        assert list_domains(tree.xs) == {3: ""}
    finally:
        tree.close()


def test_find_domid_message_is_bounded() -> None:
    many = 3000
    tree = FakeTree(
        {"/local/domain": names(*(b"%d" % i for i in range(many)))},
        {f"/local/domain/{i}/name": b"n" * 4000 for i in range(many)},
    )
    try:
        with pytest.raises(DomainNotFound) as info:
            find_domid(tree.xs, "absent" * 1000)
        message = str(info.value)
        assert len(message) < 6000 and message.endswith(" more")
        assert "n" * 64 + "... (0)" in message
    finally:
        tree.close()


def test_cpu_names_that_are_no_vcpu() -> None:
    base = "/local/domain/4/cpu"
    tree = FakeTree(
        {base: names(b"0", b"01", b"4000000000", b"8192", b"8191", b"\xd9\xa3", b"-1")},
        {f"{base}/0/availability": b"online", f"{base}/8191/availability": b"offline"},
    )
    try:
        assert read_availability(tree.xs, 4) == {0: True, 8191: False}
        assert max_vcpus_from_xenstore(tree.xs, 4) == MAX_VCPUS
        assert sorted(set(tree.reads)) == [f"{base}/0/availability", f"{base}/8191/availability"]
    finally:
        tree.close()


def test_cpu_directory_over_max_vcpus_is_refused() -> None:
    base = "/local/domain/4/cpu"
    tree = FakeTree({base: names(*(b"%d" % i for i in range(MAX_VCPUS + 1)))}, {})
    try:
        with pytest.raises(XenstoreError, match=f"more than the {MAX_VCPUS}") as info:
            max_vcpus_from_xenstore(tree.xs, 4)
        assert info.value.errno == errno.E2BIG and tree.reads == []
    finally:
        tree.close()


def test_overlong_guest_record_is_clipped(
    xenstored_path: str, xs: XenstoreClient, domid: int
) -> None:
    xs.write(f"/libxl/{domid}/type", "h" * 4000)
    xs.write(f"/libxl/{domid + 1}/type", "pvh")
    toolstack = XenstoreToolstack(xenstored_path)
    try:
        assert toolstack.guest_record(domid) == "h" * 64 + "..."  # no type, short message
        assert toolstack.guest_record(domid + 1) == "pvh"
        assert toolstack.guest_record(domid + 2) is None
    finally:
        toolstack.close()
        xs.rm(f"/libxl/{domid}")
        xs.rm(f"/libxl/{domid + 1}")
