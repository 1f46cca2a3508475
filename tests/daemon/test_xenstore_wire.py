"""Wire-level behaviour of the xenstore client against a scripted peer (xs_script.py).

These are the cases a healthy xenstored does not produce on demand: a daemon that does
not answer, late replies to abandoned requests, replies split into single bytes, unknown
error names, a peer that hangs up, and the xenbus-device (plain fd) transport.
"""

from __future__ import annotations

import errno
import math
import os
import socket
import struct
import time
from pathlib import Path

import pytest

from xenvcpu._limits import MAX_XS_EVENT, MAX_XS_EVENTS, MAX_XS_MESSAGE
from xenvcpu.daemon import xenstore
from xenvcpu.daemon.xenstore import Op, WatchEvent, XenstoreClient, validate_path
from xenvcpu.errors import XenstoreError

from .xs_script import PairServer, Peer, ScriptedServer


def ok(peer: Peer, rid: int, op: Op, tx: int = 0) -> None:
    peer.send(op, rid, tx, b"OK\0")


def wait_for_hangup(peer: Peer) -> None:
    try:
        peer.recv()
    except (EOFError, OSError):
        return
    raise AssertionError("client sent something unexpected")


def test_request_header_and_payload_encoding(tmp_path: Path) -> None:
    seen: list[tuple[int, int, int, bytes]] = []

    def script(peer: Peer) -> None:
        for _ in range(4):
            msg = peer.recv()
            seen.append(msg)
            mtype, rid, tx, _ = msg
            if mtype == Op.TRANSACTION_START:
                peer.send(Op.TRANSACTION_START, rid, 0, b"42\0")
            else:
                ok(peer, rid, Op(mtype), tx)
        wait_for_hangup(peer)

    server = ScriptedServer(str(tmp_path / "sock"), script)
    with XenstoreClient(server.path, timeout=5) as xs:
        assert xs.transaction_start() == 42
        xs.write("/a/b", "val", tx=42)
        xs.watch("/a", "tk")
        xs.transaction_end(42, commit=False)
    server.close()
    assert [(m[0], m[2], m[3]) for m in seen] == [
        (Op.TRANSACTION_START, 0, b"\0"),
        (Op.WRITE, 42, b"/a/b\0val"),
        (Op.WATCH, 0, b"/a\0tk\0"),
        (Op.TRANSACTION_END, 42, b"F\0"),
    ]
    rids = [m[1] for m in seen]
    assert len(set(rids)) == 4 and 0 not in rids  # distinct, never 0 (events use 0)


def test_silent_daemon_times_out_and_late_reply_is_dropped(tmp_path: Path) -> None:
    """A request that timed out gets its reply later: it must not be taken as the
    reply to the next request (replies are matched by req_id, xen-interfaces.md §5.3)."""

    def script(peer: Peer) -> None:
        _, rid1, _, _ = peer.recv()  # READ /slow: no answer for now
        _, rid2, _, _ = peer.recv()  # READ /fast
        peer.send(Op.READ, rid1, 0, b"stale")  # the late reply to the first request
        peer.send(Op.WATCH_EVENT, 0, 0, b"/w\0tok\0")
        reply = struct.pack("<4I", Op.READ, rid2, 0, 5) + b"fresh"
        for i in range(len(reply)):  # one byte at a time
            peer.send_raw(reply[i : i + 1])
        wait_for_hangup(peer)

    server = ScriptedServer(str(tmp_path / "sock"), script)
    with XenstoreClient(server.path, timeout=0.4) as xs:
        start = time.monotonic()
        with pytest.raises(XenstoreError) as info:
            xs.read("/slow")
        elapsed = time.monotonic() - start
        assert info.value.errno == errno.ETIMEDOUT and info.value.name == "ETIMEDOUT"
        assert "did not answer READ /slow within 0.4 s" in str(info.value)
        assert 0.35 <= elapsed < 2
        xs.timeout = 5
        assert xs.read("/fast") == b"fresh"
        assert xs.read_watch(0) == WatchEvent("/w", "tok")
    server.close()


@pytest.mark.parametrize(
    ("name", "number"),
    [
        ("ENOENT", errno.ENOENT),
        ("EACCES", errno.EACCES),
        ("E2BIG", errno.E2BIG),
        ("EQUOTA", errno.EDQUOT),
        ("EWHATEVER", None),
    ],
)
def test_error_names_map_to_errno(tmp_path: Path, name: str, number: int | None) -> None:
    def script(peer: Peer) -> None:
        _, rid, _, _ = peer.recv()
        peer.send(Op.ERROR, rid, 0, name.encode() + b"\0")
        wait_for_hangup(peer)

    server = ScriptedServer(str(tmp_path / "sock"), script)
    with XenstoreClient(server.path, timeout=5) as xs, pytest.raises(XenstoreError) as info:
        xs.read("/x")
    server.close()
    assert info.value.errno == number
    assert info.value.name == name
    assert name in str(info.value)


def test_every_protocol_error_name_has_an_errno() -> None:
    for name in xenstore.ERROR_NAMES:  # xen-interfaces.md §5.3
        assert isinstance(getattr(errno, name), int)


def test_unexpected_reply_type_is_an_error(tmp_path: Path) -> None:
    def script(peer: Peer) -> None:
        _, rid, _, _ = peer.recv()
        peer.send(Op.DIRECTORY, rid, 0, b"a\0")
        wait_for_hangup(peer)

    server = ScriptedServer(str(tmp_path / "sock"), script)
    with XenstoreClient(server.path, timeout=5) as xs:
        with pytest.raises(XenstoreError) as info:
            xs.read("/x")
        assert xs.closed  # the daemon is not answering what we asked: out of step
    server.close()
    assert info.value.errno == errno.EIO
    assert "unexpected reply type" in str(info.value)


def test_peer_hanging_up_mid_reply(tmp_path: Path) -> None:
    def script(peer: Peer) -> None:
        _, rid, _, _ = peer.recv()
        peer.send_raw(struct.pack("<4I", Op.READ, rid, 0, 100) + b"only part")

    server = ScriptedServer(str(tmp_path / "sock"), script)
    xs = XenstoreClient(server.path, timeout=5)
    with pytest.raises(XenstoreError) as info:
        xs.read("/x")
    server.close()
    assert info.value.errno == errno.ECONNRESET
    assert xs.closed
    with pytest.raises(XenstoreError, match="closed"):
        xs.read("/x")


def test_oversized_payload_sends_nothing(tmp_path: Path) -> None:
    received: list[int] = []

    def script(peer: Peer) -> None:
        try:
            while True:
                received.append(peer.recv()[0])
        except EOFError:
            return

    server = ScriptedServer(str(tmp_path / "sock"), script)
    with XenstoreClient(server.path, timeout=5) as xs:
        with pytest.raises(XenstoreError) as info:
            xs.write("/p", b"x" * 4094)  # 3 + 4094 > 4096
        assert info.value.errno == errno.E2BIG
        with pytest.raises(XenstoreError):
            xs.watch("/p", "t" * 4093)
        with pytest.raises(XenstoreError):
            xs.read("/bad path")
    server.close()
    assert received == []


def test_xenbus_device_transport_over_an_fd() -> None:
    """/dev/xen/xenbus is a plain fd (no socket timeouts): poll() provides them."""

    def script(peer: Peer) -> None:
        mtype, rid, _, payload = peer.recv()
        assert (mtype, payload) == (Op.DIRECTORY, b"/local/domain\0")
        peer.send(Op.DIRECTORY, rid, 0, b"0\x003\0")
        peer.recv()  # READ: never answered
        wait_for_hangup(peer)

    pair = PairServer(script)
    xs = XenstoreClient.from_fd(pair.detach_client_fd(), name="/dev/xen/xenbus", timeout=0.3)
    try:
        assert xs.directory("/local/domain") == ["0", "3"]
        start = time.monotonic()
        with pytest.raises(XenstoreError) as info:
            xs.read("/x")
        assert info.value.errno == errno.ETIMEDOUT
        assert "/dev/xen/xenbus" in str(info.value)
        assert time.monotonic() - start < 2
    finally:
        xs.close()
    pair.close()


# ------------------------------------------------------------------ endpoints


def test_candidate_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XENSTORED_PATH", raising=False)
    monkeypatch.delenv("XENSTORED_RUNDIR", raising=False)
    assert xenstore.candidate_endpoints() == [
        "/run/xenstored/socket",
        "/var/run/xenstored/socket",
        "/dev/xen/xenbus",
        "/proc/xen/xenbus",
    ]
    monkeypatch.setenv("XENSTORED_RUNDIR", "/srv/xs")
    assert xenstore.candidate_endpoints()[0] == "/srv/xs/socket"
    monkeypatch.setenv("XENSTORED_PATH", "/tmp/only")
    assert xenstore.candidate_endpoints() == ["/tmp/only"]  # also overrides the device


def test_no_endpoint_at_all(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = [str(tmp_path / "a"), str(tmp_path / "b")]
    monkeypatch.setattr(xenstore, "candidate_endpoints", lambda: missing)
    with pytest.raises(XenstoreError) as info:
        XenstoreClient()
    assert info.value.errno == errno.ENOENT
    assert missing[0] in str(info.value) and "XENSTORED_PATH" in str(info.value)


def test_explicit_missing_path(tmp_path: Path) -> None:
    with pytest.raises(XenstoreError) as info:
        XenstoreClient(str(tmp_path / "nope"))
    assert info.value.errno == errno.ENOENT


def test_stale_socket_is_reported(tmp_path: Path) -> None:
    path = str(tmp_path / "stale")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(path)  # bound, never listening: like a socket left by a dead xenstored
        with pytest.raises(XenstoreError) as info:
            XenstoreClient(path)
    assert info.value.errno == errno.ECONNREFUSED
    assert "is xenstored running?" in str(info.value)


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf, -math.inf, 1e300, 86401])
def test_timeout_must_be_finite_and_positive(tmp_path: Path, bad: float) -> None:
    with pytest.raises(ValueError, match="xenstore client timeout"):
        XenstoreClient(str(tmp_path / "x"), timeout=bad)  # refused before looking
    a, b = socket.socketpair()
    with pytest.raises(ValueError):
        XenstoreClient.from_fd(a.fileno(), timeout=bad)
    with XenstoreClient.from_fd(a.detach(), timeout=1) as xs:
        with pytest.raises(ValueError):
            xs.timeout = bad
        assert xs.timeout == 1
    b.close()


@pytest.mark.parametrize("bad", [True, "1", None])
def test_timeout_must_be_a_number(tmp_path: Path, bad: object) -> None:
    with pytest.raises(TypeError):
        XenstoreClient(str(tmp_path / "x"), timeout=bad)  # type: ignore[arg-type]


# ------------------------------------------------------------ path rules (xen-interfaces.md §5.2)


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/local/domain/0/cpu/3/availability",
        "relative/node",
        "@releaseDomain",
        "/a-b_c@d",
        "/" + "a" * 3071,
        "b" * 2048,
    ],
)
def test_valid_paths(path: str) -> None:
    assert validate_path(path) == path.encode()


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("", errno.EINVAL),
        ("/a b", errno.EINVAL),
        ("/a\0b", errno.EINVAL),
        ("/a.b", errno.EINVAL),
        ("/ä", errno.EINVAL),
        ("//a", errno.EINVAL),
        ("/a/", errno.EINVAL),
        ("/" + "a" * 3072, errno.E2BIG),
        ("b" * 2049, errno.E2BIG),
    ],
)
def test_invalid_paths(path: str, code: int) -> None:
    with pytest.raises(XenstoreError) as info:
        validate_path(path)
    assert info.value.errno == code


def test_path_must_be_str() -> None:
    with pytest.raises(TypeError):
        validate_path(b"/a")  # type: ignore[arg-type]


def test_fd_is_closed_with_the_client() -> None:
    a, b = socket.socketpair()
    fd = a.detach()
    xs = XenstoreClient.from_fd(fd)
    xs.close()
    xs.close()  # idempotent
    with pytest.raises(OSError):
        os.fstat(fd)
    b.close()


def test_transaction_start_refused_with_eagain_is_retried(tmp_path: Path) -> None:
    seen: list[tuple[int, int, bytes]] = []

    def script(peer: Peer) -> None:
        _, rid, _, _ = peer.recv()
        peer.send(Op.ERROR, rid, 0, b"EAGAIN\0")
        for reply in (b"5\0", b"OK\0", b"OK\0"):
            mtype, rid, tx, payload = peer.recv()
            seen.append((mtype, tx, payload))
            peer.send(mtype, rid, tx, reply)
        wait_for_hangup(peer)

    server = ScriptedServer(str(tmp_path / "sock"), script)
    attempts: list[int] = []
    with XenstoreClient(server.path, timeout=5) as xs:

        def body(tx: xenstore.Transaction) -> str:
            attempts.append(tx.attempt)
            tx.write("/n", "v")
            return "done"

        assert xs.transaction(body) == "done"
    server.close()
    assert attempts == [2]
    assert seen == [
        (Op.TRANSACTION_START, 0, b"\0"),
        (Op.WRITE, 5, b"/n\0v"),
        (Op.TRANSACTION_END, 5, b"T\0"),
    ]


def test_transaction_body_timeout_does_not_wait_twice(tmp_path: Path) -> None:
    def script(peer: Peer) -> None:
        _, rid, _, _ = peer.recv()
        peer.send(Op.TRANSACTION_START, rid, 0, b"9\0")
        peer.recv()  # the READ inside the body: never answered
        wait_for_hangup(peer)

    server = ScriptedServer(str(tmp_path / "sock"), script)
    with XenstoreClient(server.path, timeout=0.3) as xs:
        start = time.monotonic()
        with pytest.raises(XenstoreError) as info:
            xs.transaction(lambda tx: tx.read("/slow"))
        assert info.value.errno == errno.ETIMEDOUT
        assert time.monotonic() - start < 0.55  # no second wait for an abort reply
    server.close()


def test_probe_reports_stale_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "stale")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(path)
        monkeypatch.setenv("XENSTORED_PATH", path)
        [status] = xenstore.probe_endpoints()
    assert (status.path, status.kind, status.ok) == (path, "socket", False)
    assert "is xenstored running?" in status.detail


# ------------------------------------------------------------------ hostile peers


def hold(peer: Peer) -> None:
    """Keep the connection open, reading whatever comes, until the client hangs up."""
    try:
        while True:
            peer.recv()
    except (EOFError, OSError):
        return


def test_timeout_with_a_partial_frame_closes_the_connection(tmp_path: Path) -> None:
    """A reply that stops half-way cannot be framed any more: had the connection stayed
    open, the rest of the stream (the next replies) would be read as the rest of this
    message and every later request would time out although the daemon answered."""

    def script(peer: Peer) -> None:
        _, rid, _, _ = peer.recv()
        peer.send_raw(struct.pack("<4I", Op.READ, rid, 0, 100) + b"only part")
        # a later request would be answered properly: the client must not wait for it
        try:
            _, rid2, _, _ = peer.recv()
        except (EOFError, OSError):
            return
        peer.send(Op.READ, rid2, 0, b"fresh")
        wait_for_hangup(peer)

    server = ScriptedServer(str(tmp_path / "sock"), script)
    xs = XenstoreClient(server.path, timeout=0.3)
    start = time.monotonic()
    with pytest.raises(XenstoreError) as info:
        xs.read("/x")
    assert time.monotonic() - start < 2
    assert info.value.errno == errno.ETIMEDOUT
    assert "middle of a message" in str(info.value) and "connection closed" in str(info.value)
    assert xs.closed
    start = time.monotonic()
    with pytest.raises(XenstoreError, match="closed") as info:
        xs.read("/y")  # at once, not after another timeout
    assert info.value.errno == errno.EIO and time.monotonic() - start < 0.1
    server.close()


def test_timeout_with_a_partial_header_over_the_xenbus_fd() -> None:
    def script(peer: Peer) -> None:
        peer.recv()
        peer.send_raw(b"\x02\x00\x00")  # three bytes of a header
        wait_for_hangup(peer)

    pair = PairServer(script)
    xs = XenstoreClient.from_fd(pair.detach_client_fd(), name="/dev/xen/xenbus", timeout=0.2)
    with pytest.raises(XenstoreError) as info:
        xs.read("/x")
    assert info.value.errno == errno.ETIMEDOUT and xs.closed
    pair.close()


@pytest.mark.parametrize(
    ("mtype", "length", "cap"),
    [
        (Op.READ, MAX_XS_MESSAGE + 1, MAX_XS_MESSAGE),
        (Op.WATCH_EVENT, MAX_XS_EVENT + 1, MAX_XS_EVENT),
        (Op.READ, 0xFFFFFFFF, MAX_XS_MESSAGE),
    ],
)
def test_oversized_length_closes_before_reading_it(
    tmp_path: Path, mtype: int, length: int, cap: int
) -> None:
    def script(peer: Peer) -> None:
        _, rid, _, _ = peer.recv()
        peer.send_raw(struct.pack("<4I", mtype, rid, 0, length))
        wait_for_hangup(peer)

    server = ScriptedServer(str(tmp_path / "sock"), script)
    xs = XenstoreClient(server.path, timeout=5)
    start = time.monotonic()
    with pytest.raises(XenstoreError) as info:
        xs.read("/x")
    assert time.monotonic() - start < 1  # refused from the header: nothing awaited
    assert info.value.errno == errno.EIO
    assert f"{length} bytes, over the limit of {cap}" in str(info.value)
    assert xs.closed
    server.close()


def test_reply_to_a_request_never_sent_closes(tmp_path: Path) -> None:
    def script(peer: Peer) -> None:
        _, rid, _, _ = peer.recv()
        peer.send(Op.READ, rid + 1000, 0, b"whose?")
        wait_for_hangup(peer)

    server = ScriptedServer(str(tmp_path / "sock"), script)
    xs = XenstoreClient(server.path, timeout=5)
    with pytest.raises(XenstoreError, match="out of step") as info:
        xs.read("/x")
    assert info.value.errno == errno.EIO and xs.closed
    server.close()


def test_duplicate_late_reply_closes(tmp_path: Path) -> None:
    """Only ONE late reply per abandoned request is dropped: a second copy is a stream
    out of step."""

    def script(peer: Peer) -> None:
        _, rid1, _, _ = peer.recv()  # abandoned
        _, rid2, _, _ = peer.recv()
        peer.send(Op.READ, rid1, 0, b"late")
        peer.send(Op.READ, rid2, 0, b"two")
        _, rid3, _, _ = peer.recv()
        peer.send(Op.READ, rid1, 0, b"late again")
        peer.send(Op.READ, rid3, 0, b"three")
        wait_for_hangup(peer)

    server = ScriptedServer(str(tmp_path / "sock"), script)
    xs = XenstoreClient(server.path, timeout=0.2)
    with pytest.raises(XenstoreError):
        xs.read("/1")
    xs.timeout = 5
    assert xs.read("/2") == b"two"
    with pytest.raises(XenstoreError, match="out of step"):
        xs.read("/3")
    assert xs.closed
    server.close()


def test_error_reply_with_a_garbage_name(tmp_path: Path) -> None:
    def script(peer: Peer) -> None:
        _, rid, _, _ = peer.recv()
        peer.send(Op.ERROR, rid, 0, b"\xff" * 3000 + b"\0")
        _, rid, _, _ = peer.recv()
        ok(peer, rid, Op.WRITE)
        wait_for_hangup(peer)

    server = ScriptedServer(str(tmp_path / "sock"), script)
    with XenstoreClient(server.path, timeout=5) as xs:
        with pytest.raises(XenstoreError) as info:
            xs.read("/x")
        assert info.value.errno == errno.EIO and info.value.name == "EIO"
        assert "unknown error name" in str(info.value) and len(str(info.value)) < 300
        xs.write("/x", "ok")  # a well-framed error reply leaves the connection usable
    server.close()


@pytest.mark.parametrize("reply", [b"0\0", b"4294967296\0", b"-1\0", b"\xd9\xa3\0", b"9" * 5000])
def test_bad_transaction_id_from_the_daemon(tmp_path: Path, reply: bytes) -> None:
    def script(peer: Peer) -> None:
        _, rid, _, _ = peer.recv()
        peer.send(Op.TRANSACTION_START, rid, 0, reply)
        wait_for_hangup(peer)

    server = ScriptedServer(str(tmp_path / "sock"), script)
    with XenstoreClient(server.path, timeout=5) as xs, pytest.raises(XenstoreError) as info:
        xs.transaction_start()
    server.close()
    assert info.value.errno == errno.EIO and "bad transaction id" in str(info.value)
    assert len(str(info.value)) < 200


def test_bad_arguments_send_nothing(tmp_path: Path) -> None:
    received: list[int] = []

    def script(peer: Peer) -> None:
        try:
            while True:
                received.append(peer.recv()[0])
        except EOFError:
            return

    server = ScriptedServer(str(tmp_path / "sock"), script)
    with XenstoreClient(server.path, timeout=5) as xs:
        for call in (
            lambda: xs.write("/p", "\ud800"),  # a lone surrogate: not UTF-8
            lambda: xs.watch("/p", "tok\udfff"),
            lambda: xs.read("/p", tx=1 << 32),
            lambda: xs.read("/p", tx=-1),
        ):
            with pytest.raises(XenstoreError) as info:
                call()
            assert info.value.errno == errno.EINVAL
        with pytest.raises(ValueError, match=r"0\.\.65535"):
            xs.get_domain_path(1 << 70)
        with pytest.raises(ValueError, match="max_attempts"):
            xs.transaction(lambda tx: None, max_attempts=10**9)
        with pytest.raises(ValueError, match="backoff"):
            xs.transaction(lambda tx: None, backoff=math.nan)
        with pytest.raises(ValueError, match="max_entries"):
            xs.directory("/p", max_entries=-1)
        with pytest.raises(ValueError, match="max_events"):
            XenstoreClient(server.path, max_events=0)
        assert not xs.closed
    server.close()
    assert received == []


def test_directory_max_entries(tmp_path: Path) -> None:
    def script(peer: Peer) -> None:
        for _ in range(2):
            _, rid, _, _ = peer.recv()
            peer.send(Op.DIRECTORY, rid, 0, b"\0".join(b"%d" % i for i in range(10)) + b"\0")
        wait_for_hangup(peer)

    server = ScriptedServer(str(tmp_path / "sock"), script)
    with XenstoreClient(server.path, timeout=5) as xs:
        assert len(xs.directory("/d", max_entries=10)) == 10
        with pytest.raises(XenstoreError, match="10 entries, more than the 5") as info:
            xs.directory("/d", max_entries=5)
        assert info.value.errno == errno.E2BIG and not xs.closed
    server.close()


# ------------------------------------------------------------------ read_watch


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1, 1e9])
def test_read_watch_timeout_is_validated(bad: float) -> None:
    a, b = socket.socketpair()
    with XenstoreClient.from_fd(a.detach(), timeout=1) as xs:
        with pytest.raises(ValueError, match="read_watch timeout"):
            xs.read_watch(bad)
        assert xs.read_watch(0) is None  # 0 polls
    b.close()


def test_read_watch_lets_a_begun_event_finish() -> None:
    """xenstored writes a header and its payload separately: a poll that catches only the
    header waits (at most the client's timeout) for the rest instead of failing."""
    event = struct.pack("<4I", Op.WATCH_EVENT, 0, 0, 7) + b"/w\0tok\0"

    def script(peer: Peer) -> None:
        peer.send_raw(event[:16])
        time.sleep(0.2)
        peer.send_raw(event[16:])
        wait_for_hangup(peer)

    pair = PairServer(script)
    xs = XenstoreClient.from_fd(pair.detach_client_fd(), timeout=5)
    time.sleep(0.05)
    assert xs.read_watch(0) == WatchEvent("/w", "tok")
    assert not xs.closed
    xs.close()
    pair.close()


def test_read_watch_closes_on_a_message_that_never_ends() -> None:
    def script(peer: Peer) -> None:
        peer.send_raw(struct.pack("<4I", Op.WATCH_EVENT, 0, 0, 100) + b"/w\0")
        wait_for_hangup(peer)

    pair = PairServer(script)
    xs = XenstoreClient.from_fd(pair.detach_client_fd(), timeout=0.3)
    time.sleep(0.05)
    start = time.monotonic()
    with pytest.raises(XenstoreError, match="middle of a message") as info:
        xs.read_watch(0)
    assert info.value.errno == errno.ETIMEDOUT and xs.closed
    assert 0.25 <= time.monotonic() - start < 2  # the client's timeout, not forever
    pair.close()


def test_read_watch_closes_on_a_reply_to_nothing() -> None:
    def script(peer: Peer) -> None:
        peer.send(Op.READ, 77, 0, b"stray")
        wait_for_hangup(peer)

    pair = PairServer(script)
    xs = XenstoreClient.from_fd(pair.detach_client_fd(), timeout=5)
    with pytest.raises(XenstoreError, match="out of step"):
        xs.read_watch(2)
    assert xs.closed
    pair.close()


def test_watch_event_flood_is_bounded_and_counted() -> None:
    """A daemon (or a busy host) sending events faster than they are read cannot grow the
    queue without bound: the oldest are dropped and counted."""

    def script(peer: Peer) -> None:
        _, rid, _, _ = peer.recv()
        for i in range(50):
            peer.send(Op.WATCH_EVENT, 0, 0, b"/w/%d\0tok\0" % i)
        peer.send(Op.READ, rid, 0, b"v")
        hold(peer)

    pair = PairServer(script)
    with XenstoreClient.from_fd(pair.detach_client_fd(), timeout=5, max_events=8) as xs:
        assert xs.read("/x") == b"v"
        assert xs.dropped_events == 42
        assert [e.path for e in xs.pending_events()] == [f"/w/{i}" for i in range(42, 50)]
        assert xs.read_watch(0) == WatchEvent("/w/42", "tok")
        xs.close()
    pair.close()


def test_default_event_queue_cap() -> None:
    a, b = socket.socketpair()
    with XenstoreClient.from_fd(a.detach()) as xs:
        assert xs._events.maxlen == MAX_XS_EVENTS
        assert xs.dropped_events == 0
    b.close()
