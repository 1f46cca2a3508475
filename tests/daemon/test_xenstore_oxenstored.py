"""The xenstore client against a REAL xenstored (Debian's oxenstored 4.17, no Xen needed).

Every test here talks to the daemon started by the ``xenstored_path`` fixture.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from xenvcpu.daemon.xenstore import (
    PAYLOAD_MAX,
    EndpointStatus,
    Op,
    Transaction,
    WatchEvent,
    XenstoreClient,
    probe_endpoints,
)
from xenvcpu.errors import DaemonError, PermissionDenied, XenstoreError

PYTHON_SRC = Path(__file__).resolve().parents[2] / "python"


def home(domid: int) -> str:
    return f"/local/domain/{domid}"


# ------------------------------------------------------------------ basic operations


def test_write_then_read_returns_exact_bytes(xs: XenstoreClient, domid: int) -> None:
    path = f"{home(domid)}/name"
    xs.write(path, "guest-1")
    assert xs.read(path) == b"guest-1"  # no trailing NUL (xen-interfaces.md §5.3)
    assert xs.read_text(path) == "guest-1"
    binary = bytes(range(256))  # NULs and high bytes are fine in values
    xs.write(f"{home(domid)}/blob", binary)
    assert xs.read(f"{home(domid)}/blob") == binary


def test_write_creates_parents_and_directory_lists_children(xs: XenstoreClient, domid: int) -> None:
    for n in range(3):
        xs.write(f"{home(domid)}/cpu/{n}/availability", "online")
    assert sorted(xs.directory(f"{home(domid)}/cpu")) == ["0", "1", "2"]
    assert xs.directory(f"{home(domid)}/cpu/0") == ["availability"]
    assert xs.directory(f"{home(domid)}/cpu/0/availability") == []


def test_missing_node_is_enoent(xs: XenstoreClient, domid: int) -> None:
    with pytest.raises(XenstoreError) as info:
        xs.read(f"{home(domid)}/nothing")
    assert info.value.errno == errno.ENOENT == 2
    assert info.value.name == "ENOENT"
    assert f"{home(domid)}/nothing" in str(info.value)
    assert isinstance(info.value, DaemonError)
    assert xs.try_read(f"{home(domid)}/nothing") is None
    assert not xs.exists(f"{home(domid)}/nothing")
    with pytest.raises(XenstoreError) as info2:
        xs.directory(f"{home(domid)}/nothing")
    assert info2.value.errno == errno.ENOENT


def test_mkdir_and_rm(xs: XenstoreClient, domid: int) -> None:
    xs.mkdir(f"{home(domid)}/empty")
    assert xs.read(f"{home(domid)}/empty") == b""
    xs.write(f"{home(domid)}/cpu/0/availability", "online")
    xs.rm(home(domid))
    assert not xs.exists(f"{home(domid)}/cpu/0/availability")
    assert not xs.exists(home(domid))


def test_directory_reply_longer_than_4096_bytes(xs: XenstoreClient, domid: int) -> None:
    """oxenstored answers a big DIRECTORY in one reply over 4096 bytes (it has no
    DIRECTORY_PART): the client must not cap replies at the request limit."""
    names = [f"n{i:04d}" for i in range(1200)]  # 1200 * 6 = 7200 bytes of reply

    def fill(tx: Transaction) -> None:
        for name in names:
            tx.write(f"{home(domid)}/many/{name}", "")

    xs.transaction(fill)
    assert sorted(xs.directory(f"{home(domid)}/many")) == names


def test_get_domain_path(xs: XenstoreClient) -> None:
    assert xs.get_domain_path(5) == "/local/domain/5"


def test_relative_paths_are_relative_to_dom0_home(xs: XenstoreClient) -> None:
    xs.write("xenvcpu-test/rel", "1")
    assert xs.read("/local/domain/0/xenvcpu-test/rel") == b"1"
    xs.rm("xenvcpu-test")


def test_xenstored_path_environment_variable(
    xenstored_path: str, monkeypatch: pytest.MonkeyPatch, domid: int
) -> None:
    monkeypatch.setenv("XENSTORED_PATH", xenstored_path)
    with XenstoreClient(timeout=2) as client:
        assert client.endpoint == xenstored_path
        client.write(f"{home(domid)}/x", "y")
        assert client.read(f"{home(domid)}/x") == b"y"
    assert client.closed
    with pytest.raises(XenstoreError, match="closed"):
        client.read(f"{home(domid)}/x")


def test_error_reply_leaves_connection_usable(xs: XenstoreClient, domid: int) -> None:
    with pytest.raises(XenstoreError):
        xs.read(f"{home(domid)}/missing")
    xs.write(f"{home(domid)}/after", "ok")
    assert xs.read(f"{home(domid)}/after") == b"ok"


# ------------------------------------------------------------------ limits and path rules


def test_payload_of_exactly_4096_bytes_goes_through(xs: XenstoreClient, domid: int) -> None:
    path = f"{home(domid)}/big"
    value = b"v" * (PAYLOAD_MAX - len(path) - 1)  # path + NUL + value == 4096
    xs.write(path, value)
    assert xs.read(path) == value


def test_payload_over_4096_is_refused_before_sending(xs: XenstoreClient, domid: int) -> None:
    path = f"{home(domid)}/big"
    value = b"v" * (PAYLOAD_MAX - len(path))  # one byte too many
    with pytest.raises(XenstoreError) as info:
        xs.write(path, value)
    assert info.value.errno == errno.E2BIG
    assert "4096" in str(info.value) and "nothing was sent" in str(info.value)
    # xenstored would have dropped the connection had it been sent (xen-interfaces.md §5.2): it is
    # alive
    assert not xs.exists(path)
    xs.write(path, "small")
    assert xs.read(path) == b"small"


@pytest.mark.parametrize(
    "bad",
    ["/local/domain/1/a b", "/local/domain/1/a.b", "/local//domain", "/local/domain/", "/é"],
)
def test_invalid_paths_refused_locally_and_xenstored_agrees(xs: XenstoreClient, bad: str) -> None:
    with pytest.raises(XenstoreError) as info:
        xs.write(bad, "x")
    assert info.value.errno == errno.EINVAL
    assert "invalid xenstore path" in str(info.value)
    # The same request sent raw, bypassing the check: the real daemon refuses it too.
    with pytest.raises(XenstoreError) as raw:
        xs._request(Op.WRITE, bad.encode() + b"\0x")
    assert raw.value.errno == errno.EINVAL


def test_too_long_paths_refused_locally(xs: XenstoreClient) -> None:
    with pytest.raises(XenstoreError) as info:
        xs.read("/" + "a" * 3072)  # 3073 bytes absolute
    assert info.value.errno == errno.E2BIG and "3072" in str(info.value)
    with pytest.raises(XenstoreError) as info:
        xs.read("a" * 2049)  # relative
    assert info.value.errno == errno.E2BIG and "2048" in str(info.value)


def test_oxenstored_is_stricter_on_long_absolute_paths(xs: XenstoreClient) -> None:
    """2049..3072-byte absolute paths pass our check (C xenstored's rule) and
    oxenstored answers EINVAL: an ordinary error, the connection stays."""
    with pytest.raises(XenstoreError) as info:
        xs.write("/" + "a" * 2100, "x")
    assert info.value.errno == errno.EINVAL
    assert "invalid xenstore path" not in str(info.value)  # it came from the daemon
    assert xs.get_domain_path(1) == "/local/domain/1"


# ------------------------------------------------------------------ transactions


def test_transaction_is_invisible_until_commit(
    xs: XenstoreClient, xs2: XenstoreClient, domid: int
) -> None:
    path = f"{home(domid)}/tx"
    tx = xs.transaction_start()
    assert tx > 0
    xs.write(path, "inside", tx=tx)
    assert xs.read(path, tx=tx) == b"inside"
    assert xs2.try_read(path) is None
    xs.transaction_end(tx, commit=True)
    assert xs2.read(path) == b"inside"


def test_transaction_abort_discards(xs: XenstoreClient, domid: int) -> None:
    path = f"{home(domid)}/tx"
    tx = xs.transaction_start()
    xs.write(path, "inside", tx=tx)
    xs.transaction_end(tx, commit=False)
    assert xs.try_read(path) is None


def test_overlapping_transactions_second_commit_gets_eagain(
    xs: XenstoreClient, xs2: XenstoreClient, domid: int
) -> None:
    path = f"{home(domid)}/counter"
    xs.write(path, "0")
    t1 = xs.transaction_start()
    t2 = xs2.transaction_start()
    xs.read(path, tx=t1)
    xs2.read(path, tx=t2)
    xs.write(path, "from-1", tx=t1)
    xs2.write(path, "from-2", tx=t2)
    xs.transaction_end(t1)
    with pytest.raises(XenstoreError) as info:
        xs2.transaction_end(t2)
    assert info.value.errno == errno.EAGAIN and info.value.name == "EAGAIN"
    assert xs.read(path) == b"from-1"


def test_transaction_helper_retries_whole_body_on_conflict(
    xs: XenstoreClient, xs2: XenstoreClient, domid: int
) -> None:
    path = f"{home(domid)}/counter"
    xs.write(path, "10")
    attempts: list[int] = []

    def increment(tx: Transaction) -> int:
        attempts.append(tx.attempt)
        value = int(tx.read(path))
        if tx.attempt == 1:
            xs2.write(path, "100")  # another toolstack commits in between
        tx.write(path, str(value + 1))
        return value

    seen = xs.transaction(increment)
    assert attempts == [1, 2]
    assert seen == 100  # the retry read the other writer's value...
    assert xs.read(path) == b"101"  # ...so no update was lost


def test_transaction_helper_gives_up_after_max_attempts(
    xs: XenstoreClient, xs2: XenstoreClient, domid: int
) -> None:
    path = f"{home(domid)}/hot"
    xs.write(path, "0")
    calls = 0

    def always_conflicts(tx: Transaction) -> None:
        nonlocal calls
        calls += 1
        tx.read(path)
        xs2.write(path, str(calls))
        tx.write(path, "mine")

    with pytest.raises(XenstoreError) as info:
        xs.transaction(always_conflicts, max_attempts=3)
    assert calls == 3
    assert info.value.errno == errno.EAGAIN
    assert "3 attempts" in str(info.value)
    assert xs.read(path) == b"3"  # none of our writes landed


def test_transaction_helper_aborts_on_other_errors(xs: XenstoreClient, domid: int) -> None:
    path = f"{home(domid)}/partial"

    def body(tx: Transaction) -> None:
        tx.write(path, "half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        xs.transaction(body)
    assert xs.try_read(path) is None

    def enoent(tx: Transaction) -> None:
        tx.write(path, "half")
        tx.read(f"{home(domid)}/missing")

    with pytest.raises(XenstoreError) as info:
        xs.transaction(enoent)
    assert info.value.errno == errno.ENOENT
    assert xs.try_read(path) is None


# ------------------------------------------------------------------ watches


def test_watch_fires_immediately_then_on_change(
    xs: XenstoreClient, xs2: XenstoreClient, domid: int
) -> None:
    base = f"{home(domid)}/cpu"
    xs2.write(f"{base}/0/availability", "online")
    token = xs.watch(base, "tok-1")
    assert token == "tok-1"
    # the initial firing (xen-interfaces.md §5.3)
    assert xs.read_watch(2) == WatchEvent(base, "tok-1")
    assert xs.read_watch(0.2) is None
    xs2.write(f"{base}/1/availability", "offline")
    assert xs.read_watch(2) == WatchEvent(f"{base}/1/availability", "tok-1")
    xs.unwatch(base, "tok-1")
    xs2.write(f"{base}/1/availability", "online")
    assert xs.read_watch(0.3) is None


def test_watch_events_arriving_between_replies_are_queued(
    xs: XenstoreClient, xs2: XenstoreClient, domid: int
) -> None:
    base = home(domid)
    xs2.write(f"{base}/a", "1")
    with xs.watching(base) as token:
        assert xs.read_watch(2) == WatchEvent(base, token)
        xs2.write(f"{base}/a", "2")
        xs2.write(f"{base}/b", "3")
        # The events reach our socket before the reply to this READ: they get queued.
        assert xs.read(f"{base}/a") == b"2"
        assert xs.pending_events() == [
            WatchEvent(f"{base}/a", token),
            WatchEvent(f"{base}/b", token),
        ]
        assert xs.read_watch(0) == WatchEvent(f"{base}/a", token)
        assert xs.read_watch(0) == WatchEvent(f"{base}/b", token)
        assert xs.read_watch(0) is None


def test_event_flood_from_a_real_daemon_is_bounded(
    xenstored_path: str, xs2: XenstoreClient, domid: int
) -> None:
    """oxenstored fires one event per write: a watcher that does not read them keeps the
    newest ``max_events`` and counts the rest; it then re-reads the nodes themselves."""
    base = home(domid)
    with XenstoreClient(xenstored_path, timeout=5, max_events=4) as xs:
        token = xs.watch(base)
        for n in range(20):
            xs2.write(f"{base}/n{n}", str(n))
        xs.read(f"{base}/n19")  # a round trip after the writes: their events are in
        assert len(xs.pending_events()) == 4
        assert xs.dropped_events == 17  # 20 writes + the initial firing - 4 kept
        assert xs.read_watch(0) == WatchEvent(f"{base}/n16", token)
        assert sorted(xs.directory(base)) == sorted(f"n{n}" for n in range(20))


def test_special_watch_path(xs: XenstoreClient) -> None:
    token = xs.watch("@releaseDomain")
    assert xs.read_watch(2) == WatchEvent("@releaseDomain", token)
    xs.unwatch("@releaseDomain", token)


def test_read_watch_times_out_quickly(xs: XenstoreClient, domid: int) -> None:
    xs.watch(home(domid), "t")
    assert xs.read_watch(2) is not None
    start = time.monotonic()
    assert xs.read_watch(0.25) is None
    assert 0.2 <= time.monotonic() - start < 2


# ------------------------------------------------------------------ privileges


def _copy_pure_python_package(dest: Path) -> None:
    """xenvcpu.errors, xenvcpu._limits (the shared caps) and xenvcpu.daemon alone, with an
    empty package __init__: also shows that the xenstore client needs neither the native
    module nor anything else."""
    pkg = dest / "xenvcpu"
    (pkg / "daemon").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for name in ("errors.py", "_limits.py"):
        shutil.copy(PYTHON_SRC / "xenvcpu" / name, pkg / name)
    for src in (PYTHON_SRC / "xenvcpu" / "daemon").glob("*.py"):
        shutil.copy(src, pkg / "daemon" / src.name)
    for p in [dest, *dest.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a process as 'nobody'")
def test_non_root_gets_permission_denied_naming_the_fix(xenstored_path: str) -> None:
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        pytest.skip("no /usr/bin/python3 that user 'nobody' can run")
    code = (
        "import sys\n"
        "from xenvcpu.daemon.xenstore import XenstoreClient\n"
        "from xenvcpu.errors import PermissionDenied\n"
        "try:\n"
        f"    XenstoreClient({xenstored_path!r}, timeout=2)\n"
        "except PermissionDenied as e:\n"
        "    print('DENIED', e.errno, e)\n"
        "    sys.exit(0)\n"
        "sys.exit('connected although not root')\n"
    )
    tmp = Path(tempfile.mkdtemp(prefix="xenvcpu-nobody-", dir="/tmp"))
    try:
        _copy_pure_python_package(tmp)
        out = subprocess.run(
            [python, "-c", code],
            env={"PYTHONPATH": str(tmp), "PATH": "/usr/bin:/bin"},
            user="nobody",
            cwd="/",
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        shutil.rmtree(tmp)
    assert out.returncode == 0, out.stderr + out.stdout
    assert out.stdout.startswith(f"DENIED {errno.EACCES} ")
    assert "run as root" in out.stdout
    assert issubclass(PermissionDenied, PermissionError)


def test_probe_endpoints(xenstored_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XENSTORED_PATH", xenstored_path)
    assert probe_endpoints() == [
        EndpointStatus(xenstored_path, "socket", True, "xenstored answered (/local/domain/0)")
    ]
    monkeypatch.setenv("XENSTORED_PATH", xenstored_path + ".missing")
    [status] = probe_endpoints()
    assert (status.kind, status.ok) == ("missing", False)
