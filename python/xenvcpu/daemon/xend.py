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
"""

from __future__ import annotations

import errno as _errno
import http.client
import socket
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Union

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


def _need_int(value: Sxp, element: str, what: str) -> int:
    try:
        v = sxp.value_int(value, element)
    except ValueError as exc:
        raise _bad_reply(what, str(exc)) from None
    if v is None:
        raise _bad_reply(what, f"no ({element} …) field")
    return v


def _opt_int(value: Sxp, element: str, what: str) -> int | None:
    try:
        return sxp.value_int(value, element)
    except ValueError as exc:
        raise _bad_reply(what, str(exc)) from None


def _cpumap(vcpu: Sxp) -> tuple[int, ...]:
    kid = sxp.child(vcpu, "cpumap")
    if kid is None:
        return ()
    # (cpumap (0 1 2 3)) as xend writes it; also accept (cpumap 0 1 2 3).
    items = kid[1] if len(kid) == 2 and isinstance(kid[1], list) else kid[1:]
    cpus = set()
    for item in items:
        if not isinstance(item, str):
            raise _bad_reply("vcpuinfo", f"cpumap holds a list: {kid!r}")
        try:
            cpus.add(int(item))
        except ValueError:
            raise _bad_reply("vcpuinfo", f"cpumap holds {item!r}") from None
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
    for v in elements:
        what = "vcpuinfo"
        try:
            seconds = sxp.value_decimal(v, "cpu_time")
        except ValueError as exc:
            raise _bad_reply(what, str(exc)) from None
        cpu = _opt_int(v, "cpu", what)
        result.append(
            XendVcpu(
                number=_need_int(v, "number", what),
                online=bool(_opt_int(v, "online", what) or 0),
                blocked=bool(_opt_int(v, "blocked", what) or 0),
                running=bool(_opt_int(v, "running", what) or 0),
                cpu_time_ns=int((seconds or Decimal(0)) * 1_000_000_000),
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
        raise _bad_reply(what, f"expected (domain …), got {str(record)[:80]}")
    name = sxp.value_str(record, "name")
    if name is None:
        raise _bad_reply(what, "no (name …) field")
    return XendDomain(
        name=name,
        domid=_opt_int(record, "domid", what),
        uuid=sxp.value_str(record, "uuid"),
        max_vcpus=_opt_int(record, "vcpus", what),
        online_vcpus=_opt_int(record, "online_vcpus", what),
        vcpu_avail=_opt_int(record, "vcpu_avail", what),
        state=sxp.value_str(record, "state"),
        raw=record,
    )


def parse_node_info(reply: Sxp) -> XendNodeInfo:
    """``(node (nr_cpus 4) (nr_nodes 1) …)`` → :class:`XendNodeInfo`."""
    what = "node"
    flat = {k: v for k, v in sxp.fields(reply).items() if isinstance(v, str)}
    mhz: int | None = None
    if "cpu_mhz" in flat:
        try:
            mhz = int(Decimal(flat["cpu_mhz"]))
        except ArithmeticError:
            raise _bad_reply(what, f"cpu_mhz is {flat['cpu_mhz']!r}") from None
    return XendNodeInfo(
        nr_cpus=_need_int(reply, "nr_cpus", what),
        nr_nodes=_opt_int(reply, "nr_nodes", what),
        cores_per_socket=_opt_int(reply, "cores_per_socket", what),
        threads_per_core=_opt_int(reply, "threads_per_core", what),
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


class _UnixHTTPConnection(http.client.HTTPConnection):
    """``http.client`` over a unix stream socket (the Host header says localhost)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.unix_path)
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
        timeout: seconds for connecting and for each read.
    """

    def __init__(
        self, address: Address = DEFAULT_UNIX_PATH, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.address = address
        self.timeout = float(timeout)

    def __repr__(self) -> str:
        return f"<XendClient {self.describe()}>"

    def describe(self) -> str:
        if isinstance(self.address, str):
            return f"unix:{self.address}"
        return f"http://{self.address[0]}:{self.address[1]}"

    # ------------------------------------------------------------------ transport

    def _connection(self) -> http.client.HTTPConnection:
        if isinstance(self.address, str):
            return _UnixHTTPConnection(self.address, self.timeout)
        host, port = self.address
        return http.client.HTTPConnection(host, port, timeout=self.timeout)

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
                status, 0 when no answer came), a timeout (``errno`` ETIMEDOUT), or a
                reply that is not SXP.
            PermissionDenied: the socket is root-only.
        """
        what = f"{method} {path}" + (f" op={form['op']}" if form and "op" in form else "")
        headers = {"Accept": "application/sxp"}  # xen-interfaces.md §6.2: makes xend answer SXP
        body: bytes | None = None
        if form is not None:
            body = urllib.parse.urlencode(form).encode("ascii")
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn = self._connection()
        try:
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except socket.timeout:
                err = XendError(
                    f"{what}: xend at {self.describe()} did not answer within {self.timeout:g} s",
                    errno=_errno.ETIMEDOUT,
                    domain=domain,
                )
                raise err from None
            except http.client.HTTPException as exc:
                raise XendError(
                    f"{what}: broken HTTP reply from xend at {self.describe()}: {exc!r}",
                    errno=_errno.EPROTO,
                    domain=domain,
                ) from exc
            except OSError as exc:
                raise self._connect_error(exc, what) from exc
        finally:
            conn.close()
        return self._check(
            resp.status, resp.reason, resp.getheader("Content-Type"), data, what=what, domain=domain
        )

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
        if status >= 300:
            detail = message or data.decode("utf-8", "replace").strip() or reason
            raise fail(f"{what}: xend failed (HTTP {status}): {detail}")
        if message is not None:  # libvirt: a 2xx carrying xend.err is a failure
            raise fail(f"{what}: xend failed: {message}")
        if status == 202 and b"failed" in data:
            raise fail(f"{what}: xend failed: {data.decode('utf-8', 'replace').strip()}")
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
        return "/xend/domain/" + urllib.parse.quote(str(domain), safe="")

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
