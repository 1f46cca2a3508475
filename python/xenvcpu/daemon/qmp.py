"""QMP (QEMU's JSON monitor) client and vCPU hotplug for HVM guests with upstream QEMU.

For PV and PVH guests the online vCPUs are changed through xenstore (:mod:`.vcpus`).  An
HVM guest whose device model is upstream QEMU gets its vCPUs from QEMU's ACPI CPU
hotplug: the toolstack asks QEMU over QMP (``device_add`` of a CPU device, or ``cpu-add``
before QEMU 2.7) and QEMU notifies the guest through ACPI.  This module is that path.

Why our own client instead of the QEMU project's ``qemu.qmp`` package: ``qemu.qmp`` is
asyncio-based (its synchronous wrapper drives an event loop) and would be an extra
dependency, while this package must work with the standard library alone, without the
native module.  A synchronous client with a deadline on every read is small (about 300
lines here, most of them error messages) and easier to reason about in a toolstack
library that is called from plain blocking code.

The client (:class:`QmpClient`):

* connects to QEMU's unix socket (``-qmp unix:PATH,server=on,wait=off``; libxl's is
  :func:`libxl_socket_path`), reads the greeting and sends ``qmp_capabilities``;
* :meth:`~QmpClient.execute` gives every command an ``id`` and waits for the reply with
  that id; asynchronous events that arrive meanwhile are kept in a bounded queue for
  :meth:`~QmpClient.wait_event` (e.g. ``DEVICE_DELETED``);
* every read has a deadline (``timeout``, finite and > 0); a message is at most
  ``max_message`` bytes;
* the connection is closed as soon as its framing can no longer be trusted: a timeout in
  the middle of a message or of a send, anything that is not a JSON object per line, a
  reply to a command never sent, end of stream.  A command that times out on a clean
  message boundary leaves the connection open; its late reply is recognised by its id
  and dropped;
* every failure is a :class:`~xenvcpu.errors.QmpError` (``errno`` says which for
  connection failures; ``qmp_class``/``desc`` hold QEMU's error reply), or
  :class:`~xenvcpu.errors.PermissionDenied` for a socket this user may not open; never a
  raw ``OSError`` or JSON error.

QEMU serves one QMP connection at a time: while another client (e.g. libxl) is connected
a new one is accepted by the kernel but gets no greeting, which is reported as such.

The vCPU functions work over a connected client: :func:`qemu_vcpus`, :func:`hotpluggable`,
:func:`slot_map` and :func:`set_hvm_vcpus`.  See ``docs/qmp.md`` for the algorithm and
the measured behaviour of real QEMU.

vCPU numbering: **vCPU N is the QEMU CPU whose ``cpu-index`` is N** (what libxl reads
from ``query-cpus-fast`` as the Xen vCPU id).  A CPU that is not plugged yet is the N-th
slot of ``query-hotpluggable-cpus`` in topology order (socket, die, cluster, core,
thread): QEMU gives the CPU plugged into that slot ``cpu-index`` N.  :func:`slot_map`
checks this against the plugged CPUs and :func:`set_hvm_vcpus` reads every added CPU
back.
"""

from __future__ import annotations

import errno as _errno
import itertools
import json
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any, Callable, NamedTuple, TypeVar

from xenvcpu._limits import timeout_arg
from xenvcpu._ranges import format_ranges
from xenvcpu.errors import (
    DomainRef,
    NotSupported,
    PermissionDenied,
    QmpError,
    VcpuCountError,
    VcpuTimeout,
    XenvcpuError,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_EVENTS",
    "MAX_MESSAGE",
    "CpuSlot",
    "HotplugReport",
    "QemuCpu",
    "QmpClient",
    "QmpEvent",
    "hotpluggable",
    "libxl_socket_path",
    "no_socket_error",
    "qemu_vcpus",
    "report_of",
    "set_hvm_vcpus",
    "slot_map",
]

_C = TypeVar("_C", bound="QmpClient")

#: Seconds a connect, a send or a reply may take by default.
DEFAULT_TIMEOUT = 10.0
#: Largest message accepted, in bytes (QEMU 7.2's biggest reply, query-qmp-schema, is 0.2 MB).
MAX_MESSAGE = 4 << 20
#: Events kept for :meth:`QmpClient.wait_event`; the oldest is dropped beyond this.
MAX_EVENTS = 1024


def _check_timeout(value: float, what: str = "timeout", *, zero: bool = False) -> float:
    # timeout_arg also caps it at a day: 1e300 passed here and then made settimeout()
    # raise OverflowError
    try:
        return timeout_arg(value, what, zero=zero)
    except ValueError as exc:
        need = ">= 0" if zero else "> 0"
        raise ValueError(f"{what} must be finite and {need} seconds: {exc}") from None


def no_socket_error(path: str) -> QmpError:
    """The error for a QMP socket that does not exist (errno ENOENT)."""
    return _qmp_error(
        f"no QMP socket at {path}: this domain has no QEMU device model here (a PV "
        "or PVH guest, or an HVM guest without upstream QEMU), or the toolstack runs "
        "its QEMU elsewhere (e.g. in a stub domain), where this host cannot reach "
        "its monitor",
        _errno.ENOENT,
    )


def libxl_socket_path(domid: int, run_dir: str = "/var/run/xen") -> str:
    """The QMP socket libxl gives the device model of domain ``domid`` (``qmp-libxl-<id>``).

    libxl connects to it itself for each of its own operations, and QEMU serves one
    client at a time: a caller must hold libxl's domain lock while it is connected.
    """
    return os.path.join(run_dir, f"qmp-libxl-{int(domid)}")


class QmpEvent(NamedTuple):
    """An asynchronous QMP event: its name, ``data`` and QEMU's timestamp (s, or None)."""

    name: str
    data: dict[str, Any]
    timestamp: float | None


class _Timeout(Exception):
    """Internal: the deadline passed while waiting for QEMU."""


def _qmp_error(
    message: str,
    errno: int | None = None,
    qmp_class: str = "",
    desc: str = "",
    *,
    domain: DomainRef | None = None,
    vcpu: int | None = None,
) -> QmpError:
    err = QmpError(message, errno=errno, domain=domain, vcpu=vcpu)
    err.qmp_class = qmp_class
    err.desc = desc
    return err


def _clip(data: bytes | str, limit: int = 120) -> str:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return repr(text if len(text) <= limit else text[:limit] + "...")


class QmpClient:
    """One QMP connection to QEMU.

    >>> with QmpClient("/var/run/xen/qmp-libxl-7") as qmp:       # doctest: +SKIP
    ...     qmp.execute("query-status")
    {'status': 'running', 'singlestep': False, 'running': True}

    Args:
        path: QEMU's QMP unix socket.
        timeout: seconds the connect, each send and each reply may take (finite, > 0).
        max_message: the largest message accepted, in bytes.
        max_events: how many unclaimed events are kept (the oldest is dropped beyond).

    Raises:
        QmpError: no socket (``errno`` ENOENT, the message says the domain then has no
            QEMU here), nothing listening (ECONNREFUSED), no greeting in time
            (ETIMEDOUT, e.g. another client holds the monitor), not QMP (EPROTO), or
            ``qmp_capabilities`` refused.
        PermissionDenied: the socket exists but this user may not connect.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_message: int = MAX_MESSAGE,
        max_events: int = MAX_EVENTS,
    ) -> None:
        self.path = os.fspath(path)
        self.timeout = _check_timeout(timeout)
        if isinstance(max_message, bool) or not isinstance(max_message, int) or max_message < 64:
            raise ValueError(f"max_message must be an int >= 64 bytes, not {max_message!r}")
        if isinstance(max_events, bool) or not isinstance(max_events, int) or max_events < 1:
            raise ValueError(f"max_events must be a positive int, not {max_events!r}")
        self.max_message = max_message
        #: Events dropped because the queue was full.
        self.dropped_events = 0
        #: The greeting's ``QMP`` object (``version``, ``capabilities``).
        self.greeting: dict[str, Any] = {}
        #: QEMU's (major, minor, micro) from the greeting.
        self.version: tuple[int, int, int] = (0, 0, 0)
        self._buf = bytearray()
        self._events: deque[QmpEvent] = deque(maxlen=max_events)
        self._ids = itertools.count(1)
        self._abandoned: set[int] = set()
        self._lock = threading.RLock()
        self._sock: socket.socket | None = None
        self._sock = self._connect()
        try:
            self._handshake()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ lifecycle

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.path)
        except BaseException as exc:
            sock.close()
            if isinstance(exc, OSError):
                raise self._connect_failure(exc) from None
            raise
        return sock

    def _connect_failure(self, exc: OSError) -> XenvcpuError:
        path = self.path
        if isinstance(exc, FileNotFoundError):
            return no_socket_error(path)
        if isinstance(exc, PermissionError):
            return PermissionDenied(
                f"cannot connect to the QMP socket {path}: permission denied (libxl's "
                "sockets are root-only): run as root in the control domain",
                errno=exc.errno,
            )
        if isinstance(exc, socket.timeout):
            return _qmp_error(
                f"connecting to the QMP socket {path} timed out after {self.timeout:g} s",
                _errno.ETIMEDOUT,
            )
        if isinstance(exc, ConnectionRefusedError):
            return _qmp_error(
                f"nothing accepts connections on {path} (a stale socket: has QEMU exited?)",
                _errno.ECONNREFUSED,
            )
        return _qmp_error(
            f"cannot connect to the QMP socket {path}: {exc.strerror or exc}",
            exc.errno,
        )

    def _handshake(self) -> None:
        deadline = time.monotonic() + self.timeout
        try:
            first = self._read_message(deadline)
        except _Timeout:
            raise _qmp_error(
                f"QEMU at {self.path} sent no QMP greeting within {self.timeout:g} s: another "
                "client may hold the monitor (QEMU serves one QMP connection at a time, e.g. "
                "the toolstack's), or this is not a QMP socket",
                _errno.ETIMEDOUT,
            ) from None
        greeting = first.get("QMP")
        if not isinstance(greeting, dict):
            raise self._broken(f"{self.path} is not a QMP monitor: it greeted with {first!r:.200}")
        self.greeting = greeting
        try:
            v = greeting["version"]["qemu"]
            self.version = (int(v["major"]), int(v["minor"]), int(v["micro"]))
        except (KeyError, TypeError, ValueError):
            self.version = (0, 0, 0)
        self.execute("qmp_capabilities")

    def close(self) -> None:
        """Close the connection (idempotent)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    @property
    def closed(self) -> bool:
        return self._sock is None

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        version = ".".join(map(str, self.version))
        return f"<QmpClient {self.path} QEMU {version} {state}>"

    # ------------------------------------------------------------------ framing

    def _live(self) -> socket.socket:
        if self._sock is None:
            raise _qmp_error(
                f"the QMP connection to {self.path} is closed (it failed earlier, or was "
                "closed): open a new QmpClient",
                _errno.EPIPE,
            )
        return self._sock

    def _broken(self, message: str, errno: int = _errno.EPROTO) -> QmpError:
        """The stream can no longer be framed: close it and describe why."""
        self.close()
        return _qmp_error(f"{message}; connection closed", errno)

    def _read_message(self, deadline: float) -> dict[str, Any]:
        """The next JSON object from the stream (one per line)."""
        sock = self._live()
        while True:
            end = self._buf.find(b"\n")
            if end > self.max_message or (end < 0 and len(self._buf) > self.max_message):
                raise self._broken(
                    f"QEMU at {self.path} sent a message over {self.max_message} bytes",
                    _errno.EMSGSIZE,
                )
            if end >= 0:
                line = bytes(self._buf[:end]).strip()
                del self._buf[: end + 1]
                if not line:
                    continue
                try:
                    msg = json.loads(line)
                except (ValueError, RecursionError):
                    raise self._broken(
                        f"QEMU at {self.path} sent something that is not JSON: {_clip(line)}"
                    ) from None
                if not isinstance(msg, dict):
                    raise self._broken(
                        f"QEMU at {self.path} sent a JSON value that is not an object: "
                        f"{_clip(line)}"
                    )
                return msg
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Timeout()
            try:
                sock.settimeout(left)
                chunk = sock.recv(65536)
            except socket.timeout:
                raise _Timeout() from None
            except OSError as exc:
                raise self._gone(exc) from None
            if not chunk:
                raise self._gone(None)
            self._buf += chunk

    def _gone(self, exc: OSError | None) -> QmpError:
        why = "closed the connection" if exc is None else f"broke the connection ({exc})"
        partial = " in the middle of a message" if self._buf else ""
        return self._broken(
            f"QEMU at {self.path} {why}{partial} (has the QEMU process exited?)",
            _errno.ECONNRESET,
        )

    def _event_of(self, msg: dict[str, Any]) -> QmpEvent:
        data = msg.get("data")
        stamp = msg.get("timestamp")
        when: float | None = None
        if isinstance(stamp, dict):
            try:
                when = float(stamp["seconds"]) + float(stamp["microseconds"]) / 1e6
            except (KeyError, TypeError, ValueError):
                when = None
        return QmpEvent(str(msg["event"]), data if isinstance(data, dict) else {}, when)

    def _keep(self, event: QmpEvent) -> None:
        if len(self._events) == self._events.maxlen:
            self.dropped_events += 1
        self._events.append(event)

    # ------------------------------------------------------------------ commands

    def execute(
        self,
        command: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Run one QMP command and return its ``return`` value.

        Events that arrive before the reply are queued (see :meth:`wait_event`).

        Args:
            command: e.g. ``"query-cpus-fast"``.
            arguments: the command's ``arguments`` object (JSON-serialisable).
            timeout: seconds for this command (default: the client's).

        Raises:
            QmpError: QEMU answered with an error (``qmp_class``, ``desc``); or no reply
                within the timeout (ETIMEDOUT; QEMU may still carry the command out); or
                the connection failed (ECONNRESET, EPROTO, EMSGSIZE, EPIPE once closed).
            TypeError: ``arguments`` cannot be encoded as JSON (nothing was sent).
        """
        if not isinstance(command, str) or not command:
            raise TypeError(f"command must be a non-empty str, not {command!r}")
        wait = self.timeout if timeout is None else _check_timeout(timeout)
        what = _describe(command, arguments)
        with self._lock:
            sock = self._live()
            rid = next(self._ids)
            msg: dict[str, Any] = {"execute": command, "id": rid}
            if arguments is not None:
                msg["arguments"] = dict(arguments)
            try:
                data = json.dumps(msg, ensure_ascii=True, allow_nan=False).encode() + b"\n"
            except (TypeError, ValueError) as exc:
                raise TypeError(f"QMP {what}: arguments are not JSON ({exc})") from None
            if len(data) > self.max_message:
                raise _qmp_error(
                    f"QMP {what}: the command is {len(data)} bytes, over the limit of "
                    f"{self.max_message} (nothing was sent)",
                    _errno.EMSGSIZE,
                )
            deadline = time.monotonic() + wait
            try:
                sock.settimeout(wait)
                sock.sendall(data)
            except socket.timeout:
                # Part of the command may be on the wire: the stream cannot be framed.
                raise self._broken(
                    f"QEMU at {self.path} did not accept {what} within {wait:g} s",
                    _errno.ETIMEDOUT,
                ) from None
            except OSError as exc:
                raise self._gone(exc) from None
            try:
                while True:
                    reply = self._read_message(deadline)
                    if "event" in reply:
                        self._keep(self._event_of(reply))
                        continue
                    got = reply.get("id")
                    if "return" not in reply and "error" not in reply:
                        raise self._broken(
                            f"QEMU at {self.path} answered {what} with neither 'return' nor "
                            f"'error': {_clip(json.dumps(reply))}"
                        )
                    if got != rid:
                        if isinstance(got, int) and got in self._abandoned:
                            self._abandoned.discard(got)  # the late reply of a timed-out command
                            continue
                        if got is None and "error" in reply:
                            pass  # QEMU could not read the command's id: the error is ours
                        else:
                            raise self._broken(
                                f"QEMU at {self.path} answered {what} (id {rid}) with a reply "
                                f"for id {got!r}"
                            )
                    if "error" in reply:
                        raise self._refused(what, reply["error"])
                    return reply["return"]
            except _Timeout:
                if self._buf:
                    raise self._broken(
                        f"QEMU at {self.path} stopped in the middle of its reply to {what} "
                        f"for {wait:g} s",
                        _errno.ETIMEDOUT,
                    ) from None
                self._abandoned.add(rid)
                raise _qmp_error(
                    f"QEMU at {self.path} did not answer {what} within {wait:g} s (it may "
                    "still carry it out; is QEMU stopped or overloaded?)",
                    _errno.ETIMEDOUT,
                ) from None

    def _refused(self, what: str, error: object) -> QmpError:
        if isinstance(error, dict):
            qmp_class, desc = str(error.get("class", "")), str(error.get("desc", ""))
        else:
            qmp_class, desc = "", str(error)
        return _qmp_error(
            f"QEMU at {self.path} refused {what}: {qmp_class or 'error'}: {desc}",
            None,
            qmp_class,
            desc,
        )

    # ------------------------------------------------------------------ events

    def wait_event(
        self,
        names: str | Iterable[str] | None = None,
        timeout: float | None = None,
        *,
        match: Callable[[QmpEvent], bool] | None = None,
    ) -> QmpEvent | None:
        """Take the first event named ``names`` (any name if None) for which ``match``
        holds, from the queue or, waiting at most ``timeout`` seconds (default: the
        client's; 0: only what is queued or already readable), from QEMU.

        Other events stay queued.  Returns ``None`` when no such event came in time.

        Raises:
            QmpError: the connection failed while waiting.
        """
        wanted = {names} if isinstance(names, str) else None if names is None else set(names)
        wait = self.timeout if timeout is None else _check_timeout(timeout, zero=True)

        def ok(event: QmpEvent) -> bool:
            return (wanted is None or event.name in wanted) and (match is None or match(event))

        with self._lock:
            for i, event in enumerate(self._events):
                if ok(event):
                    del self._events[i]
                    return event
            deadline = time.monotonic() + max(wait, 0.001)
            while True:
                try:
                    msg = self._read_message(deadline)
                except _Timeout:
                    return None  # a partial message stays buffered for the next read
                if "event" in msg:
                    event = self._event_of(msg)
                    if ok(event):
                        return event
                    self._keep(event)
                elif isinstance(msg.get("id"), int) and msg["id"] in self._abandoned:
                    self._abandoned.discard(msg["id"])
                else:
                    raise self._broken(
                        f"QEMU at {self.path} sent a reply with no command pending: "
                        f"{_clip(json.dumps(msg))}"
                    )

    def pending_events(self) -> list[QmpEvent]:
        """Events received but not yet taken (they stay queued)."""
        with self._lock:
            return list(self._events)

    def clear_events(self) -> list[QmpEvent]:
        """Take every queued event."""
        with self._lock:
            events = list(self._events)
            self._events.clear()
            return events


def _describe(command: str, arguments: Mapping[str, Any] | None) -> str:
    if arguments and "id" in arguments:
        return f"{command} (id {arguments['id']!r})"
    return command


# ---------------------------------------------------------------------------- vCPUs


class QemuCpu(NamedTuple):
    """One CPU QEMU has (``query-cpus-fast``)."""

    #: QEMU's ``cpu-index``: the vCPU number.
    cpu_index: int
    #: The CPU device's QOM path (``/machine/peripheral/<id>`` when hot-plugged with an id).
    qom_path: str
    #: Topology properties as QEMU reports them (``socket-id``, ``core-id``, ...).
    props: dict[str, Any]
    #: The host thread running it, when QEMU says.
    thread_id: int | None


class CpuSlot(NamedTuple):
    """One place for a CPU (``query-hotpluggable-cpus``)."""

    #: The CPU device type, e.g. ``'qemu64-x86_64-cpu'``: ``device_add``'s driver.
    driver: str
    #: Topology properties exactly as QEMU reports them: they go to ``device_add``.
    props: dict[str, Any]
    vcpus_count: int
    #: The QOM path of the CPU in the slot, None while the slot is free.
    qom_path: str | None

    @property
    def plugged(self) -> bool:
        return self.qom_path is not None


_TOPOLOGY = (
    "drawer-id",
    "book-id",
    "socket-id",
    "die-id",
    "cluster-id",
    "core-id",
    "thread-id",
)


def _bad_reply(client: QmpClient, command: str, detail: str) -> QmpError:
    return _qmp_error(f"QEMU at {client.path}: unexpected {command} reply: {detail}", _errno.EPROTO)


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def qemu_vcpus(client: QmpClient) -> list[QemuCpu]:
    """The CPUs QEMU has, by ``cpu-index``: ``query-cpus-fast`` (QEMU >= 2.12), else
    ``query-cpus``.

    Raises:
        QmpError: QEMU refused both, or answered something else than a list of CPUs.
    """
    command = "query-cpus-fast"
    try:
        raw = client.execute(command)
    except QmpError as exc:
        if exc.qmp_class != "CommandNotFound":
            raise
        command = "query-cpus"
        raw = client.execute(command)
    if not isinstance(raw, list):
        raise _bad_reply(client, command, f"not a list: {raw!r:.200}")
    cpus = []
    for item in raw:
        if not isinstance(item, dict):
            raise _bad_reply(client, command, f"entry is not an object: {item!r:.200}")
        index = _int_or_none(item.get("cpu-index", item.get("CPU")))
        path = item.get("qom-path", item.get("qom_path"))
        if index is None or not isinstance(path, str):
            raise _bad_reply(client, command, f"entry without cpu-index/qom-path: {item!r:.200}")
        props = item.get("props")
        thread = _int_or_none(item.get("thread-id", item.get("thread_id")))
        cpus.append(QemuCpu(index, path, dict(props) if isinstance(props, dict) else {}, thread))
    cpus.sort(key=lambda c: c.cpu_index)
    return cpus


def _topology_key(slot: CpuSlot) -> tuple[int, ...]:
    return tuple(
        value if isinstance(value, int) else -1
        for value in (slot.props.get(name, -1) for name in _TOPOLOGY)
    )


def hotpluggable(client: QmpClient) -> list[CpuSlot]:
    """Every CPU slot (``query-hotpluggable-cpus``, QEMU >= 2.7) in topology order
    (socket, die, cluster, core, thread): the order of vCPU numbers (QEMU lists them in
    reverse).

    Raises:
        QmpError: QEMU refused (``qmp_class`` ``'CommandNotFound'`` before QEMU 2.7;
            ``'GenericError'`` when the machine cannot hot-plug CPUs at all).
    """
    raw = client.execute("query-hotpluggable-cpus")
    if not isinstance(raw, list):
        raise _bad_reply(client, "query-hotpluggable-cpus", f"not a list: {raw!r:.200}")
    slots = []
    for item in raw:
        if not isinstance(item, dict):
            raise _bad_reply(client, "query-hotpluggable-cpus", f"entry: {item!r:.200}")
        driver, props = item.get("type"), item.get("props")
        count, path = _int_or_none(item.get("vcpus-count")), item.get("qom-path")
        if not isinstance(driver, str) or not isinstance(props, dict) or count is None:
            raise _bad_reply(client, "query-hotpluggable-cpus", f"entry: {item!r:.200}")
        slots.append(CpuSlot(driver, dict(props), count, path if isinstance(path, str) else None))
    slots.sort(key=_topology_key)
    return slots


def slot_map(slots: list[CpuSlot], cpus: list[QemuCpu]) -> dict[int, CpuSlot]:
    """``{vCPU number: slot}``: the N-th slot in topology order is vCPU N.

    Checked against the plugged CPUs: each plugged slot's CPU must have ``cpu-index``
    equal to its position.

    Raises:
        NotSupported: a slot holds several vCPUs (``vcpus-count`` > 1, e.g. whole cores
            on some machines), or QEMU numbers its CPUs in another order.
    """
    multi = [s for s in slots if s.vcpus_count != 1]
    if multi:
        raise NotSupported(
            f"QEMU's CPU slots hold {multi[0].vcpus_count} vCPUs each ({multi[0].driver}): "
            "only slots of one vCPU can be hot-plugged one vCPU at a time"
        )
    index_of = {c.qom_path: c.cpu_index for c in cpus}
    ordered = sorted(slots, key=_topology_key)
    for position, slot in enumerate(ordered):
        if slot.qom_path is not None and index_of.get(slot.qom_path, position) != position:
            raise NotSupported(
                f"QEMU numbers its CPUs in another order than its topology: the CPU in slot "
                f"{slot.props} ({slot.qom_path}) has cpu-index {index_of[slot.qom_path]}, "
                f"not {position}; cannot tell which slot a new vCPU number belongs to"
            )
    return dict(enumerate(ordered))


class HotplugReport(NamedTuple):
    """What :func:`set_hvm_vcpus` did (also attached to its errors, see :func:`report_of`)."""

    #: QEMU's vCPUs before.
    before: frozenset[int]
    #: The vCPUs asked for.
    wanted: frozenset[int]
    #: vCPUs QEMU created, in order.
    added: tuple[int, ...]
    #: vCPUs QEMU removed (the guest ejected them), in order.
    removed: tuple[int, ...]
    #: vCPUs asked to leave (``device_del`` accepted) that the guest has not ejected yet.
    pending: tuple[int, ...]
    #: QEMU's vCPUs at the end (read back; after a failure, the last known).
    after: frozenset[int]
    #: ``'device_add'``, ``'cpu-add'`` (QEMU < 2.7) or ``''`` when nothing was needed.
    method: str
    seconds: float

    @property
    def done(self) -> bool:
        return self.after == self.wanted

    def summary(self) -> str:
        """``added vCPU 1-2; removed none; QEMU has vCPU 0-2``."""

        def show(vcpus: Iterable[int]) -> str:
            listed = list(vcpus)
            return f"vCPU {format_ranges(listed)}" if listed else "none"

        text = f"added {show(self.added)}; removed {show(self.removed)}"
        if self.pending:
            text += f"; asked to remove, not yet ejected {show(self.pending)}"
        return f"{text}; QEMU has {show(self.after)}"


def report_of(exc: BaseException) -> HotplugReport | None:
    """The :class:`HotplugReport` attached to an error of :func:`set_hvm_vcpus`."""
    report = getattr(exc, "report", None)
    return report if isinstance(report, HotplugReport) else None


def _wanted_set(
    wanted: int | Iterable[int],
    slots: int | None,
    booted: int,
    label: str,
    domain: DomainRef | None,
) -> frozenset[int]:
    """Validate ``wanted`` against QEMU's ``slots`` (None: unknown, QEMU < 2.7)."""
    limit = f"; it has {slots} vCPU slot(s), vCPU 0-{slots - 1} (QEMU's maxcpus)" if slots else ""
    if slots is not None and slots == booted:
        limit += (
            ". QEMU was started without room for more vCPUs: its maxcpus (Xen: the domain's "
            "maxvcpus) must be above the number of vCPUs it boots with"
        )
    if isinstance(wanted, int) and not isinstance(wanted, bool):
        if wanted < 1 or (slots is not None and wanted > slots):
            top = slots if slots is not None else "maxcpus"
            raise VcpuCountError(
                f"{label}: cannot have {wanted} vCPUs; the valid range is 1..{top}{limit}",
                domain=domain,
            )
        return frozenset(range(wanted))
    if isinstance(wanted, (str, bytes)) or not isinstance(wanted, Iterable):
        raise TypeError(f"wanted must be a count or a set of vCPU numbers, not {wanted!r}")
    result = frozenset(wanted)
    for v in result:
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"vCPU numbers must be ints, not {type(v).__name__}")
    if not result:
        raise VcpuCountError(f"{label}: at least one vCPU must stay", domain=domain)
    bad = sorted(v for v in result if v < 0 or (slots is not None and v >= slots))
    if bad:
        raise VcpuCountError(
            f"{label} has no vCPU {format_ranges(bad)}{limit}", domain=domain, vcpu=bad[0]
        )
    return result


# ACPI _OST status codes of an eject request that mean the guest refused or failed it.
_OST_EJECT = 3
_OST_IN_PROGRESS = 0x84


def set_hvm_vcpus(
    client: QmpClient,
    wanted: int | Iterable[int],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    wait: bool = True,
    poll_interval: float = 0.1,
    id_prefix: str = "cpu-",
    domain: DomainRef | None = None,
) -> HotplugReport:
    """Make QEMU's vCPUs exactly ``wanted`` (a count n: vCPU 0..n-1; or a set).

    1. Read QEMU's CPUs (:func:`qemu_vcpus`) and slots (:func:`hotpluggable`); validate.
    2. Add the missing vCPUs, lowest first: ``device_add`` with ``driver`` = the slot's
       type, ``id`` = ``<id_prefix>N`` and the slot's props exactly as QEMU reported
       them; ``cpu-add`` only when QEMU has no ``query-hotpluggable-cpus`` (< 2.7).
       Read back: each added vCPU must appear with ``cpu-index`` N.
    3. Remove the extra vCPUs, highest first: ``device_del`` of the CPU's QOM path, then
       (``wait``) wait until the guest has ejected it: ``query-cpus-fast`` no longer
       lists it, checked at once and whenever a ``DEVICE_DELETED``/``ACPI_DEVICE_OST``
       event arrives or ``poll_interval`` passes, all within ``timeout`` seconds.

    Adding comes first: it does not depend on the guest, and a refused removal then
    leaves the guest with more vCPUs than asked, never fewer.  Whether the guest OS
    brings an added vCPU online is its own policy (Linux: udev, or
    ``/sys/devices/system/cpu/cpuN/online``); the hypervisor's view shows it.

    Returns:
        A :class:`HotplugReport` (``after`` equals ``wanted``, except with
        ``wait=False``, where ``pending`` lists vCPUs the guest has not ejected yet).

    Raises:
        VcpuCountError: ``wanted`` is empty or beyond QEMU's slots (nothing was done).
        NotSupported: removal on QEMU < 2.7, or slots that cannot be mapped (nothing was
            done).
        QmpError: QEMU refused a command or the connection failed.  A refused
            ``device_del`` (``acpi: device unplug request for not supported device
            type``: the guest's ACPI tables use the legacy CPU hotplug interface, as
            Xen's always do) says which vCPUs stay online and what the operator can do.
        VcpuTimeout: the guest did not eject a vCPU within ``timeout`` (``pending``).
        Every error raised after the first change carries the report of what was done
        before it (:func:`report_of`), and its message says it.
    """
    span = _check_timeout(timeout)
    poll = _check_timeout(poll_interval, "poll_interval")
    label = f"QEMU at {client.path}"
    if domain is not None:
        label = f"domain {domain}: {label}"
    start = time.monotonic()
    cpus = qemu_vcpus(client)
    before = frozenset(c.cpu_index for c in cpus)
    mapping: dict[int, CpuSlot] | None
    try:
        mapping = slot_map(hotpluggable(client), cpus)
    except QmpError as exc:
        if exc.qmp_class != "CommandNotFound":
            raise
        mapping = None  # QEMU < 2.7: cpu-add, and no removal
    slots = None if mapping is None else len(mapping)
    target = _wanted_set(wanted, slots, len(before), label, domain)
    to_add = sorted(target - before)
    to_remove = sorted(before - target, reverse=True)
    if mapping is None and to_remove:
        raise NotSupported(
            f"{label} is QEMU {'.'.join(map(str, client.version))}, older than 2.7: it can "
            f"add vCPUs (cpu-add) but not remove them; vCPU {format_ranges(to_remove)} stay "
            "(nothing was changed)",
            domain=domain,
        )
    method = "cpu-add" if mapping is None else "device_add"
    added: list[int] = []
    removed: list[int] = []
    pending: list[int] = []

    def report(after: frozenset[int]) -> HotplugReport:
        return HotplugReport(
            before,
            target,
            tuple(added),
            tuple(removed),
            tuple(pending),
            after,
            method if to_add or to_remove else "",
            time.monotonic() - start,
        )

    if not (to_add or to_remove):
        return report(before)
    inflight = ""  # the command whose outcome an error may leave unknown
    try:
        for n in to_add:
            inflight = f"adding vCPU {n}"
            if mapping is None:
                client.execute("cpu-add", {"id": n})
            else:
                slot = mapping[n]
                args = {**slot.props, "driver": slot.driver, "id": f"{id_prefix}{n}"}
                client.execute("device_add", args)
            added.append(n)
        inflight = ""
        by_index = {c.cpu_index: c for c in (qemu_vcpus(client) if added else cpus)}
        for n in added:
            cpu = by_index.get(n)
            if cpu is None or (
                mapping is not None and cpu.qom_path != f"/machine/peripheral/{id_prefix}{n}"
            ):
                where = "no CPU" if cpu is None else cpu.qom_path
                raise _qmp_error(
                    f"{label} accepted adding vCPU {n} but its cpu-index {n} is {where} "
                    f"(QEMU lists cpu-index {format_ranges(by_index) or 'none'})",
                    _errno.EPROTO,
                    domain=domain,
                    vcpu=n,
                )
        deadline = time.monotonic() + span
        for n in to_remove:
            cpu = by_index[n]
            online = before.union(added).difference(removed)
            inflight = f"the request to remove vCPU {n}"
            try:
                client.execute("device_del", {"id": cpu.qom_path})
            except QmpError as exc:
                if not exc.qmp_class:
                    raise  # the connection failed: not a refusal
                raise _unplug_refused(exc, n, online, online - target, label, domain) from None
            inflight = ""
            pending.append(n)
            if wait:
                _wait_ejected(client, cpu, deadline, poll, label, domain, to_remove, removed)
                pending.remove(n)
                removed.append(n)
        after = frozenset(c.cpu_index for c in qemu_vcpus(client))
        for n in list(pending):  # wait=False: some may be gone already
            if n not in after:
                pending.remove(n)
                removed.append(n)
        return report(after)
    except XenvcpuError as exc:
        unknown = ""
        try:
            after = frozenset(c.cpu_index for c in qemu_vcpus(client))
        except XenvcpuError:  # the connection is gone: what we know
            after = before.union(added).difference(removed)
            unknown = " (as last known: QEMU cannot be asked)"
            if inflight:
                unknown += f"; whether QEMU carried out {inflight} is unknown (no reply)"
        done = report(after)
        exc.message = f"{exc.message} [before this error: {done.summary()}{unknown}]"
        exc.args = (exc.message,)
        exc.__dict__["report"] = done
        raise


def _unplug_refused(
    exc: QmpError,
    n: int,
    online: frozenset[int],
    unwanted: frozenset[int],
    label: str,
    domain: DomainRef | None,
) -> QmpError:
    stay, extra = format_ranges(online), format_ranges(unwanted)
    if "not supported device type" in exc.desc:
        message = (
            f"{label} cannot remove vCPU {n}: {exc.qmp_class}: {exc.desc}. The guest's ACPI "
            "tables use the legacy CPU hotplug interface, which can add CPUs but not remove "
            "them (Xen's HVM guests always do: hvmloader builds their ACPI tables; a guest of "
            "plain QEMU does until its OS switches to the modern interface at boot). "
            f"vCPU {stay} stay online. To stop the guest using vCPU {extra}, offline them "
            f"inside the guest (Linux: echo 0 > /sys/devices/system/cpu/cpu{n}/online)"
        )
    else:
        message = (
            f"{label} refused to remove vCPU {n}: {exc.qmp_class}: {exc.desc}; vCPU {stay} "
            "stay online"
        )
    return _qmp_error(message, exc.errno, exc.qmp_class, exc.desc, domain=domain, vcpu=n)


def _wait_ejected(
    client: QmpClient,
    cpu: QemuCpu,
    deadline: float,
    poll: float,
    label: str,
    domain: DomainRef | None,
    to_remove: list[int],
    removed: list[int],
) -> None:
    """Wait until QEMU no longer lists ``cpu`` (the guest ejected it)."""
    device = (
        cpu.qom_path.rsplit("/", 1)[-1] if cpu.qom_path.startswith("/machine/peripheral/") else None
    )

    def ours(event: QmpEvent) -> bool:
        if event.name == "DEVICE_DELETED":
            return event.data.get("path") == cpu.qom_path or (
                device is not None and event.data.get("device") == device
            )
        info = event.data.get("info")
        if not isinstance(info, dict) or info.get("slot-type") != "CPU":
            return False
        return info.get("source") == _OST_EJECT and (
            (device is not None and info.get("device") == device)
            or info.get("slot") == str(cpu.cpu_index)
        )

    pause = min(0.01, poll)
    while True:
        if all(c.qom_path != cpu.qom_path for c in qemu_vcpus(client)):
            return
        left = deadline - time.monotonic()
        if left <= 0:
            break
        event = client.wait_event(
            ("DEVICE_DELETED", "ACPI_DEVICE_OST"), timeout=min(pause, left), match=ours
        )
        if event is not None and event.name == "ACPI_DEVICE_OST":
            status = event.data["info"].get("status")
            if status not in (0, _OST_IN_PROGRESS):
                raise _qmp_error(
                    f"{label}: the guest refused to eject vCPU {cpu.cpu_index} (ACPI _OST status "
                    f"{status!r}{_ost_meaning(status)}); vCPU {cpu.cpu_index} stays online: can "
                    "the guest OS offline it (Linux keeps its boot CPU)?",
                    _errno.EBUSY,
                    domain=domain,
                    vcpu=cpu.cpu_index,
                )
            continue
        pause = min(pause * 2, poll)
    not_asked = [v for v in to_remove if v != cpu.cpu_index and v not in removed]
    waiting = f"vCPU {cpu.cpu_index} still there (device_del accepted)"
    if not_asked:
        waiting += f"; vCPU {format_ranges(not_asked)} not asked yet"
    err = VcpuTimeout(
        f"{label}: the guest did not eject vCPU {cpu.cpu_index} within the timeout: {waiting}. "
        "The request stays pending in QEMU and the guest may still eject it later; does its "
        "kernel support ACPI CPU hot-remove (Linux: CONFIG_ACPI_HOTPLUG_CPU) and can it "
        "offline that vCPU?",
        domain=domain,
        vcpu=cpu.cpu_index,
    )
    err.pending = tuple(sorted([cpu.cpu_index, *not_asked]))
    raise err


_OST_MEANING = {
    0x80: "ejection not supported by the guest OS",
    0x81: "device in use by an application",
    0x82: "device busy",
    0x83: "ejection dependency busy or not supported",
}


def _ost_meaning(status: object) -> str:
    meaning = _OST_MEANING.get(status) if isinstance(status, int) else None
    return f": {meaning}" if meaning else ""
