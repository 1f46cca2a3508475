"""Wire-level behaviour of the xenstore client against a scripted peer (xs_script.py).

These are the cases a healthy xenstored does not produce on demand: a daemon that does
not answer, late replies to abandoned requests, replies split into single bytes, unknown
error names, a peer that hangs up, and the xenbus-device (plain fd) transport.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import time
from pathlib import Path

import pytest

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
    with XenstoreClient(server.path, timeout=5) as xs, pytest.raises(XenstoreError) as info:
        xs.read("/x")
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


def test_timeout_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        XenstoreClient(str(tmp_path / "x"), timeout=0)


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
