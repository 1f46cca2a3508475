"""QmpClient framing against a fake QMP server on a real unix socket.

Every failure must be a typed error (QmpError with an errno, or QEMU's class and text),
within the timeout, and the connection must be closed exactly when its framing can no
longer be trusted.
"""

from __future__ import annotations

import errno
import json
import math
import pickle
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from xenvcpu.daemon.qmp import QmpClient, QmpEvent, libxl_socket_path
from xenvcpu.errors import DaemonError, QmpError

from .conftest import FakeFactory
from .fake_qmp import Command, Conn

#: Every timeout test must finish within its timeout plus this (scheduling on a busy host).
SLACK = 1.5


def test_handshake_and_execute(fake: FakeFactory) -> None:
    def handler(conn: Conn, cmd: Command) -> None:
        conn.reply(cmd, {"echo": cmd.arguments, "name": cmd.name})

    server = fake(handler)
    with QmpClient(server.path, timeout=2) as qmp:
        assert qmp.version == (7, 2, 0)
        assert qmp.greeting["capabilities"] == ["oob"]
        assert "QEMU 7.2.0 open" in repr(qmp)
        assert qmp.execute("query-status") == {"echo": {}, "name": "query-status"}
        assert qmp.execute("x", {"a": [1, "b"]}) == {"echo": {"a": [1, "b"]}, "name": "x"}
    assert qmp.closed and "closed" in repr(qmp)
    ids = [c.id for c in server.commands]
    assert [c.name for c in server.commands] == ["qmp_capabilities", "query-status", "x"]
    assert len(set(ids)) == 3 and all(isinstance(i, int) for i in ids)
    assert "arguments" not in server.commands[1].raw  # none given, none sent


def test_events_interleaved_are_queued_and_taken_by_name(fake: FakeFactory) -> None:
    def handler(conn: Conn, cmd: Command) -> None:
        conn.event("ACPI_DEVICE_OST", {"info": {"slot": "1"}})
        conn.event("DEVICE_DELETED", {"device": "cpu-1", "path": "/machine/peripheral/cpu-1"})
        conn.reply(cmd, 42)
        conn.event("RESUME")

    server = fake(handler)
    with QmpClient(server.path, timeout=2) as qmp:
        assert qmp.execute("query-x") == 42
        assert [e.name for e in qmp.pending_events()] == ["ACPI_DEVICE_OST", "DEVICE_DELETED"]
        deleted = qmp.wait_event("DEVICE_DELETED", 0)
        assert deleted is not None and deleted.data["device"] == "cpu-1"
        assert isinstance(deleted.timestamp, float) and deleted.timestamp > 1e9
        # RESUME is still on the wire: it is read, the queued OST event is left alone
        resume = qmp.wait_event(["RESUME", "STOP"], 2)
        assert resume is not None and resume == QmpEvent("RESUME", {}, resume.timestamp)
        assert qmp.wait_event("RESUME", 0.05) is None
        assert [e.name for e in qmp.clear_events()] == ["ACPI_DEVICE_OST"]
        assert qmp.pending_events() == []


def test_wait_event_with_a_match_leaves_other_events_queued(fake: FakeFactory) -> None:
    def handler(conn: Conn, cmd: Command) -> None:
        conn.reply(cmd)
        for i in range(3):
            conn.event("DEVICE_DELETED", {"device": f"cpu-{i}"})

    server = fake(handler)
    with QmpClient(server.path, timeout=2) as qmp:
        qmp.execute("go")
        got = qmp.wait_event("DEVICE_DELETED", 2, match=lambda e: e.data["device"] == "cpu-2")
        assert got is not None and got.data == {"device": "cpu-2"}
        assert [e.data["device"] for e in qmp.pending_events()] == ["cpu-0", "cpu-1"]


def test_event_queue_is_bounded(fake: FakeFactory) -> None:
    def handler(conn: Conn, cmd: Command) -> None:
        for i in range(10):
            conn.event("E", {"n": i})
        conn.reply(cmd)

    server = fake(handler)
    with QmpClient(server.path, timeout=2, max_events=3) as qmp:
        qmp.execute("go")
        assert [e.data["n"] for e in qmp.pending_events()] == [7, 8, 9]
        assert qmp.dropped_events == 7


def test_partial_lines_are_reassembled(fake: FakeFactory) -> None:
    def handler(conn: Conn, cmd: Command) -> None:
        data = json.dumps({"return": {"value": "x" * 300}, "id": cmd.id}).encode() + b"\r\n"
        event = b'{"event": "E", "data": {}}\n'
        for piece in (event[:5], event[5:] + data[:7], data[7:100], data[100:]):
            conn.raw(piece)
            time.sleep(0.02)

    server = fake(handler)
    with QmpClient(server.path, timeout=2) as qmp:
        assert qmp.execute("go") == {"value": "x" * 300}
        assert [e.name for e in qmp.pending_events()] == ["E"]


def test_blank_lines_are_ignored(fake: FakeFactory) -> None:
    server = fake(
        lambda conn, cmd: conn.raw(
            b"\r\n\n" + json.dumps({"return": 1, "id": cmd.id}).encode() + b"\n"
        )
    )
    with QmpClient(server.path, timeout=2) as qmp:
        assert qmp.execute("go") == 1


def test_error_reply_is_typed_and_keeps_the_connection(fake: FakeFactory) -> None:
    def handler(conn: Conn, cmd: Command) -> None:
        if cmd.name == "device_del":
            conn.error(cmd, "DeviceNotFound", "Device 'cpu-9' not found")
        else:
            conn.reply(cmd, "ok")

    server = fake(handler)
    with QmpClient(server.path, timeout=2) as qmp:
        with pytest.raises(QmpError) as info:
            qmp.execute("device_del", {"id": "cpu-9"})
        e = info.value
        assert isinstance(e, DaemonError)
        assert (e.qmp_class, e.desc, e.errno) == (
            "DeviceNotFound",
            "Device 'cpu-9' not found",
            None,
        )
        assert "refused device_del (id 'cpu-9'): DeviceNotFound: Device 'cpu-9' not found" in str(e)
        assert server.path in str(e)
        clone = pickle.loads(pickle.dumps(e))
        assert (clone.qmp_class, clone.desc, str(clone)) == (e.qmp_class, e.desc, str(e))
        assert not qmp.closed and qmp.execute("query-status") == "ok"


def test_an_error_without_id_belongs_to_the_command(fake: FakeFactory) -> None:
    server = fake(
        lambda conn, cmd: conn.send(
            {"error": {"class": "GenericError", "desc": "JSON parse error"}}
        )
    )
    with (
        QmpClient(server.path, timeout=2) as qmp,
        pytest.raises(QmpError, match="JSON parse error"),
    ):
        qmp.execute("go")


def test_no_answer_times_out_within_the_timeout_and_the_late_reply_is_dropped(
    fake: FakeFactory,
) -> None:
    late: list[tuple[Conn, Command]] = []

    def handler(conn: Conn, cmd: Command) -> None:
        if cmd.name == "slow":
            late.append((conn, cmd))  # answered later, after the client gave up
        else:
            if late:
                conn.reply(late[0][1], "late")
                conn.event("AFTER")
            conn.reply(cmd, "fresh")

    server = fake(handler)
    with QmpClient(server.path, timeout=2) as qmp:
        t0 = time.monotonic()
        with pytest.raises(QmpError) as info:
            qmp.execute("slow", timeout=0.3)
        took = time.monotonic() - t0
        assert 0.3 <= took < 0.3 + SLACK
        assert info.value.errno == errno.ETIMEDOUT
        assert "did not answer slow within 0.3 s" in str(info.value)
        assert not qmp.closed  # nothing half-read: the stream is still framed
        assert qmp.execute("next") == "fresh"  # the late reply to "slow" was dropped
        assert [e.name for e in qmp.pending_events()] == ["AFTER"]


def test_a_timeout_mid_message_closes_the_connection(fake: FakeFactory) -> None:
    server = fake(lambda conn, cmd: conn.raw(b'{"return": {"half'))
    with QmpClient(server.path, timeout=2) as qmp:
        t0 = time.monotonic()
        with pytest.raises(QmpError) as info:
            qmp.execute("go", timeout=0.3)
        assert time.monotonic() - t0 < 0.3 + SLACK
        assert info.value.errno == errno.ETIMEDOUT
        assert "in the middle of its reply" in str(info.value) and "connection closed" in str(
            info.value
        )
        assert qmp.closed
        with pytest.raises(QmpError, match="is closed") as again:
            qmp.execute("go")
        assert again.value.errno == errno.EPIPE


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"this is not json\n", "not JSON: 'this is not json'"),
        (b"[1, 2]\n", "not an object"),
        (b'{"return": 1, "id": 12345}\n', "reply for id 12345"),
        (b'{"id": 1, "weird": true}\n', "neither 'return' nor 'error'"),
        (b"\xff\xfe\x00garbage\n", "not JSON"),
        (b"[" * 100000 + b"\n", "not JSON"),
    ],
)
def test_garbage_closes_the_connection(fake: FakeFactory, data: bytes, what: str) -> None:
    server = fake(lambda conn, cmd: conn.raw(data))
    with QmpClient(server.path, timeout=2) as qmp:
        with pytest.raises(QmpError) as info:
            qmp.execute("go")
        assert info.value.errno == errno.EPROTO
        assert what in str(info.value) and "connection closed" in str(info.value)
        assert qmp.closed


def test_oversized_messages_close_the_connection(fake: FakeFactory) -> None:
    server = fake(lambda conn, cmd: conn.raw(b'{"return": "' + b"x" * 5000))
    with QmpClient(server.path, timeout=2, max_message=1024) as qmp:
        with pytest.raises(QmpError) as info:
            qmp.execute("go")
        assert info.value.errno == errno.EMSGSIZE and "over 1024 bytes" in str(info.value)
        assert qmp.closed


def test_an_oversized_complete_line_is_refused_too(fake: FakeFactory) -> None:
    line = json.dumps({"return": "x" * 3000, "id": 2}).encode() + b"\n"
    server = fake(lambda conn, cmd: conn.raw(line))
    with QmpClient(server.path, timeout=2, max_message=1024) as qmp:
        with pytest.raises(QmpError) as info:
            qmp.execute("go")
        assert info.value.errno == errno.EMSGSIZE and qmp.closed


def test_an_oversized_command_is_not_sent(fake: FakeFactory) -> None:
    server = fake()
    with QmpClient(server.path, timeout=2, max_message=1024) as qmp:
        with pytest.raises(QmpError, match="nothing was sent") as info:
            qmp.execute("go", {"blob": "y" * 2000})
        assert info.value.errno == errno.EMSGSIZE and not qmp.closed
        with pytest.raises(TypeError, match="not JSON"):
            qmp.execute("go", {"x": object()})
        with pytest.raises(TypeError, match="not JSON"):
            qmp.execute("go", {"x": math.nan})
        qmp.execute("ok")
    assert server.names() == ["ok"]


def test_eof_mid_reply(fake: FakeFactory) -> None:
    def handler(conn: Conn, cmd: Command) -> None:
        conn.raw(b'{"return": [1, 2')
        conn.close()

    server = fake(handler)
    with QmpClient(server.path, timeout=2) as qmp:
        t0 = time.monotonic()
        with pytest.raises(QmpError) as info:
            qmp.execute("go")
        assert time.monotonic() - t0 < 1
        assert info.value.errno == errno.ECONNRESET
        assert "closed the connection in the middle of a message" in str(info.value)
        assert qmp.closed


def test_eof_before_the_reply(fake: FakeFactory) -> None:
    server = fake(lambda conn, cmd: conn.close())
    with QmpClient(server.path, timeout=2) as qmp:
        with pytest.raises(
            QmpError, match=r"closed the connection \(has the QEMU process exited"
        ) as info:
            qmp.execute("go")
        assert info.value.errno == errno.ECONNRESET


def test_eof_while_waiting_for_an_event(fake: FakeFactory) -> None:
    def handler(conn: Conn, cmd: Command) -> None:
        conn.reply(cmd)
        time.sleep(0.1)
        conn.close()

    server = fake(handler)
    with QmpClient(server.path, timeout=2) as qmp:
        qmp.execute("go")
        with pytest.raises(QmpError) as info:
            qmp.wait_event("DEVICE_DELETED", 2)
        assert info.value.errno == errno.ECONNRESET and qmp.closed


def test_wait_event_times_out_and_keeps_a_partial_message(fake: FakeFactory) -> None:
    def handler(conn: Conn, cmd: Command) -> None:
        conn.reply(cmd)
        conn.raw(b'{"event": "DEVICE_')

    server = fake(handler)
    with QmpClient(server.path, timeout=2) as qmp:
        qmp.execute("go")
        t0 = time.monotonic()
        assert qmp.wait_event("DEVICE_DELETED", 0.2) is None
        assert time.monotonic() - t0 < 0.2 + SLACK
        assert not qmp.closed
        server.conns[0].raw(b'DELETED", "data": {"device": "cpu-1"}}\n')
        event = qmp.wait_event("DEVICE_DELETED", 2)
        assert event is not None and event.data == {"device": "cpu-1"}


def test_a_reply_with_no_command_pending_is_a_broken_stream(fake: FakeFactory) -> None:
    def handler(conn: Conn, cmd: Command) -> None:
        conn.reply(cmd)
        conn.send({"return": {}, "id": 999})

    server = fake(handler)
    with QmpClient(server.path, timeout=2) as qmp:
        qmp.execute("go")
        with pytest.raises(QmpError, match="no command pending"):
            qmp.wait_event(None, 2)
        assert qmp.closed


def test_a_server_that_never_greets(fake: FakeFactory) -> None:
    server = fake(greeting=None)
    t0 = time.monotonic()
    with pytest.raises(QmpError) as info:
        QmpClient(server.path, timeout=0.3)
    assert time.monotonic() - t0 < 0.3 + SLACK
    assert info.value.errno == errno.ETIMEDOUT
    assert "no QMP greeting within 0.3 s" in str(info.value)
    assert "one QMP connection at a time" in str(info.value)


@pytest.mark.parametrize(
    "greeting",
    [b"HTTP/1.1 400 Bad Request\r\n", b'{"hello": 1}\n', b'{"QMP": "x"}\n'],
)
def test_not_a_qmp_monitor(fake: FakeFactory, greeting: bytes) -> None:
    server = fake(greeting=greeting)
    with pytest.raises(QmpError) as info:
        QmpClient(server.path, timeout=1)
    assert info.value.errno == errno.EPROTO


def test_a_greeting_without_version_still_works(fake: FakeFactory) -> None:
    server = fake(greeting=b'{"QMP": {"capabilities": []}}\n')
    with QmpClient(server.path, timeout=1) as qmp:
        assert qmp.version == (0, 0, 0)


def test_qmp_capabilities_refused(fake: FakeFactory) -> None:
    server = fake(
        lambda conn, cmd: conn.error(cmd, "CommandNotFound", "Expecting capabilities"),
        capabilities=False,
    )
    with pytest.raises(QmpError) as info:
        QmpClient(server.path, timeout=1)
    assert info.value.qmp_class == "CommandNotFound" and "qmp_capabilities" in str(info.value)


def test_missing_socket_says_there_is_no_device_model(short_dir: Path) -> None:
    path = str(short_dir / "qmp-libxl-7")
    with pytest.raises(QmpError) as info:
        QmpClient(path, timeout=1)
    e = info.value
    assert e.errno == errno.ENOENT and (e.qmp_class, e.desc) == ("", "")
    assert f"no QMP socket at {path}" in str(e)
    assert "no QEMU device model" in str(e) and "stub domain" in str(e)


def test_stale_socket_is_connection_refused(short_dir: Path) -> None:
    path = str(short_dir / "stale.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.close()  # the file stays, nobody listens
    with pytest.raises(QmpError, match="stale socket") as info:
        QmpClient(path, timeout=1)
    assert info.value.errno == errno.ECONNREFUSED


def test_a_regular_file_is_not_a_socket(short_dir: Path) -> None:
    path = short_dir / "file"
    path.write_text("x")
    with pytest.raises(QmpError) as info:
        QmpClient(path, timeout=1)
    assert info.value.errno == errno.ECONNREFUSED


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf, -math.inf, 1e300, 10**400])
def test_timeouts_must_be_finite_and_positive(short_dir: Path, bad: float) -> None:
    with pytest.raises(ValueError, match="finite and > 0"):
        QmpClient(short_dir / "x", timeout=bad)


@pytest.mark.parametrize("bad", ["1", True, None])
def test_timeouts_must_be_numbers(short_dir: Path, bad: object) -> None:
    with pytest.raises(TypeError, match="number of seconds"):
        QmpClient(short_dir / "x", timeout=bad)  # type: ignore[arg-type]


def test_per_call_timeouts_are_validated(fake: FakeFactory) -> None:
    server = fake()
    with QmpClient(server.path, timeout=1) as qmp:
        with pytest.raises(ValueError):
            qmp.execute("go", timeout=math.inf)
        with pytest.raises(ValueError):
            qmp.wait_event("E", -1)
        assert qmp.wait_event("E", 0) is None  # 0 is allowed for events: just look
        with pytest.raises(ValueError):
            QmpClient(server.path, max_message=10)
        with pytest.raises(ValueError):
            QmpClient(server.path, max_events=0)


def test_one_client_per_thread_is_serialised(fake: FakeFactory) -> None:
    def handler(conn: Conn, cmd: Command) -> None:
        time.sleep(0.01)
        conn.reply(cmd, cmd.arguments["n"])

    server = fake(handler)
    results: dict[int, object] = {}
    with QmpClient(server.path, timeout=5) as qmp:

        def worker(n: int) -> None:
            results[n] = qmp.execute("echo", {"n": n})

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    assert results == {n: n for n in range(8)}


def test_libxl_socket_path() -> None:
    assert libxl_socket_path(7) == "/var/run/xen/qmp-libxl-7"
    assert libxl_socket_path(3, "/run/xen") == "/run/xen/qmp-libxl-3"


def test_works_without_the_native_module(short_dir: Path) -> None:
    """Standard library only: the client runs where xenvcpu._native cannot be loaded."""
    script = textwrap.dedent(
        f"""
        import sys, warnings
        sys.modules["xenvcpu._native"] = None
        warnings.simplefilter("ignore")
        from xenvcpu.daemon.qmp import QmpClient, set_hvm_vcpus
        from xenvcpu.errors import QmpError
        try:
            QmpClient({str(short_dir / "none.sock")!r}, timeout=1)
        except QmpError as e:
            print("typed", e.errno, sys.modules["xenvcpu._native"])
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["typed", str(errno.ENOENT), "None"]
