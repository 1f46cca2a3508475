"""A protocol double of xend's HTTP/SXP server (Xen <= 4.4), for the xend client tests.

No real xend can run here (it needs Xen <= 4.4 and Python 2).  This double follows the
behaviour documented in the reference, xen-interfaces.md §6, and nothing more:

* §6.2 requests: ``GET /xend/domain/`` (names), ``GET /xend/domain/?detail=1`` (records),
  ``GET /xend/domain/<name-or-id>`` (record), GET honours ``op=vcpuinfo`` only,
  ``GET /xend/node/``; writes are ``POST /xend/domain/<name>`` with a form body.
  It answers SXP (``application/sxp``) when the request has no User-Agent, or no
  Accept, or an Accept containing ``application/sxp``; HTML otherwise.
* §6.3 ops: ``set_vcpus`` (N <= 0 and N > max on a running domain refused with xend's
  messages; else vcpu_avail = (1<<N)-1, 200 with an empty body), ``pincpu`` (``vcpu``
  decimal or ``all``; ``cpumap`` comma list, brackets refused as since Xen 3.4; reply
  ``0``), ``vcpuinfo``.
* §6.4 the vcpuinfo shape; cpu_time as seconds (float), cpumap as the list of pCPUs.
* §6.6 errors: 404 for an unknown domain, 500 ``(xend.err '...')`` for a failed op,
  406 when ``op`` is missing or repeated, 501 for an unknown op.
* §6.5 writing: atoms made of letters, digits and ``. - _ : / ~`` bare, everything else
  with (Python 2 style) ``repr()``, so quoted atoms and escapes reach the client.

Extra knobs for tests: ``delay`` (seconds before answering, for timeouts), ``canned``
(path -> exact (status, content type, body) to replay recorded replies), and
``requests`` (everything the client sent, headers included).
"""

from __future__ import annotations

import http.server
import os
import socket
import socketserver
import sys
import threading
import traceback
import urllib.parse
from dataclasses import dataclass, field
from typing import Union

Value = Union[str, int, float, list["Value"]]

_BARE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_:/~")


def py2_repr(text: str) -> str:
    """What Python 2's ``repr(str)`` prints for the UTF-8 bytes of ``text``."""
    raw = text.encode("utf-8")
    quote = '"' if (b"'" in raw and b'"' not in raw) else "'"
    out = [quote]
    for b in raw:
        c = chr(b)
        if c == quote or c == "\\":
            out.append("\\" + c)
        elif c == "\t":
            out.append("\\t")
        elif c == "\n":
            out.append("\\n")
        elif c == "\r":
            out.append("\\r")
        elif b < 0x20 or b >= 0x7F:
            out.append(f"\\x{b:02x}")
        else:
            out.append(c)
    out.append(quote)
    return "".join(out)


def show(value: object) -> str:
    """xend's ``sxp.show``: lists in parentheses, numbers with str(), atoms bare or repr'd."""
    if isinstance(value, (list, tuple)):
        return "(" + " ".join(show(v) for v in value) + ")"
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    if not isinstance(value, str):
        raise TypeError(f"cannot show {type(value).__name__}")
    if value and value.isascii() and (value.isalnum() or all(c in _BARE for c in value)):
        return value
    if value == "@":
        return value
    return py2_repr(value)


@dataclass
class DomainState:
    name: str
    domid: int | None
    max_vcpus: int
    online: int
    nr_cpus: int
    uuid: str = "6b1f5b4e-8a3b-4e4a-9b7e-3c1d2e5f6a70"
    cpumaps: dict[int, list[int]] = field(default_factory=dict)
    cpu_time: dict[int, float] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.domid is not None

    @property
    def vcpu_avail(self) -> int:
        return (1 << self.online) - 1

    def record(self) -> Value:
        rec: list[Value] = ["domain"]
        if self.domid is not None:
            rec.append(["domid", self.domid])
        rec += [
            ["uuid", self.uuid],
            ["vcpus", self.max_vcpus],
            ["vcpu_avail", self.vcpu_avail],
            ["online_vcpus", self.online if self.running else 0],
            ["name", self.name],
            ["state", "-b----" if self.running else "------"],
            ["cpu_time", 1.5],
        ]
        return rec

    def vcpuinfo(self) -> Value:
        reply: list[Value] = [
            "domain",
            ["domid", self.domid if self.domid is not None else -1],
            ["name", self.name],
            ["vcpu_count", self.max_vcpus],
        ]
        for n in range(self.max_vcpus):
            up = self.running and n < self.online
            reply.append(
                [
                    "vcpu",
                    ["number", n],
                    ["online", int(up)],
                    ["blocked", int(up and n % 2 == 1)],
                    ["running", int(up and n % 2 == 0)],
                    ["cpu_time", self.cpu_time.get(n, 0.0) if up else 0.0],
                    ["cpu", n % self.nr_cpus if up else -1],
                    ["cpumap", list(self.cpumaps.get(n, range(self.nr_cpus)))],
                ]
            )
        return reply


class OpFailed(Exception):
    """An exception inside an op: becomes HTTP 500 with (xend.err 'message')."""


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class XendDouble:
    def __init__(self, nr_cpus: int = 4) -> None:
        self.nr_cpus = nr_cpus
        self.domains: dict[str, DomainState] = {}
        self.requests: list[Recorded] = []
        self.delay = 0.0
        self.closing = threading.Event()
        self.canned: dict[str, tuple[int, str, bytes]] = {}
        self._server: socketserver.BaseServer | None = None
        self._thread: threading.Thread | None = None
        self.add_domain(DomainState("Domain-0", 0, max_vcpus=2, online=2, nr_cpus=nr_cpus))
        self.add_domain(
            DomainState(
                "guest1",
                7,
                max_vcpus=4,
                online=2,
                nr_cpus=nr_cpus,
                cpu_time={0: 12.345678901, 1: 0.5},
            )
        )
        self.add_domain(DomainState("stopped vm", None, max_vcpus=2, online=1, nr_cpus=nr_cpus))

    def add_domain(self, dom: DomainState) -> None:
        self.domains[dom.name] = dom

    def find(self, ref: str) -> DomainState | None:
        for dom in self.domains.values():
            if dom.name == ref or (dom.domid is not None and str(dom.domid) == ref):
                return dom
        return None

    # --------------------------------------------------------------- ops (xen-interfaces.md §6.3)

    def op_set_vcpus(self, dom: DomainState, form: dict[str, list[str]]) -> Value | None:
        n = int(form["vcpus"][0])
        if n <= 0:
            raise OpFailed("Zero or less VCPUs is invalid")
        if dom.running and n > dom.max_vcpus:
            raise OpFailed("Cannot set vcpus greater than max vcpus on running domain")
        dom.online = n
        if not dom.running:
            dom.max_vcpus = max(dom.max_vcpus, n)
        return None

    def op_pincpu(self, dom: DomainState, form: dict[str, list[str]]) -> Value | None:
        vcpu = form["vcpu"][0]
        cpumap = form["cpumap"][0]
        try:
            cpus = [int(c) for c in cpumap.split(",")]  # brackets raise, as since 3.4
        except ValueError:
            raise OpFailed(f"invalid literal for int() with base 10: {cpumap!r}") from None
        if any(c >= self.nr_cpus or c < 0 for c in cpus):
            raise OpFailed(f"Invalid argument: cpumap {cpumap}")
        targets = range(dom.max_vcpus) if vcpu == "all" else [int(vcpu)]
        for v in targets:
            if v >= dom.max_vcpus:
                raise OpFailed(f"Invalid VCPU {v}")
            dom.cpumaps[v] = sorted(set(cpus))
        return 0

    def op_vcpuinfo(self, dom: DomainState, form: dict[str, list[str]]) -> Value | None:
        return dom.vcpuinfo()

    # ------------------------------------------------------------------ serving

    def serve_unix(self, path: str) -> None:
        if os.path.exists(path):
            os.unlink(path)
        self._start(_UnixServer(path, self._handler()))

    def serve_tcp(self) -> tuple[str, int]:
        server = _TcpServer(("127.0.0.1", 0), self._handler())
        self._start(server)
        host, port = server.server_address[:2]
        return str(host), int(port)

    def _start(self, server: socketserver.BaseServer) -> None:
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        self.closing.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        double = self

        class Handler(_XendHandler):
            xend = double

        return Handler


class _QuietErrors:
    """A client that gave up (timeout test) makes the reply fail: not worth a traceback."""

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            traceback.print_exc()


class _UnixServer(_QuietErrors, socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False


class _TcpServer(_QuietErrors, socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    block_on_close = False


class _XendHandler(http.server.BaseHTTPRequestHandler):
    xend: XendDouble
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet; and client_address is not a tuple on a unix socket

    def address_string(self) -> str:
        return "unix"

    def _sxp_wanted(self) -> bool:
        # xen-interfaces.md §6.2: SXP when no User-Agent, or no Accept, or Accept has
        # application/sxp.
        accept = self.headers.get("Accept")
        return (
            self.headers.get("User-Agent") is None or accept is None or "application/sxp" in accept
        )

    def _reply(self, status: int, body: bytes = b"", ctype: str | None = None) -> None:
        self.send_response(status)
        if ctype is None:
            ctype = "application/sxp" if self._sxp_wanted() else "text/html"
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _value(self, status: int, value: Value | None) -> None:
        if value is None:
            self._reply(status)
        elif self._sxp_wanted():
            self._reply(status, show(value).encode("utf-8"))
        else:
            self._reply(status, b"<html><body><p>" + str(value).encode() + b"</p></body></html>")

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        double = self.xend
        double.requests.append(Recorded(method, self.path, dict(self.headers.items()), body))
        if double.delay:
            double.closing.wait(double.delay)  # cut short when the double shuts down
        if self.path in double.canned:
            status, ctype, data = double.canned[self.path]
            self._reply(status, data, ctype)
            return
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        form = urllib.parse.parse_qs(body.decode("ascii"), keep_blank_values=True)
        if url.path == "/xend/node/" and method == "GET":
            self._value(200, self._node())
            return
        if url.path == "/xend/domain/" and method == "GET":
            doms = [d for d in double.domains.values() if d.running]
            if query.get("detail") == ["1"]:
                self._value(200, [d.record() for d in doms])
            else:
                self._value(200, [d.name for d in doms])
            return
        if not url.path.startswith("/xend/domain/"):
            self._reply(404)
            return
        ref = urllib.parse.unquote(url.path[len("/xend/domain/") :])
        dom = double.find(ref)
        if dom is None:
            self._reply(404)
            return
        if method == "GET":
            if query.get("op") == ["vcpuinfo"]:
                self._value(200, dom.vcpuinfo())
            else:
                self._value(200, dom.record())
            return
        ops = form.get("op", [])
        if len(ops) != 1:
            self._reply(406)
            return
        fn = getattr(double, f"op_{ops[0]}", None)
        if fn is None:
            self._reply(501, f"Operation not implemented: {ops[0]}".encode(), "text/plain")
            return
        try:
            result = fn(dom, form)
        except (OpFailed, KeyError, ValueError) as exc:
            message = exc.args[0] if isinstance(exc, OpFailed) else repr(exc)
            self._reply(500, show(["xend.err", str(message)]).encode("utf-8"))
            return
        self._value(200, result)

    def _node(self) -> Value:
        n = self.xend.nr_cpus
        return [
            "node",
            ["host", "xenhost"],
            ["release", "3.2.0-4-amd64"],
            ["nr_cpus", n],
            ["nr_nodes", 1],
            ["cores_per_socket", n // 2],
            ["threads_per_core", 2],
            ["cpu_mhz", 2394],
            ["xen_caps", "xen-3.0-x86_64 xen-3.0-x86_32p hvm-3.0-x86_32"],
        ]

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")


def raw_http(path: str, request: bytes) -> bytes:
    """Send a hand-written HTTP request over the unix socket; return the raw reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(path)
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        while len(rest) < length:
            chunk = s.recv(4096)
            if not chunk:
                break
            rest += chunk
        return head + b"\r\n\r\n" + rest
