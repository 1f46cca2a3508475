"""Guest types, and changing the online vCPUs of each.

**Which type a domain is**, decided as libxl decides it (xen-interfaces.md §3.4, §5.4):

1. ``XEN_DOMINF_hvm_guest`` clear in getdomaininfo: **PV**;
2. set (PVH and HVM guests are both HVM containers): the toolstack's record
   ``/libxl/<domid>/type`` in xenstore, ``pvh`` or ``hvm``;
3. where that record is missing (another toolstack built the domain): a device model
   registered at ``/local/domain/0/device-model/<domid>`` means **HVM**, none **PVH**.

:func:`classify` returns the type and the rule that decided, which ``xenvcpu doctor``
shows.

**Changing the online vCPUs**: PV and PVH guests follow ``cpu/<n>/availability`` in
xenstore (Linux ``drivers/xen/cpu_hotplug.c``), so both take the xenstore path
(:mod:`xenvcpu.daemon.vcpus`). An HVM guest with upstream QEMU gets its vCPUs through
QEMU's ACPI CPU hotplug (:func:`set_hvm_online`): xenvcpu holds libxl's per-domain lock
(so xenvcpu and ``xl`` never drive the same QEMU at once), asks QEMU over QMP at
``<run_dir>/qmp-libxl-<domid>`` (:mod:`xenvcpu.daemon.qmp`), and writes ``availability``
as libxl does so that xl's view stays consistent.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import fcntl
import os
import time
from collections.abc import Iterator, Set
from typing import Callable, Protocol

from xenvcpu.daemon import qmp
from xenvcpu.daemon import vcpus as _vcpus
from xenvcpu.errors import DaemonError, PermissionDenied, XenvcpuError
from xenvcpu.types import GuestType

__all__ = [
    "GuestRecords",
    "classify",
    "libxl_domain_lock",
    "lock_path",
    "set_hvm_online",
]


class GuestRecords(Protocol):
    """What a toolstack knows of a domain's type (the parts of a Toolstack used here)."""

    def guest_record(self, domid: int) -> str | None: ...

    def has_device_model(self, domid: int) -> bool: ...


def classify(domid: int, hvm_flag: bool, records: GuestRecords) -> tuple[GuestType, str]:
    """The type of domain ``domid`` and the rule that decided it (see the module doc)."""
    if not hvm_flag:
        return GuestType.PV, "XEN_DOMINF_hvm_guest is clear: a PV guest"
    try:
        record = records.guest_record(domid)
    except XenvcpuError as e:
        record, why = None, f"/libxl/{domid}/type cannot be read ({e})"
    else:
        why = f"no /libxl/{domid}/type record"
    if record in ("pvh", "hvm"):
        kind = GuestType(record)
        return kind, f"XEN_DOMINF_hvm_guest is set and /libxl/{domid}/type is {record!r}"
    if record is not None:
        why = f"/libxl/{domid}/type is {record!r}, not pvh or hvm"
    dm = f"/local/domain/0/device-model/{domid}"
    try:
        has_dm = records.has_device_model(domid)
    except XenvcpuError:
        has_dm = False
    if has_dm:
        return GuestType.HVM, f"XEN_DOMINF_hvm_guest is set, {why}, and {dm} exists: HVM"
    return GuestType.PVH, f"XEN_DOMINF_hvm_guest is set, {why}, and no {dm}: PVH"


def lock_path(lib_dir: str, domid: int, uuid: str) -> str:
    """libxl's per-domain lock file: ``<XEN_LIB_DIR>/userdata-l.<domid>.<uuid>.domain-
    userdata-lock`` (libxl_internal.c, libxl__lock_domain_userdata)."""
    return os.path.join(lib_dir, f"userdata-l.{int(domid)}.{uuid}.domain-userdata-lock")


@contextlib.contextmanager
def libxl_domain_lock(
    lib_dir: str, domid: int, uuid: str, deadline: float, *, label: str = ""
) -> Iterator[str]:
    """Hold libxl's per-domain lock until the block ends, as libxl takes it: an exclusive
    ``flock`` on the lock file, checked to still be the file at that path (another holder
    unlinks it when it releases), then unlinked and closed on release.

    Waits until ``deadline`` (a ``time.monotonic()`` value) at most.

    Raises:
        DaemonError: the lock is still held at the deadline (``errno`` EWOULDBLOCK), or
            the lock file cannot be opened.
        PermissionDenied: the directory is root-only.
    """
    path = lock_path(lib_dir, domid, uuid)
    who = label or f"domain {domid}"
    pause = 0.005
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except PermissionError as e:
            raise PermissionDenied(
                f"{who}: cannot open libxl's lock file {path}: permission denied; run as root",
                errno=e.errno,
                domain=domid,
            ) from None
        except OSError as e:
            raise DaemonError(
                f"{who}: cannot open libxl's lock file {path}: {e.strerror or e} (is {lib_dir} "
                "Xen's lib directory? the URI parameter lib_dir= names another)",
                errno=e.errno,
                domain=domid,
            ) from None
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise DaemonError(
                            f"{who}: libxl's domain lock {path} is still held by another "
                            "toolstack operation (an xl command on this domain?); nothing "
                            "was changed",
                            errno=_errno.EWOULDBLOCK,
                            domain=domid,
                        ) from None
                    time.sleep(min(pause, left))
                    pause = min(pause * 2, 0.1)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the holder before us unlinked it on release: take the new file
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def set_hvm_online(
    *,
    domid: int,
    uuid: str,
    label: str,
    max_vcpus: int,
    online: frozenset[int],
    run_dir: str,
    lib_dir: str,
    write_availability: Callable[[int, int, Set[int]], None],
    read_online: Callable[[], Set[int]] | None,
    timeout: float,
) -> qmp.HotplugReport:
    """Make exactly ``online`` the vCPUs of an HVM domain, through its QEMU.

    Under libxl's per-domain lock: connect to ``<run_dir>/qmp-libxl-<domid>``, hot-add and
    hot-remove CPUs there (:func:`xenvcpu.daemon.qmp.set_hvm_vcpus`, waiting for the guest
    to eject removed ones), then write every ``cpu/<n>/availability`` as libxl does. With
    ``read_online`` (``wait=True``), wait too until the hypervisor shows exactly
    ``online``. One ``timeout`` covers all of it.

    Raises:
        QmpError: no QEMU at that socket (the message names the path: no device model,
            or one the toolstack runs elsewhere, e.g. in a stub domain), or QEMU refused;
            a refused removal (the legacy ACPI interface of Xen's HVM guests) names the
            vCPUs that stay online and what the operator can do.
        VcpuTimeout: the guest did not eject, or did not follow, within ``timeout``.
        DaemonError: libxl's lock stayed held.
    """
    deadline = time.monotonic() + timeout
    socket_path = qmp.libxl_socket_path(domid, run_dir)
    if not os.path.exists(socket_path):  # no device model: say so before taking any lock
        raise qmp.no_socket_error(socket_path)
    with libxl_domain_lock(lib_dir, domid, uuid, deadline, label=label):
        left = max(deadline - time.monotonic(), 0.05)
        with qmp.QmpClient(socket_path, timeout=left) as client:
            report = qmp.set_hvm_vcpus(
                client,
                online,
                timeout=max(deadline - time.monotonic(), 0.05),
                wait=read_online is not None,
                domain=label,
            )
        write_availability(domid, max_vcpus, online)
    if read_online is not None:
        _vcpus.wait_online(read_online, online, max(deadline - time.monotonic(), 0.0), domain=label)
    return report
