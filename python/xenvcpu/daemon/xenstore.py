"""A xenstore wire-protocol client in pure Python (xen-interfaces.md §5).

Talks to xenstored over its unix socket, or to the kernel's xenbus device when
xenstored runs in a stub domain (xen-interfaces.md §5.1).  Every message, both ways, is a 16-byte
header (type, req_id, tx_id, len; native little-endian u32) followed by ``len``
payload bytes (xen-interfaces.md §5.2).

Guarantees:

* Paths and payload sizes are checked **before** anything is sent (xen-interfaces.md §5.2: an
  oversized payload makes xenstored drop the connection).
* Every wait has a deadline (``timeout`` seconds, finite and > 0, default 10); a timeout
  raises :class:`~xenvcpu.errors.XenstoreError` with ``errno == ETIMEDOUT``.  A timeout
  on a message boundary leaves the connection usable: input is framed from a private
  buffer and replies are matched by ``req_id``, so the late reply to an abandoned
  request is recognised and dropped.
* The connection is closed as soon as its framing can no longer be trusted, and every
  later call raises (``errno`` EIO, "closed"; open a new client): a timeout with part of
  a message received, a send that timed out, a length over the caps
  (:data:`~xenvcpu._limits.MAX_XS_MESSAGE`, :data:`~xenvcpu._limits.MAX_XS_EVENT` for a
  watch event), a reply to a request never sent (or answered already), a reply of the
  wrong type, end of stream, an I/O error.
* ``ERROR`` replies become :class:`~xenvcpu.errors.XenstoreError` with the errno number
  in ``.errno`` and its name (``'ENOENT'``) in ``.name``; the connection stays usable.
* Unsolicited ``WATCH_EVENT`` messages are queued whenever they arrive and handed out
  by :meth:`XenstoreClient.read_watch`.  The queue is bounded
  (:data:`~xenvcpu._limits.MAX_XS_EVENTS` by default): beyond it the oldest event is
  dropped and counted in :attr:`XenstoreClient.dropped_events`, so a consumer that falls
  behind must re-read the nodes it watches rather than rely on seeing every change
  (xenstored itself may coalesce events too).

Not thread-safe for concurrent use beyond the internal lock that serialises requests;
use one client per thread when a thread blocks in :meth:`XenstoreClient.read_watch`.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import itertools
import os
import random
import select
import socket
import stat
import struct
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from enum import IntEnum
from typing import (
    Callable,
    NamedTuple,
    TypeVar,
)

from xenvcpu._limits import (
    MAX_TX_ATTEMPTS,
    MAX_XS_EVENT,
    MAX_XS_EVENTS,
    MAX_XS_MESSAGE,
    ascii_uint,
    count_arg,
    timeout_arg,
)
from xenvcpu.errors import PermissionDenied, XenstoreError

__all__ = [
    "ABS_PATH_MAX",
    "DEFAULT_TIMEOUT",
    "ERROR_NAMES",
    "PAYLOAD_MAX",
    "POLL_BYTES",
    "REL_PATH_MAX",
    "EndpointStatus",
    "Op",
    "Transaction",
    "WatchEvent",
    "WatchPoll",
    "XenstoreClient",
    "candidate_endpoints",
    "probe_endpoints",
    "validate_path",
]

T = TypeVar("T")
_C = TypeVar("_C", bound="XenstoreClient")

#: Seconds every request (and every wait) may take by default.
DEFAULT_TIMEOUT = 10.0

#: XENSTORE_PAYLOAD_MAX: the largest payload either side may send (xen-interfaces.md §5.2).
PAYLOAD_MAX = 4096
#: Longest absolute / relative path xenstored accepts (xen-interfaces.md §5.2).
ABS_PATH_MAX = 3072
REL_PATH_MAX = 2048

_HEADER = struct.Struct("<4I")  # xsd_sockmsg: type, req_id, tx_id, len (xen-interfaces.md §5.2, §8)
_U32_MAX = 0xFFFFFFFF
# How many timed-out requests are remembered so that their late replies can be dropped;
# the late reply of an older one is taken for a stream out of step (the connection is
# closed). Only timeouts on a message boundary add to it.
_ABANDONED_KEPT = 1024
#: How many requests :meth:`XenstoreClient.try_read_many` sends in one write.
PIPELINE = 64
#: How many bytes :meth:`XenstoreClient.poll_watches` reads at most by default.
POLL_BYTES = 1 << 18

_PATH_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-/_@")


class Op(IntEnum):
    """Message types (``enum xsd_sockmsg_type``, xen-interfaces.md §5.2)."""

    DEBUG = 0
    DIRECTORY = 1
    READ = 2
    GET_PERMS = 3
    WATCH = 4
    UNWATCH = 5
    TRANSACTION_START = 6
    TRANSACTION_END = 7
    INTRODUCE = 8
    RELEASE = 9
    GET_DOMAIN_PATH = 10
    WRITE = 11
    MKDIR = 12
    RM = 13
    SET_PERMS = 14
    WATCH_EVENT = 15
    ERROR = 16
    IS_DOMAIN_INTRODUCED = 17
    RESUME = 18
    SET_TARGET = 19
    RESET_WATCHES = 21
    DIRECTORY_PART = 22


#: Error names in protocol order (``xsd_errors``, xen-interfaces.md §5.3); the numbers are Linux's.
ERROR_NAMES: tuple[str, ...] = (
    "EINVAL",
    "EACCES",
    "EEXIST",
    "EISDIR",
    "ENOENT",
    "ENOMEM",
    "ENOSPC",
    "EIO",
    "ENOTEMPTY",
    "ENOSYS",
    "EROFS",
    "EBUSY",
    "EAGAIN",
    "EISCONN",
    "E2BIG",
    "EPERM",
)

# oxenstored answers quota overruns with "EQUOTA", which has no errno of its own.
_EXTRA_ERRNOS = {"EQUOTA": _errno.EDQUOT}


class WatchEvent(NamedTuple):
    """A ``WATCH_EVENT``: the node that changed (or the watched path) and the token."""

    path: str
    token: str


class WatchPoll(NamedTuple):
    """What :meth:`XenstoreClient.poll_watches` found."""

    #: every event received and not yet handed out, oldest first
    events: list[WatchEvent]
    #: bytes read from the connection by this call
    received: int
    #: True when input was still waiting after the bytes this call may read
    backlog: bool


def _errno_of(name: str) -> int | None:
    if name in _EXTRA_ERRNOS:
        return _EXTRA_ERRNOS[name]
    value = getattr(_errno, name, None)
    return value if isinstance(value, int) else None


def _xs_error(message: str, name: str, number: int | None = None) -> XenstoreError:
    err = XenstoreError(message, errno=number if number is not None else _errno_of(name))
    err.name = name
    return err


def _clip(data: bytes | str, limit: int = 80) -> str:
    """A short printable rendering of something a daemon sent, for messages."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _utf8(text: str, what: str) -> bytes:
    """``text`` as UTF-8; a lone surrogate is an EINVAL XenstoreError, not a UnicodeError."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _xs_error(
            f"{what} {_clip(text)} cannot be sent: character {exc.start} is a lone "
            "surrogate, not valid in UTF-8",
            "EINVAL",
        ) from None


def validate_path(path: str) -> bytes:
    """Check a xenstore path against xenstored's rules and return it encoded.

    Rules (xen-interfaces.md §5.2): ASCII letters, digits and ``- / _ @`` only; absolute paths at
    most 3072 bytes, relative ones (relative to the connection's home, ``/local/domain/<id>``)
    at most 2048; no empty component (``//``) and no trailing ``/`` except for ``/``.
    Special watch paths such as ``@releaseDomain`` need no exception: ``@`` is an allowed
    character (to xenstored a relative path may even begin with it).  oxenstored is
    stricter than these rules: it refuses any path longer than 2048 bytes, absolute or
    not, with EINVAL (seen with Debian's 4.17 build); that reply is an ordinary error.

    Raises:
        XenstoreError: ``errno`` EINVAL (bad characters or shape) or E2BIG (too long),
            with a message naming the path and the rule.
    """
    if not isinstance(path, str):
        raise TypeError(f"xenstore path must be str, not {type(path).__name__}")
    if not path:
        raise _xs_error("invalid xenstore path: empty", "EINVAL")
    bad = sorted({c for c in path if c not in _PATH_CHARS})
    if bad:
        shown = "".join(bad)
        raise _xs_error(
            f"invalid xenstore path {path!r}: character(s) {shown!r} not allowed "
            "(only ASCII letters, digits and - / _ @)",
            "EINVAL",
        )
    limit = ABS_PATH_MAX if path.startswith("/") else REL_PATH_MAX
    if len(path) > limit:
        kind = "absolute" if path.startswith("/") else "relative"
        raise _xs_error(
            f"xenstore path too long: {len(path)} bytes, an {kind} path may have at most {limit}",
            "E2BIG",
        )
    if "//" in path:
        raise _xs_error(f"invalid xenstore path {path!r}: empty component ('//')", "EINVAL")
    if path.endswith("/") and path != "/":
        raise _xs_error(f"invalid xenstore path {path!r}: trailing '/'", "EINVAL")
    return path.encode("ascii")


def candidate_endpoints() -> list[str]:
    """Where :class:`XenstoreClient` looks, in order (xen-interfaces.md §5.1, like ``xs_open()``).

    ``XENSTORED_PATH`` alone when set; otherwise ``$XENSTORED_RUNDIR/socket`` (or
    ``/run/xenstored/socket`` and ``/var/run/xenstored/socket``), then the kernel device
    ``/dev/xen/xenbus`` and ``/proc/xen/xenbus``.
    """
    env = os.environ.get("XENSTORED_PATH")
    if env:
        return [env]
    rundir = os.environ.get("XENSTORED_RUNDIR")
    sockets = (
        [os.path.join(rundir, "socket")]
        if rundir
        else ["/run/xenstored/socket", "/var/run/xenstored/socket"]
    )
    return [*sockets, "/dev/xen/xenbus", "/proc/xen/xenbus"]


# --------------------------------------------------------------------------- transports


class _Timeout(Exception):
    """Internal: a deadline passed while waiting for the daemon."""


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _Timeout()
    return left


def _poller(fd: int) -> select.poll:
    """A poll object for input on ``fd``: ``bool(p.poll(0))`` says whether it has input
    (or end of stream, or an error) now, in one system call and without waiting."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return poller


class _Transport:
    name: str

    def send(self, data: bytes, deadline: float) -> None:
        raise NotImplementedError

    def recv(self, deadline: float) -> bytes:
        """Return some bytes (b"" at end of stream) or raise _Timeout."""
        raise NotImplementedError

    def readable(self) -> bool:
        """Whether a recv() would return at once (data or end of stream): never waits."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _SocketTransport(_Transport):
    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self.name = name
        self._input = _poller(sock.fileno())

    def send(self, data: bytes, deadline: float) -> None:
        try:
            self.sock.settimeout(_remaining(deadline))
            self.sock.sendall(data)
        except socket.timeout as exc:
            raise _Timeout() from exc

    def recv(self, deadline: float) -> bytes:
        try:
            self.sock.settimeout(_remaining(deadline))
            return self.sock.recv(65536)
        except socket.timeout as exc:
            raise _Timeout() from exc

    def readable(self) -> bool:
        return bool(self._input.poll(0))

    def close(self) -> None:
        self.sock.close()


class _FdTransport(_Transport):
    """The xenbus character device (or any stream fd): poll() gives the timeouts."""

    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self.name = name
        self._input = _poller(fd)

    def _wait(self, events: int, deadline: float) -> None:
        poller = select.poll()
        poller.register(self.fd, events)
        while True:
            ms = max(1, int(_remaining(deadline) * 1000))
            if poller.poll(ms):
                return

    def send(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            self._wait(select.POLLOUT, deadline)
            written = os.write(self.fd, view)
            view = view[written:]

    def recv(self, deadline: float) -> bytes:
        self._wait(select.POLLIN, deadline)
        return os.read(self.fd, 65536)

    def readable(self) -> bool:
        return bool(self._input.poll(0))

    def close(self) -> None:
        os.close(self.fd)


def _token(token: str) -> bytes:
    if not isinstance(token, str):
        raise TypeError(f"watch token must be a str, not {type(token).__name__}")
    if "\0" in token:
        raise ValueError("watch token must not contain NUL")
    return _utf8(token, "watch token")


def _describe_oserror(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _open_one(path: str, timeout: float) -> _Transport:
    """Open one endpoint; OSError propagates to the caller."""
    mode = os.stat(path).st_mode
    if stat.S_ISSOCK(mode):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        deadline = time.monotonic() + timeout
        try:
            sock.settimeout(timeout)
            while True:
                try:
                    sock.connect(path)
                    break
                except BlockingIOError:
                    # EAGAIN: the daemon's listen backlog is full (it is busy accepting);
                    # a unix socket says so at once instead of waiting: wait here.
                    if time.monotonic() >= deadline:
                        raise socket.timeout("the listen backlog stayed full") from None
                    time.sleep(0.005)
        except BaseException:
            sock.close()
            raise
        return _SocketTransport(sock, path)
    # /dev/xen/xenbus is a character device, /proc/xen/xenbus a (xenfs) regular file.
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    return _FdTransport(fd, path)


def _open_endpoint(path: str | None, timeout: float) -> _Transport:
    candidates = [path] if path else candidate_endpoints()
    failures: list[tuple[str, OSError]] = []
    for candidate in candidates:
        try:
            return _open_one(candidate, timeout)
        except FileNotFoundError as exc:
            if path:  # asked for exactly this one
                failures.append((candidate, exc))
            continue
        except socket.timeout as exc:
            failures.append((candidate, OSError(_errno.ETIMEDOUT, f"connect timed out: {exc}")))
        except OSError as exc:
            failures.append((candidate, exc))
    denied = [(p, e) for p, e in failures if e.errno in (_errno.EACCES, _errno.EPERM)]
    if denied:
        where = denied[0][0]
        # xen-interfaces.md §7: non-root gets EACCES on the 0600 socket and on /dev/xen/xenbus.
        raise PermissionDenied(
            f"cannot open xenstore at {where}: permission denied (the socket and the xenbus "
            "device are root-only, mode 0600): run as root in the control domain (dom0), "
            "e.g. with sudo",
            errno=_errno.EACCES,
        )
    if failures:
        detail = "; ".join(f"{p}: {_describe_oserror(e)}" for p, e in failures)
        first = failures[0][1].errno
        name = _errno.errorcode.get(first, "EIO") if first is not None else "EIO"
        hint = (
            " (a stale socket: is xenstored running?)"
            if any(e.errno == _errno.ECONNREFUSED for _, e in failures)
            else ""
        )
        raise _xs_error(f"cannot connect to xenstore: {detail}{hint}", name, first)
    raise _xs_error(
        "no xenstore endpoint found (tried "
        + ", ".join(candidates)
        + "): is this a Xen control domain with xenstored running? "
        "Set XENSTORED_PATH to use another socket",
        "ENOENT",
    )


# ------------------------------------------------------------------------------ client


class XenstoreClient:
    """One connection to xenstored (or the xenbus device).

    >>> with XenstoreClient() as xs:                       # doctest: +SKIP
    ...     xs.write("/local/domain/3/cpu/1/availability", "offline")

    Args:
        path: socket or device to use; default: :func:`candidate_endpoints` in order.
        timeout: seconds any single request or wait may take (finite, > 0, at most a
            day); also settable later through the attribute.
        max_events: how many unclaimed watch events are kept (the oldest is dropped
            and counted in :attr:`dropped_events` beyond).

    Raises:
        PermissionDenied: the endpoint exists but only root may open it (xen-interfaces.md §7).
        XenstoreError: no endpoint could be opened (``errno`` says why).
        ValueError, TypeError: a bad ``timeout`` or ``max_events`` (nothing is opened).
    """

    #: Watch events dropped because the queue was full (see the module docstring).
    dropped_events: int

    def __init__(
        self,
        path: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_events: int = MAX_XS_EVENTS,
    ) -> None:
        self.timeout = timeout
        self._init_state(max_events)
        self._transport: _Transport | None = _open_endpoint(path, self.timeout)
        self.endpoint = self._transport.name

    @classmethod
    def from_fd(
        cls,
        fd: int,
        *,
        name: str = "<fd>",
        timeout: float = DEFAULT_TIMEOUT,
        max_events: int = MAX_XS_EVENTS,
    ) -> XenstoreClient:
        """Wrap an already open stream fd (a xenbus device fd); the client owns it."""
        self = cls.__new__(cls)
        self.timeout = timeout
        self._init_state(max_events)
        self._transport = _FdTransport(fd, name)
        self.endpoint = name
        return self

    def _init_state(self, max_events: int) -> None:
        count_arg(max_events, "max_events", 1, 1 << 20)
        self._buf = bytearray()
        self._events: deque[WatchEvent] = deque(maxlen=max_events)
        self.dropped_events = 0
        # rid -> None, oldest first: requests that timed out, whose replies may come late
        self._abandoned: dict[int, None] = {}
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        self._tokens = itertools.count(1)

    @property
    def timeout(self) -> float:
        """Seconds a request (or a wait without its own timeout) may take."""
        return self._timeout

    @timeout.setter
    def timeout(self, value: float) -> None:
        self._timeout = timeout_arg(value, "xenstore client timeout", zero=False)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close the connection (idempotent).  Watches die with it."""
        with self._lock:
            if self._transport is not None:
                self._transport.close()
                self._transport = None

    @property
    def closed(self) -> bool:
        return self._transport is None

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<XenstoreClient {self.endpoint} {state}>"

    # ------------------------------------------------------------------ framing

    def _live(self) -> _Transport:
        if self._transport is None:
            raise _xs_error(
                f"xenstore connection to {self.endpoint} is closed (it failed earlier, or "
                "was closed): open a new XenstoreClient",
                "EIO",
            )
        return self._transport

    def _broken(self, message: str, name: str = "EIO") -> XenstoreError:
        """The stream can no longer be framed: close it and describe why."""
        self.close()
        return _xs_error(f"{message}; connection closed", name)

    def _next_id(self) -> int:
        rid = next(self._ids) & 0xFFFFFFFF
        if rid == 0:  # 0 is what unsolicited watch events carry
            rid = next(self._ids) & 0xFFFFFFFF
        return rid

    def _read_message(self, deadline: float) -> tuple[int, int, int, bytes]:
        """Next complete message from the stream (type, req_id, tx_id, payload)."""
        transport = self._live()
        while True:
            message = self._take_message()
            if message is not None:
                return message
            self._receive(transport, deadline)

    def _take_message(self) -> tuple[int, int, int, bytes] | None:
        """The next complete message already received, or None (nothing is read)."""
        if len(self._buf) < _HEADER.size:
            return None
        mtype, rid, tx, length = _HEADER.unpack_from(self._buf)
        limit = MAX_XS_EVENT if mtype == Op.WATCH_EVENT else MAX_XS_MESSAGE
        if length > limit:  # checked before any of it is awaited or kept
            kind = "watch event" if mtype == Op.WATCH_EVENT else "message"
            raise self._broken(
                f"xenstore stream from {self.endpoint} is corrupt: a {kind} of "
                f"{length} bytes, over the limit of {limit}"
            )
        end = _HEADER.size + length
        if len(self._buf) < end:
            return None
        payload = bytes(self._buf[_HEADER.size : end])
        del self._buf[:end]
        return mtype, rid, tx, payload

    def _receive(self, transport: _Transport, deadline: float) -> int:
        """Append what the daemon sent next to the buffer; returns how many bytes."""
        chunk = transport.recv(deadline)
        if not chunk:
            partial = " in the middle of a message" if self._buf else ""
            raise self._broken(
                f"xenstored closed the connection ({self.endpoint}){partial}", "ECONNRESET"
            )
        self._buf += chunk
        return len(chunk)

    def _queue_event(self, payload: bytes) -> None:
        parts = payload.split(b"\0", 2)
        path = parts[0].decode("utf-8", "replace")
        token = parts[1].decode("utf-8", "replace") if len(parts) > 1 else ""
        if len(self._events) == self._events.maxlen:
            self.dropped_events += 1
        self._events.append(WatchEvent(path, token))

    def _abandon(self, rid: int) -> None:
        """Remember a request that timed out on a message boundary: its reply may come."""
        self._abandoned[rid] = None
        if len(self._abandoned) > _ABANDONED_KEPT:
            del self._abandoned[next(iter(self._abandoned))]

    def _late_reply(self, rid: int, mtype: int) -> None:
        """A reply that is not the one awaited: the late reply of an abandoned request is
        dropped; any other means the stream is out of step, and closes the connection."""
        if rid in self._abandoned:
            del self._abandoned[rid]
            return
        raise self._broken(
            f"xenstored at {self.endpoint} sent a reply (type {mtype}) to request {rid}, "
            "which was never sent or was answered already: the stream is out of step"
        )

    def _request(self, op: Op, payload: bytes, tx: int = 0, *, what: str = "") -> bytes:
        """Send one request and return the payload of its reply (an error reply raises)."""
        got = self._requests([(op, payload, what or op.name)], tx)[0]
        if isinstance(got, XenstoreError):
            raise got
        return got

    def _requests(
        self, batch: Sequence[tuple[Op, bytes, str]], tx: int = 0
    ) -> list[bytes | XenstoreError]:
        """Send requests ``(op, payload, what)`` in one write and return, in order, each
        reply's payload or the error its error reply names (not raised). xenstored answers
        a connection's requests in order and every reply carries its request's id, so a
        batch costs one round trip instead of one per request.

        The single choke point of the client: everything goes through here. Anything but
        an error reply (a timeout, a broken stream) fails the whole batch.
        """
        if not batch:
            return []
        what = batch[0][2] if len(batch) == 1 else f"{batch[0][2]} and {len(batch) - 1} more"
        if isinstance(tx, bool) or not isinstance(tx, int):
            raise TypeError(f"xenstore transaction id must be an int, not {type(tx).__name__}")
        if not 0 <= tx <= _U32_MAX:
            raise _xs_error(
                f"xenstore {what}: transaction id {_clip(str(tx), 24)} is outside "
                f"0..{_U32_MAX} (nothing was sent)",
                "EINVAL",
            )
        for _, payload, one in batch:
            if len(payload) > PAYLOAD_MAX:
                # xen-interfaces.md §5.2: xenstored would drop the connection; refuse
                # before sending.
                raise _xs_error(
                    f"xenstore {one}: payload of {len(payload)} bytes exceeds the protocol "
                    f"limit of {PAYLOAD_MAX} bytes (nothing was sent)",
                    "E2BIG",
                )
        with self._lock:
            transport = self._live()
            rids = [self._next_id() for _ in batch]
            wait = self.timeout
            deadline = time.monotonic() + wait
            data = b"".join(
                _HEADER.pack(op, rid, tx, len(payload)) + payload
                for (op, payload, _), rid in zip(batch, rids)
            )
            try:
                transport.send(data, deadline)
            except _Timeout:
                # Part of the message may be on the wire: the stream can no longer be
                # framed, so this connection is finished.
                raise self._broken(
                    f"xenstored at {self.endpoint} did not accept {what} within {wait:g} s",
                    "ETIMEDOUT",
                ) from None
            except OSError as exc:
                raise self._io_failure(what, exc) from exc
            pending = {rid: k for k, rid in enumerate(rids)}  # not answered yet
            got: dict[int, bytes | XenstoreError] = {}
            try:
                while pending:
                    mtype, got_rid, _tx, body = self._read_message(deadline)
                    if mtype == Op.WATCH_EVENT:
                        self._queue_event(body)
                        continue
                    k = pending.pop(got_rid, None)
                    if k is None:
                        self._late_reply(got_rid, mtype)
                        continue
                    op, _, one = batch[k]
                    if mtype == Op.ERROR:
                        got[k] = self._error_reply(one, body)
                    elif mtype != op:
                        raise self._broken(
                            f"xenstore {one}: unexpected reply type {mtype} "
                            f"to request type {int(op)}"
                        )
                    else:
                        got[k] = body
                return [got[k] for k in range(len(batch))]
            except _Timeout:
                if self._buf:
                    # Part of a message came and the rest did not: whatever follows can
                    # no longer be framed (a peer that never finishes it would have its
                    # next replies read as the rest of this one).
                    raise self._broken(
                        f"xenstored at {self.endpoint} stopped in the middle of a message "
                        f"while answering {what} (waited {wait:g} s)",
                        "ETIMEDOUT",
                    ) from None
                for rid in pending:
                    self._abandon(rid)
                raise _xs_error(
                    f"xenstored at {self.endpoint} did not answer {what} within {wait:g} s",
                    "ETIMEDOUT",
                ) from None
            except OSError as exc:
                raise self._io_failure(what, exc) from exc
            except BaseException:
                # Interrupted (KeyboardInterrupt, ...) while waiting: keep the stream
                # framable, as a timeout would.
                if pending and not self.closed:
                    if self._buf:
                        self.close()
                    else:
                        for rid in pending:
                            self._abandon(rid)
                raise

    def _error_reply(self, what: str, body: bytes) -> XenstoreError:
        """The XenstoreError for an ``ERROR`` reply (its payload is the errno's name)."""
        text = body.rstrip(b"\0")
        if not text:
            name = "EINVAL"
        elif len(text) <= 32 and text.isascii() and text.replace(b"_", b"").isalnum():
            name = text.decode("ascii")
        else:
            return _xs_error(
                f"xenstore {what}: error reply with an unknown error name {_clip(text, 40)}",
                "EIO",
            )
        number = _errno_of(name)
        reason = os.strerror(number) if number is not None else "unknown error"
        hint = ""
        if name == "EACCES":
            # xen-interfaces.md §7: node permissions; dom0's root connection may do anything
            hint = (
                "; this connection lacks permission on the node (run as "
                "root in dom0, or check the node's permissions)"
            )
        return _xs_error(f"xenstore {what}: {name} ({reason}){hint}", name, number)

    def _io_failure(self, what: str, exc: OSError) -> XenstoreError:
        """The stream broke mid-request: close the connection, describe the failure."""
        self.close()
        return _xs_error(
            f"xenstore {what}: I/O error on {self.endpoint}: {_describe_oserror(exc)}",
            _errno.errorcode.get(exc.errno or _errno.EIO, "EIO"),
            exc.errno,
        )

    # ------------------------------------------------------------------ operations

    def read(self, path: str, *, tx: int = 0) -> bytes:
        """Value of a node (raw bytes, xen-interfaces.md §5.3).  ENOENT → XenstoreError(errno=2)."""
        return self._request(Op.READ, validate_path(path) + b"\0", tx, what=f"READ {path}")

    def read_text(self, path: str, *, tx: int = 0) -> str:
        """Value of a node decoded as UTF-8 (invalid bytes replaced)."""
        return self.read(path, tx=tx).decode("utf-8", "replace")

    def try_read(self, path: str, *, tx: int = 0) -> bytes | None:
        """Like :meth:`read` but ``None`` when the node does not exist."""
        try:
            return self.read(path, tx=tx)
        except XenstoreError as exc:
            if exc.errno == _errno.ENOENT:
                return None
            raise

    def exists(self, path: str, *, tx: int = 0) -> bool:
        return self.try_read(path, tx=tx) is not None

    def try_read_many(self, paths: Sequence[str], *, tx: int = 0) -> list[bytes | None]:
        """:meth:`try_read` of every path, the requests sent :data:`PIPELINE` at a time (one
        round trip each, not one per path). The first error other than ENOENT raises."""
        out: list[bytes | None] = []
        for at in range(0, len(paths), PIPELINE):
            batch = [
                (Op.READ, validate_path(p) + b"\0", f"READ {p}") for p in paths[at : at + PIPELINE]
            ]
            for got in self._requests(batch, tx):
                if isinstance(got, XenstoreError):
                    if got.errno != _errno.ENOENT:
                        raise got
                    out.append(None)
                else:
                    out.append(got)
        return out

    def write(self, path: str, value: bytes | str, *, tx: int = 0) -> None:
        """Set a node, creating missing parents (xen-interfaces.md §5.3)."""
        data = _utf8(value, f"WRITE {path}: the value") if isinstance(value, str) else bytes(value)
        self._request(Op.WRITE, validate_path(path) + b"\0" + data, tx, what=f"WRITE {path}")

    def mkdir(self, path: str, *, tx: int = 0) -> None:
        self._request(Op.MKDIR, validate_path(path) + b"\0", tx, what=f"MKDIR {path}")

    def rm(self, path: str, *, tx: int = 0) -> None:
        """Remove a node and everything below it."""
        self._request(Op.RM, validate_path(path) + b"\0", tx, what=f"RM {path}")

    def directory(self, path: str, *, tx: int = 0, max_entries: int | None = None) -> list[str]:
        """Names of the children of a node (in xenstored's order; bytes that are not
        UTF-8 read as U+FFFD).

        The reply is at most :data:`~xenvcpu._limits.MAX_XS_MESSAGE` bytes; a caller that
        does work per name bounds it further with ``max_entries``: a longer listing is
        refused before any name is decoded.

        Raises:
            XenstoreError: ``errno`` E2BIG when the node has more than ``max_entries``
                children (the message names the cap).
        """
        if max_entries is not None:
            count_arg(max_entries, "max_entries", 0, MAX_XS_MESSAGE)
        body = self._request(
            Op.DIRECTORY, validate_path(path) + b"\0", tx, what=f"DIRECTORY {path}"
        )
        if max_entries is not None:
            # Names are NUL-terminated: an upper bound on their number, without splitting.
            count = body.count(b"\0") + (0 if body.endswith(b"\0") or not body else 1)
            if count > max_entries:
                raise _xs_error(
                    f"xenstore DIRECTORY {path}: {count} entries, more than the "
                    f"{max_entries} expected there",
                    "E2BIG",
                )
        return [p.decode("utf-8", "replace") for p in body.split(b"\0") if p]

    def get_domain_path(self, domid: int) -> str:
        count_arg(domid, "domid", 0, 0xFFFF)  # domid_t is 16 bits
        body = self._request(
            Op.GET_DOMAIN_PATH, f"{domid}\0".encode(), what=f"GET_DOMAIN_PATH {domid}"
        )
        return body.rstrip(b"\0").decode("ascii", "replace")

    # ------------------------------------------------------------------ transactions

    def transaction_start(self) -> int:
        """Start a transaction and return its id (header tx_id must be 0, xen-interfaces.md
        §5.3)."""
        body = self._request(Op.TRANSACTION_START, b"\0", 0)
        text = body.rstrip(b"\0").decode("ascii", "replace")
        tx = ascii_uint(text, _U32_MAX + 1)
        if not tx:  # 0 means "no transaction"; a header's tx_id has 32 bits
            raise _xs_error(
                f"xenstore TRANSACTION_START: bad transaction id {_clip(text, 24)} (expected "
                f"a number from 1 to {_U32_MAX})",
                "EIO",
            )
        return tx

    def transaction_end(self, tx: int, *, commit: bool = True) -> None:
        """Commit (or abort) a transaction; a conflict raises errno EAGAIN (xen-interfaces.md
        §5.3)."""
        self._request(
            Op.TRANSACTION_END,
            b"T\0" if commit else b"F\0",
            tx,
            what="TRANSACTION_END commit" if commit else "TRANSACTION_END abort",
        )

    def transaction(
        self,
        body: Callable[[Transaction], T],
        *,
        max_attempts: int = 16,
        backoff: float = 0.002,
    ) -> T:
        """Run ``body(tx)`` inside a transaction; redo the whole body on conflict.

        ``body`` receives a :class:`Transaction` (with read/write/... bound to it) and
        may be called several times, so it must only act through ``tx`` (and be free of
        other side effects).  On EAGAIN -- at commit or from any request in the body --
        the transaction is ended and the body run again, up to ``max_attempts`` times in
        all, with a short randomised back-off (xen-interfaces.md §5.3, §5.5: "redo whole
        transaction"). Any other exception aborts the transaction and propagates.

        Raises:
            XenstoreError: errno EAGAIN after ``max_attempts`` conflicting attempts.
            ValueError, TypeError: ``max_attempts`` outside 1..MAX_TX_ATTEMPTS, or a
                ``backoff`` that is not a finite number of seconds.
        """
        count_arg(max_attempts, "max_attempts", 1, MAX_TX_ATTEMPTS)
        backoff = timeout_arg(backoff, "backoff")
        for attempt in range(1, max_attempts + 1):
            try:
                tx = Transaction(self, self.transaction_start(), attempt)
            except XenstoreError as exc:
                if exc.errno != _errno.EAGAIN:  # a busy daemon may refuse to start one
                    raise
                time.sleep(random.uniform(0, backoff * min(attempt, 10)))
                continue
            try:
                result = body(tx)
            except XenstoreError as exc:
                if exc.errno != _errno.ETIMEDOUT:  # else: the daemon is not answering
                    self._abort_quietly(tx.id)
                if exc.errno != _errno.EAGAIN:
                    raise
            except BaseException:
                self._abort_quietly(tx.id)
                raise
            else:
                try:
                    self.transaction_end(tx.id, commit=True)
                    return result
                except XenstoreError as exc:
                    if exc.errno != _errno.EAGAIN:
                        raise
            if attempt < max_attempts:
                time.sleep(random.uniform(0, backoff * min(attempt, 10)))
        raise _xs_error(
            f"xenstore transaction still conflicting after {max_attempts} attempts (EAGAIN): "
            "another writer keeps changing the same nodes",
            "EAGAIN",
        )

    def _abort_quietly(self, tx: int) -> None:
        if self.closed:
            return
        with contextlib.suppress(XenstoreError):
            self.transaction_end(tx, commit=False)

    # ------------------------------------------------------------------ watches

    def watch(self, path: str, token: str | None = None) -> str:
        """Watch ``path`` and everything below it; return the token.

        xenstored fires the watch once immediately (xen-interfaces.md §5.3), so the first
        :meth:`read_watch` returns an event for ``path`` itself.
        """
        if token is None:
            token = f"xenvcpu-{os.getpid()}-{next(self._tokens)}"
        payload = validate_path(path) + b"\0" + _token(token) + b"\0"
        self._request(Op.WATCH, payload, what=f"WATCH {path}")
        return token

    def unwatch(self, path: str, token: str) -> None:
        """Remove a watch; events already queued for it are dropped too."""
        payload = validate_path(path) + b"\0" + _token(token) + b"\0"
        self._request(Op.UNWATCH, payload, what=f"UNWATCH {path}")
        with self._lock:
            kept = (e for e in self._events if e.token != token)
            self._events = deque(kept, maxlen=self._events.maxlen)

    @contextlib.contextmanager
    def watching(self, path: str, token: str | None = None) -> Iterator[str]:
        """``with xs.watching(path) as token:`` -- watch for the duration of the block."""
        token = self.watch(path, token)
        try:
            yield token
        finally:
            if not self.closed:
                with contextlib.suppress(XenstoreError):
                    self.unwatch(path, token)

    def read_watch(self, timeout: float | None = None) -> WatchEvent | None:
        """Next watch event, waiting at most ``timeout`` seconds (default: the client's).

        Returns ``None`` when nothing arrived in time; ``timeout=0`` only looks at what is
        already queued or readable without blocking for long.  A message that has begun
        to arrive by then is given the client's timeout to finish (xenstored writes a
        header and its payload separately); one that does not is a broken stream.

        Events may have been dropped before this one when the queue overflowed
        (:attr:`dropped_events` counts them): re-read the watched nodes then. Events
        received before the connection closed are still handed out after it.

        Raises:
            XenstoreError: the connection failed or its stream broke (it is closed then).
            ValueError, TypeError: ``timeout`` is not a finite number of seconds >= 0.
        """
        wait = self.timeout if timeout is None else timeout_arg(timeout, "read_watch timeout")
        with self._lock:
            if self._events:
                return self._events.popleft()
            deadline = time.monotonic() + max(wait, 0.001)
            finishing = False  # past the caller's deadline, waiting for a message's end
            try:
                while True:
                    try:
                        mtype, rid, _tx, body = self._read_message(deadline)
                    except _Timeout:
                        if not self._buf:
                            return None
                        if finishing:
                            raise self._broken(
                                f"xenstored at {self.endpoint} stopped in the middle of a "
                                f"message for {self.timeout:g} s",
                                "ETIMEDOUT",
                            ) from None
                        finishing = True
                        deadline = time.monotonic() + self.timeout
                        continue
                    if mtype == Op.WATCH_EVENT:
                        self._queue_event(body)
                        return self._events.popleft()
                    self._late_reply(rid, mtype)  # the late reply of an abandoned request
                    if finishing and not self._buf:
                        return None
            except OSError as exc:
                self.close()
                raise _xs_error(
                    f"xenstore: I/O error on {self.endpoint}: {_describe_oserror(exc)}",
                    _errno.errorcode.get(exc.errno or _errno.EIO, "EIO"),
                    exc.errno,
                ) from exc

    def pending_events(self) -> list[WatchEvent]:
        """Events already received but not yet handed out (not removed)."""
        return list(self._events)

    def poll_watches(self, max_bytes: int = POLL_BYTES) -> WatchPoll:
        """Every watch event received so far or readable now, without waiting at all
        (:meth:`read_watch` with ``timeout=0`` still waits a millisecond for one).

        Reads at most about ``max_bytes`` from the connection: ``backlog`` in the result
        says input was still waiting after them (xenstored may be holding events back
        then, and a consumer should re-read what it watches). A message only partly
        received stays buffered for the next call. Events dropped from the queue count in
        :attr:`dropped_events` as always.

        Raises:
            XenstoreError: the connection is closed, or failed or broke now (it is closed
                then); events received before are lost with it.
            ValueError, TypeError: ``max_bytes`` is not 1 to 2**30.
        """
        if max_bytes is not POLL_BYTES:
            count_arg(max_bytes, "max_bytes", 1, 1 << 30)
        with self._lock:
            transport = self._live()
            if not self._events and not transport.readable():
                return WatchPoll([], 0, False)  # the usual case, in one system call
            received = 0
            try:
                while received < max_bytes and transport.readable():
                    received += self._receive(transport, time.monotonic() + self.timeout)
                    while True:
                        message = self._take_message()
                        if message is None:
                            break
                        mtype, rid, _tx, body = message
                        if mtype == Op.WATCH_EVENT:
                            self._queue_event(body)
                        else:
                            self._late_reply(rid, mtype)
                backlog = received >= max_bytes and transport.readable()
            except _Timeout:  # readable, then nothing came: the stream is not trustworthy
                raise self._broken(
                    f"xenstored at {self.endpoint} signalled input and sent none", "EIO"
                ) from None
            except OSError as exc:
                raise self._io_failure("reading watch events", exc) from exc
            events = list(self._events)
            self._events.clear()
            return WatchPoll(events, received, backlog)


class Transaction:
    """The handle :meth:`XenstoreClient.transaction` passes to its body."""

    def __init__(self, client: XenstoreClient, tx_id: int, attempt: int = 1) -> None:
        self.client = client
        self.id = tx_id
        #: 1 on the first run of the body, 2 on the first retry, ...
        self.attempt = attempt

    def read(self, path: str) -> bytes:
        return self.client.read(path, tx=self.id)

    def read_text(self, path: str) -> str:
        return self.client.read_text(path, tx=self.id)

    def try_read(self, path: str) -> bytes | None:
        return self.client.try_read(path, tx=self.id)

    def exists(self, path: str) -> bool:
        return self.client.exists(path, tx=self.id)

    def try_read_many(self, paths: Sequence[str]) -> list[bytes | None]:
        return self.client.try_read_many(paths, tx=self.id)

    def write(self, path: str, value: bytes | str) -> None:
        self.client.write(path, value, tx=self.id)

    def mkdir(self, path: str) -> None:
        self.client.mkdir(path, tx=self.id)

    def rm(self, path: str) -> None:
        self.client.rm(path, tx=self.id)

    def directory(self, path: str, *, max_entries: int | None = None) -> list[str]:
        return self.client.directory(path, tx=self.id, max_entries=max_entries)

    def __repr__(self) -> str:
        return f"<xenstore Transaction {self.id} attempt {self.attempt}>"


class EndpointStatus(NamedTuple):
    """What :func:`probe_endpoints` found at one place (for ``xenvcpu doctor``)."""

    path: str
    #: "socket", "device" (char device or xenfs file), "missing" or "other"
    kind: str
    #: True when a request was answered there
    ok: bool
    #: why not, or what answered
    detail: str


def probe_endpoints(timeout: float = 1.0) -> list[EndpointStatus]:
    """Try every candidate endpoint (:func:`candidate_endpoints`) with one cheap request
    (GET_DOMAIN_PATH 0) and say what happened at each; never raises for a bad endpoint."""
    result = []
    for path in candidate_endpoints():
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            result.append(EndpointStatus(path, "missing", False, "does not exist"))
            continue
        except OSError as exc:
            result.append(EndpointStatus(path, "other", False, _describe_oserror(exc)))
            continue
        if stat.S_ISSOCK(mode):
            kind = "socket"
        elif stat.S_ISCHR(mode) or stat.S_ISREG(mode):
            kind = "device"
        else:
            kind = "other"
        try:
            with XenstoreClient(path, timeout=timeout) as xs:
                home = xs.get_domain_path(0)
        except (XenstoreError, PermissionDenied) as exc:
            result.append(EndpointStatus(path, kind, False, exc.message))
            continue
        result.append(EndpointStatus(path, kind, True, f"xenstored answered ({home})"))
    return result
