"""The xend client against hostile replies (xen-interfaces.md §6): replies that drip, bodies
and headers over the caps, broken HTTP, SXP that nests too deep, and numbers out of the
range the field can have. Each must end, in bounded time, in a XendError naming the
limit (or DomainNotFound), never a raw OverflowError, RecursionError or ValueError.

A raw server on a real unix socket plays xend here: it reads one request and then sends
exactly the bytes a test gives it, at the pace the test sets.
"""

from __future__ import annotations

import errno
import math
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xenvcpu._limits import DOMID_FIRST_RESERVED, MAX_SXP_DEPTH, MAX_VCPUS, MAX_XEND_BODY
from xenvcpu._pycpumap import MAX_WIDTH
from xenvcpu.daemon import sxp
from xenvcpu.daemon.xend import XendClient, parse_domain, parse_node_info, parse_vcpuinfo
from xenvcpu.errors import DomainNotFound, XendError

from .test_sxp_fuzz import mutated

Reply = Callable[[socket.socket], None]


class RawXend:
    """Accept connections on ``path``; answer each request with ``reply(conn)``."""

    def __init__(self, path: str, reply: Reply) -> None:
        self.path = path
        self.reply = reply
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(4)
        self.listener.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                try:
                    data = b""
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    self.reply(conn)
                except OSError:
                    pass  # the client gave up: expected in these tests

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.listener.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[Reply], str]]:
    servers: list[RawXend] = []

    def start(reply: Reply) -> str:
        server = RawXend(str(tmp_path / f"xend-{len(servers)}"), reply)
        servers.append(server)
        return server.path

    yield start
    for server in servers:
        server.close()


def send(data: bytes) -> Reply:
    def reply(conn: socket.socket) -> None:
        conn.sendall(data)

    return reply


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/sxp\r\nContent-Length: %d\r\n%b\r\n%b" % (
        len(body),
        extra,
        body,
    )


def drip(head: bytes, every: float = 0.05) -> Reply:
    """Send ``head`` at once, then one byte every ``every`` seconds, for up to 10 s."""

    def reply(conn: socket.socket) -> None:
        conn.sendall(head)
        for _ in range(int(10 / every)):
            conn.sendall(b"(")
            time.sleep(every)

    return reply


# ------------------------------------------------------------------ the overall deadline


@pytest.mark.parametrize(
    "head",
    [
        b"",  # the status line itself drips
        b"HTTP/1.1 200 OK\r\n",  # a header that never ends
        b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n",  # a body that drips
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",  # a body read until EOF
    ],
)
def test_a_dripping_reply_ends_at_the_deadline(serve: Callable[[Reply], str], head: bytes) -> None:
    """Each byte comes well within the timeout: only an overall deadline ends it."""
    path = serve(drip(head))
    start = time.monotonic()
    with pytest.raises(XendError) as info:
        XendClient(path, timeout=0.4).node_info()
    elapsed = time.monotonic() - start
    assert info.value.errno == errno.ETIMEDOUT
    assert "did not answer within 0.4 s (the whole reply included)" in str(info.value)
    assert 0.35 <= elapsed < 1.5


def test_endless_100_continue_ends_at_the_deadline(serve: Callable[[Reply], str]) -> None:
    def reply(conn: socket.socket) -> None:
        for _ in range(400):
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            time.sleep(0.01)

    path = serve(reply)
    start = time.monotonic()
    with pytest.raises(XendError) as info:
        XendClient(path, timeout=0.3).node_info()
    assert info.value.errno == errno.ETIMEDOUT and time.monotonic() - start < 1.5


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf, 1e300])
def test_timeout_is_finite_and_positive(bad: float) -> None:
    with pytest.raises(ValueError, match="xend client timeout"):
        XendClient("/x", timeout=bad)


def test_timeout_type_and_address_are_checked() -> None:
    with pytest.raises(TypeError):
        XendClient("/x", timeout="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"1\.\.65535"):
        XendClient(("localhost", 70000))  # was an OverflowError at the first request
    with pytest.raises(TypeError):
        XendClient(("localhost",))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        XendClient(b"/x")  # type: ignore[arg-type]


# ------------------------------------------------------------------ sizes


def test_content_length_over_the_cap_is_refused_before_reading(
    serve: Callable[[Reply], str],
) -> None:
    big = MAX_XEND_BODY + 1
    path = serve(send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n(a" % big))
    start = time.monotonic()
    with pytest.raises(XendError) as info:
        XendClient(path, timeout=5).node_info()
    assert time.monotonic() - start < 1  # not waiting for a body that never comes
    assert info.value.errno == errno.EMSGSIZE
    assert f"{big} bytes, over the limit of {MAX_XEND_BODY}" in str(info.value)


@pytest.mark.parametrize("framing", ["chunked", "eof"])
def test_body_growing_past_the_cap_is_refused(serve: Callable[[Reply], str], framing: str) -> None:
    block = b"(" + b"a " * 32767 + b")"  # 64 KiB

    def reply(conn: socket.socket) -> None:
        if framing == "chunked":
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(MAX_XEND_BODY // len(block) + 2):
                conn.sendall(b"%x\r\n%b\r\n" % (len(block), block))
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
            for _ in range(MAX_XEND_BODY // len(block) + 2):
                conn.sendall(block)

    path = serve(reply)
    with pytest.raises(XendError) as info:
        XendClient(path, timeout=10).node_info()
    assert info.value.errno == errno.EMSGSIZE
    assert f"more than {MAX_XEND_BODY} bytes, over the limit of {MAX_XEND_BODY}" in str(info.value)


@pytest.mark.parametrize(
    ("head", "message"),
    [
        (b"HTTP/1.1 200 OK\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", "more than 100 headers"),
        (b"HTTP/1.1 200 OK\r\nX-A: " + b"b" * 70000 + b"\r\n\r\n", "65536 bytes"),
        (b"HTTP/1.1 200 " + b"O" * 70000 + b"\r\n\r\n", "65536 bytes"),
        # a chunk size that is not hex: a ValueError inside http.client on some versions
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "broken HTTP"),
        (b"SSH-2.0-OpenSSH\r\n", "BadStatusLine"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n(a)", "IncompleteRead"),  # cut short
    ],
)
def test_broken_http_is_eproto(serve: Callable[[Reply], str], head: bytes, message: str) -> None:
    path = serve(send(head))
    with pytest.raises(XendError) as info:
        XendClient(path, timeout=5).node_info()
    assert info.value.errno == errno.EPROTO
    assert message in str(info.value) and len(str(info.value)) < 500


def test_huge_error_body_is_clipped(serve: Callable[[Reply], str]) -> None:
    body = b"(xend.err '" + b"x" * 100_000 + b"')"
    path = serve(send(ok(body).replace(b"200 OK", b"500 Internal Error")))
    with pytest.raises(XendError) as info:
        XendClient(path, timeout=5).node_info()
    assert info.value.status == 500 and len(str(info.value)) < 700


def test_deep_sxp_reply_is_a_xend_error(serve: Callable[[Reply], str]) -> None:
    path = serve(send(ok(b"(" * 100_000 + b")" * 100_000)))
    with pytest.raises(XendError, match=f"nested deeper than {MAX_SXP_DEPTH}"):
        XendClient(path, timeout=5).node_info()


def test_domain_name_with_a_lone_surrogate(serve: Callable[[Reply], str]) -> None:
    path = serve(send(ok(b"()")))
    with pytest.raises(DomainNotFound, match="not valid text"):
        XendClient(path, timeout=5).domain("bad\ud800")


# ------------------------------------------------------------------ numbers in replies


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ("(domain (name g) (domid 100000000000000000000))", f"0..{DOMID_FIRST_RESERVED - 1}"),
        ("(domain (name g) (domid -1))", "outside"),
        ("(domain (name g) (vcpus 4000000000))", f"0..{MAX_VCPUS}"),
        ("(domain (name g) (online_vcpus 1e9))", f"0..{MAX_VCPUS}"),
        ("(domain (name g) (vcpu_avail 1e999999999))", "exponent beyond"),
        ("(domain (name g) (vcpu_avail -3))", "outside"),
        ("(domain (name (a b)))", "is a list"),
        ("(domain (name g) (uuid (x)))", "is a list"),
    ],
)
def test_domain_record_out_of_range(record: str, message: str) -> None:
    start = time.monotonic()
    with pytest.raises(XendError, match=message):
        parse_domain(sxp.parse(record))
    assert time.monotonic() - start < 0.5


@pytest.mark.parametrize(
    ("vcpu", "message"),
    [
        ("(number 9000000000)", f"0..{MAX_VCPUS - 1}"),
        ("(number 0) (cpu_time 1e999999999)", "exponent beyond"),
        ("(number 0) (cpu_time 1e12)", "outside 0..18446744073709551615"),
        ("(number 0) (cpu_time -5)", "outside"),
        ("(number 0) (cpu 99999999999)", f"{MAX_WIDTH - 1}"),
        ("(number 0) (cpumap (0 99999999999))", "not a CPU"),
        ("(number 0) (cpumap (\u0663))", "not a CPU"),  # int() would take it
        ("(number 0) (online 7)", "0..1"),
    ],
)
def test_vcpuinfo_out_of_range(vcpu: str, message: str) -> None:
    with pytest.raises(XendError, match=message):
        parse_vcpuinfo(sxp.parse(f"(domain (vcpu {vcpu}))"))


def test_too_many_vcpus_in_a_reply() -> None:
    reply = sxp.parse("(domain " + "(vcpu (number 0)) " * (MAX_VCPUS + 1) + ")")
    with pytest.raises(XendError, match=f"more than the {MAX_VCPUS}"):
        parse_vcpuinfo(reply)


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ("(node (nr_cpus 1e30))", f"0..{MAX_WIDTH}"),
        ("(node (nr_cpus 4) (cpu_mhz 1e999999999))", "exponent beyond"),
        ("(node (nr_cpus 4) (cpu_mhz 99999999999))", "outside"),
        ("(node (nr_cpus 4) (nr_nodes -1))", "outside"),
    ],
)
def test_node_info_out_of_range(node: str, message: str) -> None:
    with pytest.raises(XendError, match=message):
        parse_node_info(sxp.parse(node))


# ------------------------------------------------------------------ fuzz: parsers of replies


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(mutated(), st.binary(max_size=300)))
def test_reply_parsers_raise_only_xend_errors(data: bytes) -> None:
    start = time.monotonic()
    try:
        reply = sxp.parse(data)
    except ValueError:
        return
    for parse in (parse_domain, parse_vcpuinfo, parse_node_info):
        try:
            parse(reply)
        except XendError:
            pass
    assert time.monotonic() - start < 1.0
