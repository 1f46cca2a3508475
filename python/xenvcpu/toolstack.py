"""The toolstacks of the native backends: names and the online-vCPU request.

Domain names, cpupool names and each vCPU's ``availability`` live in xenstore on a real
host (xen-interfaces.md §5.4); a simulated host keeps its own. Both satisfy
:class:`xenvcpu._backend.Toolstack`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence, Set
from typing import TYPE_CHECKING

from xenvcpu._impl import DomainInfo
from xenvcpu._limits import DOMID_FIRST_RESERVED, MAX_DOMAIN_NAME, ascii_uint
from xenvcpu.daemon import vcpus as _vcpus
from xenvcpu.daemon.xenstore import POLL_BYTES, WatchEvent, XenstoreClient
from xenvcpu.errors import XenstoreError, XenvcpuError

if TYPE_CHECKING:
    from xenvcpu._native import SimControl

#: Xen's run directory (XEN_RUN_DIR): where libxl's QMP sockets ``qmp-libxl-<domid>`` are.
XEN_RUN_DIR = "/var/run/xen"
#: Xen's lib directory (XEN_LIB_DIR): where libxl keeps its per-domain lock files.
XEN_LIB_DIR = "/var/lib/xen"

__all__ = [
    "XEN_LIB_DIR",
    "XEN_RUN_DIR",
    "DomainNameCache",
    "SimToolstack",
    "XenstoreDomainEvents",
    "XenstoreToolstack",
]

# How much of a /libxl/<domid>/type value is kept (its values are "pv", "pvh", "hvm").
_RECORD_SHOWN = 64


class SimToolstack:
    """The simulated host's toolstack (its guests follow availability after a delay).

    Its HVM domains have a device model only where ``run_dir`` names a directory with a
    QEMU's QMP socket ``qmp-libxl-<domid>`` (the URI's ``run_dir=``): tests can put a real
    QEMU behind a simulated HVM domain. Without ``run_dir`` there is none, so a simulated
    host never talks to the QEMUs of a real host it happens to run on.
    """

    name = "sim"

    def __init__(
        self, sim: SimControl, run_dir: str | None = None, lib_dir: str | None = None
    ) -> None:
        self._sim = sim
        self.run_dir = run_dir
        self.lib_dir = lib_dir if lib_dir is not None else run_dir

    def guest_record(self, domid: int) -> str | None:
        r = self._sim.guest_record(domid)
        return None if r is None else r[0]

    def has_device_model(self, domid: int) -> bool:
        r = self._sim.guest_record(domid)
        return r is not None and r[1]

    def close(self) -> None:
        """Nothing to close: the simulated host lives in this process."""

    def domain_events(self) -> None:
        """The simulated host sends no domain events: watchers re-plan on their interval."""
        return None

    def domain_names(self) -> dict[int, str]:
        return dict(self._sim.domain_names())

    def names_with(
        self, read: Callable[[], Sequence[DomainInfo]], complete: bool = True
    ) -> tuple[Sequence[DomainInfo], dict[int, str]]:
        """The simulated host's names are in this process: taken before ``read()``, no
        cache needed."""
        names = dict(self._sim.domain_names())
        return read(), names

    def pool_name(self, pool: int) -> str | None:
        return self._sim.pool_name(pool)

    def set_availability(self, domid: int, max_vcpus: int, online: Set[int]) -> None:
        self._sim.set_availability(domid, [v in online for v in range(max_vcpus)])

    def availability(self, domid: int) -> dict[int, bool]:
        a = self._sim.availability(domid) or []
        return dict(enumerate(a))


class XenstoreToolstack:
    """xenstored on the local host (socket, or the xenbus device), opened on first use;
    libxl's QMP sockets in ``run_dir`` and its lock files in ``lib_dir``."""

    name = "xenstore"

    def __init__(
        self, path: str | None = None, run_dir: str | None = None, lib_dir: str | None = None
    ) -> None:
        self._path = path
        self._xs: XenstoreClient | None = None
        self.run_dir = run_dir if run_dir is not None else XEN_RUN_DIR
        self.lib_dir = lib_dir if lib_dir is not None else XEN_LIB_DIR
        #: The names of :meth:`names_with`, kept while a watch says they hold.
        # (the path, not self, in the closure: no cycle, so a Host dropped without close()
        # still closes both connections at once through __del__)
        self.names = DomainNameCache(lambda: XenstoreClient(path))

    def guest_record(self, domid: int) -> str | None:
        """``/libxl/<domid>/type`` ("pv", "pvh", "hvm"), or None where it is missing."""
        raw = self.client().try_read(f"/libxl/{int(domid)}/type")
        if raw is None:
            return None
        # a few letters: anything much longer is no type, and goes into messages clipped
        text = raw[:_RECORD_SHOWN].strip(b"\0").decode("ascii", "replace")
        return text + "..." if len(raw) > _RECORD_SHOWN else text

    def has_device_model(self, domid: int) -> bool:
        """Whether ``/local/domain/0/device-model/<domid>`` exists."""
        return self.client().exists(f"/local/domain/0/device-model/{int(domid)}")

    def client(self) -> XenstoreClient:
        if self._xs is None or self._xs.closed:
            self._xs = XenstoreClient(self._path)
        return self._xs

    def close(self) -> None:
        """Close the xenstored connections (a later call opens new ones)."""
        if self._xs is not None:
            self._xs.close()
        self.names.close()

    def __del__(self) -> None:
        # A Host dropped without close() must not leak its xenstored sockets.
        xs = getattr(self, "_xs", None)
        if xs is not None and not xs.closed:
            xs.close()
        names = getattr(self, "names", None)
        if names is not None:
            names.close()

    def domain_events(self) -> XenstoreDomainEvents:
        """Events of xenstored's ``@introduceDomain`` / ``@releaseDomain`` watches, on a
        connection of their own (so waiting for them never delays a read)."""
        return XenstoreDomainEvents(XenstoreClient(self._path))

    def domain_names(self) -> dict[int, str]:
        """Names from ``/local/domain/<id>/name`` (:func:`~xenvcpu.daemon.vcpus.list_domains`:
        bounded, bogus entries skipped); an unreadable xenstore gives no names."""
        try:
            return {d: n for d, n in _vcpus.list_domains(self.client()).items() if n}
        except (XenstoreError, OSError):
            return {}

    def names_with(
        self, read: Callable[[], Sequence[DomainInfo]], complete: bool = True
    ) -> tuple[Sequence[DomainInfo], dict[int, str]]:
        """``read()`` and the names of the domains it returned, from :attr:`names`: at most
        one pipelined batch of reads, none while a watch says the cached ones hold
        (:class:`DomainNameCache`). An unreadable xenstore gives no names for the domains
        not cached."""
        return self.names.names(self.client, read, complete)

    def pool_name(self, pool: int) -> str | None:
        try:
            raw = self.client().try_read(f"/local/pool/{int(pool)}/name")
        except (XenstoreError, OSError):
            return None
        if not raw or len(raw) > MAX_DOMAIN_NAME:  # longer than any value xenstored holds
            return None
        return raw.decode("utf-8", "replace")

    def set_availability(self, domid: int, max_vcpus: int, online: Set[int]) -> None:
        _vcpus.write_availability(self.client(), domid, max_vcpus, online)

    def availability(self, domid: int) -> dict[int, bool]:
        return _vcpus.read_availability(self.client(), domid)


#: Where the domain names are, and what :class:`DomainNameCache` watches.
NAMES_ROOT = "/local/domain"
# How many times the names watch may be lost (xenstored closed its connection) before a
# cache stops setting it up again and reads every time.
_WATCH_LOSSES = 3


class DomainNameCache:
    """Domain names kept between listings, keyed by (domid, UUID), so that a listing reads
    xenstore only for the domains it has not seen: a domid reused by another domain has
    another UUID and is read again.

    A watch on ``/local/domain``, on a xenstored connection of its own (from ``connect``),
    says when cached names may be stale: an event for ``/local/domain/<id>`` (a domain's
    node made or removed) or ``/local/domain/<id>/name`` (a rename) forgets that domid;
    one for ``/local/domain`` itself, events dropped from the client's bounded queue, or
    more input waiting than one look reads (:data:`~xenvcpu.daemon.xenstore.POLL_BYTES`:
    xenstored may be holding events back) forget every name. The events are collected
    without waiting at the start of each call, so a cached name is one no event has
    touched by then: a rename made before the call shows as soon as its event has reached
    this process (xenstored sends it with the reply to the write that renamed; measured
    on the lab's oxenstored, docs/benchmarks.md).

    The watch is set up on the second call, not the first: a command that lists once
    pays no second connection. Until then, and for good when the watch cannot be set up
    (:attr:`disabled` says why) or its connection was lost more than a few times, every
    call reads the names it needs in one pipelined batch (no transaction). Memory: one
    entry per domid (below DOMID_FIRST_RESERVED), names of at most MAX_DOMAIN_NAME bytes,
    entries of destroyed domains forgotten by their events and by complete listings.
    """

    def __init__(
        self, connect: Callable[[], XenstoreClient], *, poll_bytes: int = POLL_BYTES
    ) -> None:
        self._connect = connect
        self._poll_bytes = poll_bytes
        self._watch: XenstoreClient | None = None
        self._token = ""
        self._dropped = 0
        self._cached: dict[int, tuple[str, str]] = {}  # domid -> (uuid, name)
        self._calls = 0
        self._losses = 0
        self._initial = False
        self._lock = threading.Lock()
        #: Why the names are read every time (the watch could not be kept), or None.
        self.disabled: str | None = None
        #: Name reads sent to xenstored so far (for tests and benchmarks).
        self.reads = 0

    def __len__(self) -> int:
        return len(self._cached)

    def __contains__(self, domid: object) -> bool:
        """Whether a name of this domid is kept."""
        return domid in self._cached

    @property
    def watching(self) -> bool:
        """Whether the watch is set: cached names are used."""
        return self._watch is not None

    def close(self) -> None:
        """Drop the watch and every cached name (a later call starts over)."""
        self._cached.clear()
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    def sync(self) -> None:
        """One round trip on the watch connection: the events of every change xenstored
        made before it have then arrived, so the next call applies them. For a caller that
        must see a change another process has just made; a listing does not wait so."""
        with self._lock:
            if self._watch is None:
                return
            try:
                self._watch.get_domain_path(0)
            except XenstoreError:
                self._lost()

    def names(
        self,
        client: Callable[[], XenstoreClient],
        read: Callable[[], Sequence[DomainInfo]],
        complete: bool = True,
    ) -> tuple[Sequence[DomainInfo], dict[int, str]]:
        """``read()`` (the hypervisor's domains) and ``{domid: name}`` of the domains it
        returned (a domain without a name is left out), read through ``client()`` where
        not cached. The events are applied before ``read()`` runs, so a cached domain that
        goes away meanwhile keeps its name in this call. ``complete``: ``read()`` returns
        every domain there is, so cached names of any other domid are dropped.

        One call at a time per cache (a lock): a name read must not be kept after an
        event another call applied meanwhile has forgotten it.
        """
        with self._lock:
            trusted = self._refresh()
            infos = read()
            keys = [(d.id, d.uuid) for d in infos]
            cached = self._cached
            out: dict[int, str] = {}
            missing: list[tuple[int, str]] = []
            for domid, uuid in keys:
                hit = cached.get(domid) if trusted else None
                if hit is not None and hit[0] == uuid:
                    out[domid] = hit[1]
                else:
                    missing.append((domid, uuid))
            if missing:
                self.reads += len(missing)
                try:
                    got = _vcpus.read_names(client(), [d for d, _ in missing])
                except (XenstoreError, OSError):
                    got = {}
                for domid, uuid in missing:
                    name = got.get(domid)
                    if name is None:
                        cached.pop(domid, None)
                        continue
                    out[domid] = name
                    if trusted:
                        cached[domid] = (uuid, name)
            if complete and len(cached) > len(keys):
                listed = {d for d, _ in keys}
                for domid in [d for d in cached if d not in listed]:
                    del cached[domid]
            return infos, out

    def _refresh(self) -> bool:
        """Apply the events that came since the last call; False when there is no watch
        (nothing cached may be used, nothing read may be kept)."""
        if self.disabled is not None:
            return False
        self._calls += 1
        if self._watch is None:
            if self._calls < 2:
                return False
            return self._start()
        try:
            polled = self._watch.poll_watches(self._poll_bytes)
        except XenstoreError:
            self._lost()
            return False
        if polled.backlog or self._watch.dropped_events != self._dropped:
            self._dropped = self._watch.dropped_events
            self._cached.clear()
        for event in polled.events:
            self._event(event)
        return True

    def _start(self) -> bool:
        self._cached.clear()
        try:
            watch = self._connect()
        except (XenvcpuError, OSError) as e:
            self.disabled = f"the names watch cannot be set up: {e}"
            return False
        try:
            self._token = watch.watch(NAMES_ROOT)
        except (XenvcpuError, OSError) as e:
            watch.close()
            self.disabled = f"the names watch cannot be set up: {e}"
            return False
        self._watch = watch
        self._dropped = watch.dropped_events
        self._initial = True  # xenstored fires a new watch once: not a change
        return True

    def _lost(self) -> None:
        self.close()
        self._losses += 1
        if self._losses >= _WATCH_LOSSES:
            self.disabled = f"the names watch was lost {self._losses} times"

    def _event(self, event: WatchEvent) -> None:
        if event.token != self._token:
            return
        path = event.path
        if path == NAMES_ROOT:  # the first firing, or the whole tree changed
            if self._initial:
                self._initial = False
            else:
                self._cached.clear()
            return
        head, _, tail = path[len(NAMES_ROOT) + 1 :].partition("/")
        if not path.startswith(NAMES_ROOT + "/") or tail not in ("", "name"):
            return
        domid = ascii_uint(head, DOMID_FIRST_RESERVED)
        if domid is not None:
            self._cached.pop(domid, None)


#: The special watches xenstored fires when a domain is introduced (created, restored,
#: migrated in) and when one is released (destroyed, saved, migrated away):
#: xen-interfaces.md §5.6.
DOMAIN_WATCHES = ("@introduceDomain", "@releaseDomain")


class XenstoreDomainEvents:
    """``@introduceDomain`` and ``@releaseDomain`` on one xenstored connection.

    xenstored fires each watch once when it is set; those first events are consumed here,
    so :meth:`wait` reports only what happened afterwards.
    """

    def __init__(self, client: XenstoreClient) -> None:
        self._xs = client
        try:
            for path in DOMAIN_WATCHES:
                self._xs.watch(path)
            self._drain()
        except BaseException:
            client.close()
            raise

    def _drain(self) -> bool:
        seen = False
        # Bounded: the client's queue holds at most its max_events.
        for _ in range(1 << 16):
            if self._xs.read_watch(0) is None:
                break
            seen = True
        return seen

    def wait(self, timeout: float) -> bool:
        if self._xs.read_watch(max(timeout, 0.0)) is None:
            return False
        self._drain()
        return True

    def close(self) -> None:
        self._xs.close()
