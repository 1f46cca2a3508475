"""Client for the legacy xend HTTP/SXP interface (Xen <= 4.4 hosts, xen-interfaces.md §6).

xend must have ``(xend-unix-server yes)`` (socket ``/var/lib/xend/xend-socket``) or
``(xend-http-server yes)`` (TCP port 8000) in ``xend-config.sxp``: both are off by
default, and the XML-RPC socket that ``xm`` uses is a different protocol (xen-interfaces.md §6.1).

Requests follow libvirt's xend driver (xen-interfaces.md §6.2): HTTP/1.1, reads are ``GET``, writes
are ``POST /xend/domain/<name>`` with a form-encoded ``op=…`` body; we send
``Accept: application/sxp`` so that xend answers in SXP.  Errors (xen-interfaces.md §6.6): 404 →
:class:`~xenvcpu.errors.DomainNotFound`; 500 with ``(xend.err '…')`` →
:class:`~xenvcpu.errors.XendError` carrying xend's message; a 2xx body containing
``xend.err`` (or a 202 saying "failed") is an error too, as libvirt treated it.

Results are plain frozen dataclasses (:class:`XendVcpu`, :class:`XendDomain`,
:class:`XendNodeInfo`); the typed public classes wrap them.

Hostile replies: every request has one overall deadline (``timeout`` seconds, finite and
> 0), for the connect, the request and the whole reply together, so a reply that drips
a byte at a time still ends in time; a reply body is at most
:data:`~xenvcpu._limits.MAX_XEND_BODY` bytes (refused from its Content-Length before any
of it is read, or as soon as it grows past it), and http.client caps the headers (100,
each line at most 65536 bytes). Every number taken from a reply is checked against the
range it can have (a domid below DOMID_FIRST_RESERVED, vCPU counts up to MAX_VCPUS,
CPUs below MAX_WIDTH, nanoseconds below 2**64) before it is used. Each failure is a
:class:`~xenvcpu.errors.XendError` that names the limit.
"""

from __future__ import annotations

import errno as _errno
import http.client
import math
import socket
import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Union

from xenvcpu._limits import (
    DOMID_FIRST_RESERVED,
    MAX_VCPUS,
    MAX_XEND_BODY,
    ascii_uint,
    timeout_arg,
)
from xenvcpu._pycpumap import MAX_WIDTH
from xenvcpu.daemon import sxp
from xenvcpu.daemon.sxp import Sxp
from xenvcpu.errors import (
    DomainNotFound,
    DomainRef,
    InvalidAffinity,
    PermissionDenied,
    VcpuCountError,
    XendError,
)

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_TIMEOUT",
    "DEFAULT_UNIX_PATH",
    "XendClient",
    "XendDomain",
    "XendNodeInfo",
    "XendVcpu",
    "parse_domain",
    "parse_node_info",
    "parse_vcpuinfo",
]

#: ``xend-unix-path`` default (xen-interfaces.md §6.1).
DEFAULT_UNIX_PATH = "/var/lib/xend/xend-socket"
#: ``xend-port`` default (xen-interfaces.md §6.1).
DEFAULT_PORT = 8000
DEFAULT_TIMEOUT = 10.0


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class XendVcpu:
    """One ``(vcpu …)`` element of a ``vcpuinfo`` reply (xen-interfaces.md §6.4)."""

    number: int
    online: bool
    blocked: bool
    running: bool
    #: xend reports seconds as a float; converted exactly to nanoseconds.
    cpu_time_ns: int
    #: The physical CPU it runs on; None when xend says -1 (not running anywhere).
    cpu: int | None
    #: Hard affinity: the physical CPUs set in it, sorted (all CPUs when unpinned).
    cpumap: tuple[int, ...]


@dataclass(frozen=True)
class XendDomain:
    """The fields of a domain record (``GET /xend/domain/<name>``) the daemon path uses."""

    name: str
    #: None for an inactive (managed, not running) domain.
    domid: int | None
    uuid: str | None
    #: ``(vcpus N)``: the domain's maximum number of vCPUs.
    max_vcpus: int | None
    #: ``(online_vcpus N)`` when xend reports it.
    online_vcpus: int | None
    #: ``(vcpu_avail MASK)``: bit n set = vCPU n requested online.
    vcpu_avail: int | None
    #: xend's state string, e.g. ``-b----``.
    state: str | None
    raw: Sxp = field(compare=False, repr=False)


@dataclass(frozen=True)
class XendNodeInfo:
    """Host facts from ``GET /xend/node/`` (xen-interfaces.md §6.2)."""

    nr_cpus: int
    nr_nodes: int | None
    cores_per_socket: int | None
    threads_per_core: int | None
    cpu_mhz: int | None
    #: Every ``(name value)`` pair of the reply, values as xend printed them.
    fields: dict[str, str] = field(compare=False, repr=False, default_factory=dict)


# ----------------------------------------------------------------------------- parsing


def _bad_reply(what: str, detail: str) -> XendError:
    err = XendError(f"xend sent an unexpected {what} reply: {detail}")
    err.status = 200
    return err


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _in_range(v: int | None, element: str, what: str, low: int, high: int) -> int | None:
    if v is not None and not low <= v <= high:
        raise _bad_reply(what, f"({element} {_clip(str(v), 40)}) is outside {low}..{high}")
    return v


_NS_MAX = (1 << 64) - 1
_AVAIL_MAX = (1 << MAX_VCPUS) - 1
# Xen's physinfo reports cpu_khz in 32 bits.
_MHZ_MAX = 0xFFFFFFFF // 1000


def _need_int(value: Sxp, element: str, what: str, low: int, high: int) -> int:
    v = _opt_int(value, element, what, low, high)
    if v is None:
        raise _bad_reply(what, f"no ({element} …) field")
    return v


def _opt_int(value: Sxp, element: str, what: str, low: int, high: int) -> int | None:
    """An integer field in ``low..high`` (None when absent)."""
    try:
        v = sxp.value_int(value, element)
    except ValueError as exc:
        raise _bad_reply(what, str(exc)) from None
    return _in_range(v, element, what, low, high)


def _cpumap(vcpu: Sxp) -> tuple[int, ...]:
    kid = sxp.child(vcpu, "cpumap")
    if kid is None:
        return ()
    # (cpumap (0 1 2 3)) as xend writes it; also accept (cpumap 0 1 2 3).
    items = kid[1] if len(kid) == 2 and isinstance(kid[1], list) else kid[1:]
    cpus = set()
    for item in items:
        if not isinstance(item, str):
            raise _bad_reply("vcpuinfo", f"cpumap holds a list: {_clip(repr(kid), 80)}")
        cpu = ascii_uint(item, MAX_WIDTH)
        if cpu is None:
            raise _bad_reply(
                "vcpuinfo", f"cpumap holds {_clip(repr(item), 40)}, not a CPU 0..{MAX_WIDTH - 1}"
            )
        cpus.add(cpu)
    return tuple(sorted(cpus))


def parse_vcpuinfo(reply: Sxp) -> list[XendVcpu]:
    """``(domain … (vcpu (number 0) (online 1) …) …)`` → list sorted by vCPU number.

    Raises:
        XendError: the reply is not a vcpuinfo reply.
    """
    if not isinstance(reply, list):
        raise _bad_reply("vcpuinfo", f"an atom {reply!r}")
    elements = [v for v in reply if sxp.name(v) == "vcpu"]  # also a bare list of vcpus
    result = []
    if len(elements) > MAX_VCPUS:
        raise _bad_reply("vcpuinfo", f"{len(elements)} vCPUs, more than the {MAX_VCPUS} allowed")
    for v in elements:
        what = "vcpuinfo"
        try:
            seconds = sxp.value_decimal(v, "cpu_time")
        except ValueError as exc:
            raise _bad_reply(what, str(exc)) from None
        ns = int((seconds or Decimal(0)) * 1_000_000_000)  # number() capped the exponent
        _in_range(ns, "cpu_time (ns)", what, 0, _NS_MAX)
        cpu = _opt_int(v, "cpu", what, -(1 << 31), MAX_WIDTH - 1)
        result.append(
            XendVcpu(
                number=_need_int(v, "number", what, 0, MAX_VCPUS - 1),
                online=bool(_opt_int(v, "online", what, 0, 1) or 0),
                blocked=bool(_opt_int(v, "blocked", what, 0, 1) or 0),
                running=bool(_opt_int(v, "running", what, 0, 1) or 0),
                cpu_time_ns=ns,
                cpu=None if cpu is None or cpu < 0 else cpu,
                cpumap=_cpumap(v),
            )
        )
    result.sort(key=lambda x: x.number)
    return result


def parse_domain(record: Sxp) -> XendDomain:
    """A ``(domain (domid …) (name …) (vcpus …) …)`` record → :class:`XendDomain`."""
    what = "domain"
    if sxp.name(record) != "domain":
        raise _bad_reply(what, f"expected (domain …), got {_clip(str(record), 80)}")
    try:
        name = sxp.value_str(record, "name")
    except ValueError as exc:
        raise _bad_reply(what, str(exc)) from None
    if name is None:
        raise _bad_reply(what, "no (name …) field")
    try:
        uuid, state = sxp.value_str(record, "uuid"), sxp.value_str(record, "state")
    except ValueError as exc:
        raise _bad_reply(what, str(exc)) from None
    return XendDomain(
        name=name,
        domid=_opt_int(record, "domid", what, 0, DOMID_FIRST_RESERVED - 1),
        uuid=uuid,
        max_vcpus=_opt_int(record, "vcpus", what, 0, MAX_VCPUS),
        online_vcpus=_opt_int(record, "online_vcpus", what, 0, MAX_VCPUS),
        vcpu_avail=_opt_int(record, "vcpu_avail", what, 0, _AVAIL_MAX),
        state=state,
        raw=record,
    )


def parse_node_info(reply: Sxp) -> XendNodeInfo:
    """``(node (nr_cpus 4) (nr_nodes 1) …)`` → :class:`XendNodeInfo`."""
    what = "node"
    flat = {k: v for k, v in sxp.fields(reply).items() if isinstance(v, str)}
    mhz: int | None = None
    if "cpu_mhz" in flat:
        try:
            mhz = int(sxp.number(flat["cpu_mhz"], "cpu_mhz"))
        except ValueError as exc:
            raise _bad_reply(what, str(exc)) from None
        _in_range(mhz, "cpu_mhz", what, 0, _MHZ_MAX)
    return XendNodeInfo(
        nr_cpus=_need_int(reply, "nr_cpus", what, 0, MAX_WIDTH),
        nr_nodes=_opt_int(reply, "nr_nodes", what, 0, MAX_WIDTH),
        cores_per_socket=_opt_int(reply, "cores_per_socket", what, 0, MAX_WIDTH),
        threads_per_core=_opt_int(reply, "threads_per_core", what, 0, MAX_WIDTH),
        cpu_mhz=mhz,
        fields=flat,
    )


def _xend_err_message(body: bytes) -> str | None:
    """The message of a ``(xend.err '…')`` reply, if the body is one."""
    if b"xend.err" not in body:
        return None
    try:
        values = sxp.parse_all(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip()
    for v in values:
        if sxp.name(v) == "xend.err" and isinstance(v, list):
            return " ".join(x if isinstance(x, str) else repr(x) for x in v[1:])
    return body.decode("utf-8", "replace").strip()


# ------------------------------------------------------------------------------ client


class _DeadlineSocket(socket.socket):
    """A socket whose every send and receive may wait only until one deadline.

    A socket timeout bounds each ``recv``; a peer that drips a byte at a time would
    never trip it. Re-arming the timeout with the time left before every call makes the
    deadline hold for the whole exchange, http.client's reads included (its response
    file calls ``recv_into``).
    """

    deadline = math.inf

    def _arm(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("the request's deadline passed")
        self.settimeout(left)

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0, /) -> int:
        self._arm()
        return super().recv_into(buffer, nbytes, flags)

    def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        self._arm()
        return super().recv(bufsize, flags)

    def send(self, data: ReadableBuffer, flags: int = 0, /) -> int:
        self._arm()
        return super().send(data, flags)

    def sendall(self, data: ReadableBuffer, flags: int = 0, /) -> None:
        self._arm()
        super().sendall(data, flags)


class _DeadlineHTTPConnection(http.client.HTTPConnection):
    """``http.client`` over a :class:`_DeadlineSocket` (TCP)."""

    def __init__(self, host: str, port: int | None, deadline: float) -> None:
        super().__init__(host, port, timeout=max(deadline - time.monotonic(), 0.001))
        self.deadline = deadline

    def connect(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("the request's deadline passed")
        plain = socket.create_connection((self.host, self.port), left)
        sock = _DeadlineSocket(plain.family, plain.type, plain.proto, plain.detach())
        sock.deadline = self.deadline
        self.sock = sock


class _UnixHTTPConnection(_DeadlineHTTPConnection):
    """``http.client`` over a unix stream socket (the Host header says localhost)."""

    def __init__(self, path: str, deadline: float) -> None:
        super().__init__("localhost", None, deadline)
        self.unix_path = path

    def connect(self) -> None:
        sock = _DeadlineSocket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.deadline = self.deadline
        try:
            while True:
                sock._arm()
                try:
                    sock.connect(self.unix_path)
                    break
                except BlockingIOError:
                    # EAGAIN: xend's listen backlog is full; a unix socket says so at
                    # once instead of waiting: wait here, until the deadline.
                    time.sleep(0.005)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


Address = Union[str, tuple[str, int]]


class XendClient:
    """Talks to xend over its unix socket (a ``str`` path) or TCP (``(host, port)``).

    Each request uses a fresh connection; nothing is kept open between calls.

    Args:
        address: socket path (default ``/var/lib/xend/xend-socket``) or ``(host, port)``.
        timeout: seconds a whole request may take: connecting, sending and reading the
            entire reply (finite, > 0, at most a day).

    Raises:
        ValueError, TypeError: a bad timeout or address.
    """

    def __init__(
        self, address: Address = DEFAULT_UNIX_PATH, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.timeout = timeout_arg(timeout, "xend client timeout", zero=False)
        if isinstance(address, tuple):
            if len(address) != 2 or not isinstance(address[0], str):
                raise TypeError(f"xend address must be a path or (host, port), not {address!r}")
            port = address[1]
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                raise ValueError(f"xend port {port!r} is outside 1..65535")
        elif not isinstance(address, str):
            raise TypeError(f"xend address must be a path or (host, port), not {address!r}")
        self.address = address

    def __repr__(self) -> str:
        return f"<XendClient {self.describe()}>"

    def describe(self) -> str:
        if isinstance(self.address, str):
            return f"unix:{self.address}"
        return f"http://{self.address[0]}:{self.address[1]}"

    # ------------------------------------------------------------------ transport

    def _connection(self, deadline: float) -> http.client.HTTPConnection:
        if isinstance(self.address, str):
            return _UnixHTTPConnection(self.address, deadline)
        host, port = self.address
        return _DeadlineHTTPConnection(host, port, deadline)

    def _connect_error(self, exc: OSError, what: str) -> PermissionDenied | XendError:
        if isinstance(exc, PermissionError):
            return PermissionDenied(
                f"cannot connect to xend at {self.describe()}: permission denied; "
                "run as root in dom0 (e.g. with sudo)",
                errno=_errno.EACCES,
            )
        hint = ""
        if isinstance(exc, (FileNotFoundError, ConnectionRefusedError)):
            hint = (
                " (is xend running, with (xend-unix-server yes) or (xend-http-server yes) "
                "in /etc/xen/xend-config.sxp?)"
            )
        err = XendError(
            f"{what}: cannot talk to xend at {self.describe()}: {exc.strerror or exc}{hint}",
            errno=exc.errno,
        )
        return err

    def request(
        self,
        method: str,
        path: str,
        form: dict[str, str] | None = None,
        *,
        domain: DomainRef | None = None,
    ) -> Sxp | None:
        """Send one request and return the parsed SXP reply (None for an empty body).

        ``form`` fields are sent form-encoded in the body (POST).  ``domain`` names the
        domain the path is about, so a 404 becomes :class:`DomainNotFound`.

        Raises:
            DomainNotFound: HTTP 404 for a domain path.
            XendError: any other error status or error body (``.status`` holds the HTTP
                status, 0 when no answer came), no whole reply within the timeout
                (``errno`` ETIMEDOUT), a body over MAX_XEND_BODY (EMSGSIZE), a broken
                HTTP reply (EPROTO; http.client refuses more than 100 headers or a line
                over 65536 bytes), or a reply that is not SXP.
            PermissionDenied: the socket is root-only.
        """
        what = f"{method} {path}" + (f" op={form['op']}" if form and "op" in form else "")
        headers = {"Accept": "application/sxp"}  # xen-interfaces.md §6.2: makes xend answer SXP
        body: bytes | None = None
        if form is not None:
            body = urllib.parse.urlencode(form).encode("ascii")
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        # One deadline for the whole exchange: connect, send, status, headers and body.
        conn = self._connection(time.monotonic() + self.timeout)
        resp: http.client.HTTPResponse | None = None
        try:
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = self._read_body(resp, what, domain)
            except socket.timeout:
                err = XendError(
                    f"{what}: xend at {self.describe()} did not answer within "
                    f"{self.timeout:g} s (the whole reply included)",
                    errno=_errno.ETIMEDOUT,
                    domain=domain,
                )
                raise err from None
            except (http.client.HTTPException, ValueError) as exc:
                # ValueError: http.client's own for a chunk size that is not hex
                raise XendError(
                    f"{what}: broken HTTP reply from xend at {self.describe()}: "
                    f"{type(exc).__name__}: {_clip(str(exc))}",
                    errno=_errno.EPROTO,
                    domain=domain,
                ) from None
            except OSError as exc:
                raise self._connect_error(exc, what) from exc
        finally:
            if resp is not None:  # a reply that closes the connection holds the socket
                resp.close()
            conn.close()
        return self._check(
            resp.status, resp.reason, resp.getheader("Content-Type"), data, what=what, domain=domain
        )

    def _read_body(
        self, resp: http.client.HTTPResponse, what: str, domain: DomainRef | None
    ) -> bytes:
        """The body, at most MAX_XEND_BODY bytes: refused from its Content-Length before
        any of it is read, or as soon as it grows past the cap (chunked, or until EOF)."""

        def too_big(size: str) -> XendError:
            err = XendError(
                f"{what}: xend at {self.describe()} sent a reply body of {size} bytes, over "
                f"the limit of {MAX_XEND_BODY}",
                errno=_errno.EMSGSIZE,
                domain=domain,
            )
            err.status = resp.status
            return err

        if resp.length is not None and resp.length > MAX_XEND_BODY:
            raise too_big(str(resp.length))
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = resp.read(min(65536, MAX_XEND_BODY + 1 - total))
            if not chunk:
                if resp.length:
                    # cut short of its Content-Length: read(n) returns short at EOF
                    # where read() would raise
                    raise http.client.IncompleteRead(b"", resp.length)
                return b"".join(chunks)
            total += len(chunk)
            if total > MAX_XEND_BODY:
                raise too_big("more than " + str(MAX_XEND_BODY))
            chunks.append(chunk)

    def _check(
        self,
        status: int,
        reason: str,
        content_type: str | None,
        data: bytes,
        *,
        what: str,
        domain: DomainRef | None,
    ) -> Sxp | None:
        def fail(message: str) -> XendError:
            err = XendError(message, domain=domain)
            err.status = status
            return err

        if status == 404 and domain is not None:
            raise DomainNotFound(
                f"xend has no domain {domain!r} ({what}: HTTP 404)",
                errno=_errno.ESRCH,
                domain=domain,
            )
        message = _xend_err_message(data)
        if message is not None:
            message = _clip(message, 500)
        text = _clip(data[:600].decode("utf-8", "replace").strip(), 500)
        if status >= 300:
            detail = message or text or _clip(reason, 200)
            raise fail(f"{what}: xend failed (HTTP {status}): {detail}")
        if message is not None:  # libvirt: a 2xx carrying xend.err is a failure
            raise fail(f"{what}: xend failed: {message}")
        if status == 202 and b"failed" in data:
            raise fail(f"{what}: xend failed: {text}")
        if not data.strip():
            return None
        if content_type and "html" in content_type.lower():
            raise fail(f"{what}: xend answered HTML instead of SXP")
        try:
            return sxp.parse(data)
        except ValueError as exc:
            raise fail(f"{what}: xend's reply is not SXP: {exc}") from None

    @staticmethod
    def _domain_path(domain: DomainRef) -> str:
        try:
            return "/xend/domain/" + urllib.parse.quote(str(domain), safe="")
        except UnicodeEncodeError:  # a lone surrogate: no domain can have that name
            raise DomainNotFound(
                f"xend has no domain {domain!r}: the name is not valid text (a lone surrogate)",
                errno=_errno.ESRCH,
                domain=domain,
            ) from None

    # ------------------------------------------------------------------ operations

    def domain_names(self) -> list[str]:
        """Names of the running domains (``GET /xend/domain/``)."""
        reply = self.request("GET", "/xend/domain/")
        if reply is None:
            return []
        if not isinstance(reply, list) or not all(isinstance(x, str) for x in reply):
            raise _bad_reply("domain list", str(reply)[:80])
        return [x for x in reply if isinstance(x, str)]

    def domains(self) -> list[XendDomain]:
        """Full records of the domains (``GET /xend/domain/?detail=1``)."""
        reply = self.request("GET", "/xend/domain/?detail=1")
        if reply is None:
            return []
        if sxp.name(reply) == "domain":  # a single record not wrapped in a list
            return [parse_domain(reply)]
        if not isinstance(reply, list):
            raise _bad_reply("domain list", str(reply)[:80])
        return [parse_domain(r) for r in reply]

    def domain(self, domain: DomainRef) -> XendDomain:
        """The record of one domain (name or id)."""
        reply = self.request("GET", self._domain_path(domain), domain=domain)
        if reply is None:
            raise _bad_reply("domain", "empty body")
        return parse_domain(reply)

    def vcpuinfo(self, domain: DomainRef) -> list[XendVcpu]:
        """Per-vCPU state (``GET /xend/domain/<d>?op=vcpuinfo``, xen-interfaces.md §6.4)."""
        reply = self.request("GET", self._domain_path(domain) + "?op=vcpuinfo", domain=domain)
        if reply is None:
            raise _bad_reply("vcpuinfo", "empty body")
        return parse_vcpuinfo(reply)

    def set_vcpus(self, domain: DomainRef, n: int) -> None:
        """Set the number of online vCPUs (``op=set_vcpus``, xen-interfaces.md §6.3).

        Raises:
            VcpuCountError: ``n < 1`` or more than the domain's maximum (checked by xend
                on a running domain); the message gives the valid range when known.
        """
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"vCPU count must be an int, not {type(n).__name__}")
        if n < 1:
            raise self._count_error(domain, n, None)
        try:
            self.request(
                "POST",
                self._domain_path(domain),
                {"op": "set_vcpus", "vcpus": str(n)},
                domain=domain,
            )
        except XendError as exc:
            text = exc.message.lower()
            if "vcpus" in text and ("greater than max" in text or "zero or less" in text):
                raise self._count_error(domain, n, exc.message) from exc
            raise

    def _count_error(self, domain: DomainRef, n: int, xend_says: str | None) -> VcpuCountError:
        maximum: int | None = None
        try:
            maximum = self.domain(domain).max_vcpus
        except (XendError, DomainNotFound):
            pass
        valid = f"the valid range is 1..{maximum}" if maximum else "at least 1 is needed"
        said = f" (xend: {xend_says.split(': ', 1)[-1]})" if xend_says else ""
        return VcpuCountError(
            f"domain {domain!r}: cannot have {n} vCPUs online; {valid}{said}", domain=domain
        )

    def pincpu(self, domain: DomainRef, vcpu: int | str, cpus: Iterable[int]) -> None:
        """Pin one vCPU (or ``'all'``) to physical CPUs (``op=pincpu``, xen-interfaces.md §6.3).

        The cpumap goes as a comma list ``0,2,3`` (no brackets, no ranges: since Xen
        3.4 brackets are an error, before that they silently meant "all CPUs").

        Raises:
            InvalidAffinity: no CPU given, or a negative one.
        """
        wanted = sorted(set(cpus))
        if not wanted:
            raise InvalidAffinity(
                f"domain {domain!r}: cannot pin to no CPU at all",
                domain=domain,
                vcpu=vcpu if isinstance(vcpu, int) else None,
            )
        if any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in wanted):
            raise InvalidAffinity(f"CPU numbers must be ints >= 0, got {wanted!r}", domain=domain)
        if isinstance(vcpu, str):
            if vcpu != "all":
                raise ValueError(f"vcpu must be an int or 'all', not {vcpu!r}")
            target = "all"
        else:
            if isinstance(vcpu, bool) or vcpu < 0:
                raise ValueError(f"vcpu must be an int >= 0 or 'all', not {vcpu!r}")
            target = str(vcpu)
        self.request(
            "POST",
            self._domain_path(domain),
            {"op": "pincpu", "vcpu": target, "cpumap": ",".join(str(c) for c in wanted)},
            domain=domain,
        )

    def node_info(self) -> XendNodeInfo:
        """Host CPU facts (``GET /xend/node/``)."""
        reply = self.request("GET", "/xend/node/")
        if reply is None:
            raise _bad_reply("node", "empty body")
        return parse_node_info(reply)
