"""Every exception xenvcpu raises, defined once.

The Rust core raises these same classes (looked up here by name, through one mapping
in ``rust/py/src/errors.rs``), so ``except xenvcpu.errors.DomainNotFound`` works
whichever backend answered.

Every error carries the context it knows: ``errno`` (the Xen/Linux errno, or None),
``domain`` (id or name, or None) and ``vcpu`` (or None).
"""

from __future__ import annotations

from typing import Union

DomainRef = Union[int, str]

__all__ = [
    "AffinityBusy",
    "AffinityNarrowed",
    "CpuListError",
    "DaemonError",
    "DomainDying",
    "DomainNotFound",
    "InterfaceMismatch",
    "InvalidAffinity",
    "InvalidUri",
    "NoHypervisor",
    "NotSupported",
    "PermissionDenied",
    "PlacementError",
    "PlanFailed",
    "QmpError",
    "VcpuCountError",
    "VcpuNotFound",
    "VcpuTimeout",
    "XendError",
    "XenstoreError",
    "XenvcpuError",
]


class XenvcpuError(Exception):
    """Base class of every xenvcpu error.

    Attributes:
        errno: the errno Xen or the kernel returned, if any.
        domain: the domain (id or name) the operation was about, if any.
        vcpu: the vCPU the operation was about, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        errno: int | None = None,
        domain: DomainRef | None = None,
        vcpu: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.errno = errno
        self.domain = domain
        self.vcpu = vcpu

    def __reduce__(self) -> tuple[object, ...]:
        # The instance dict carries extras some classes set (pending, name, status).
        extra = {k: v for k, v in self.__dict__.items() if k not in _BASE_FIELDS}
        return (_rebuild, (type(self), self.message, self.errno, self.domain, self.vcpu), extra)


_BASE_FIELDS = frozenset({"message", "errno", "domain", "vcpu"})


def _rebuild(
    cls: type[XenvcpuError],
    message: str,
    errno: int | None,
    domain: DomainRef | None,
    vcpu: int | None,
) -> XenvcpuError:
    return cls(message, errno=errno, domain=domain, vcpu=vcpu)


class CpuListError(XenvcpuError, ValueError):
    """A CPU map or cpulist is malformed, or names a CPU outside the map's width.

    Its fields say what went wrong without parsing the message (None where a field does
    not apply); both CpuMap implementations set the same ones:

    * ``kind``: ``"parse"`` (a cpulist term), ``"bad_width"``, ``"cpu_out_of_range"``,
      ``"negative_cpu"``, ``"maplen_too_short"`` or ``"width_mismatch"``;
    * ``text``, ``token``, ``column`` (1-based, in characters), ``reason``: a parse error;
    * ``width``: the map's width; ``cpu``: the CPU at fault;
    * ``maplen``, ``needed``: ``to_bytes``; ``other_width``: the other map of an operation.
    """

    kind: str | None = None
    text: str | None = None
    token: str | None = None
    column: int | None = None
    reason: str | None = None
    width: int | None = None
    cpu: int | None = None
    maplen: int | None = None
    needed: int | None = None
    other_width: int | None = None


class InvalidUri(XenvcpuError, ValueError):
    """A hypervisor URI of a known scheme is malformed (the message says what is wrong)."""


class NoHypervisor(XenvcpuError):
    """No Xen hypervisor (privcmd device) is reachable from this process."""


class PermissionDenied(XenvcpuError, PermissionError):
    """The caller may not issue the operation (needs root in the control domain)."""


class InterfaceMismatch(XenvcpuError):
    """The running Xen speaks a domctl/sysctl interface version xenvcpu does not know."""


class DomainNotFound(XenvcpuError, LookupError):
    """No domain has that id or name."""


class DomainDying(XenvcpuError):
    """The domain is being destroyed; nothing can be changed on it."""


class VcpuNotFound(XenvcpuError, LookupError):
    """The domain has no vCPU with that number."""


class InvalidAffinity(XenvcpuError, ValueError):
    """The requested affinity is empty, too wide, or has no CPU in the domain's cpupool."""


class AffinityBusy(XenvcpuError):
    """Xen refused the change because a temporary pin override is active (retry with force)."""


class VcpuCountError(XenvcpuError, ValueError):
    """A requested online vCPU count or set is outside what the domain allows."""


class VcpuTimeout(XenvcpuError, TimeoutError):
    """The guest did not bring the requested vCPUs online/offline in time.

    ``pending`` holds the vCPU numbers that did not follow.
    """

    pending: tuple[int, ...] = ()


class NotSupported(XenvcpuError):
    """The operation is not supported for this domain or backend (named in the message)."""


class DaemonError(XenvcpuError):
    """A toolstack daemon (xenstored, xend) failed or answered something unexpected."""


class XenstoreError(DaemonError):
    """xenstored answered with an error; ``errno`` holds its number, ``name`` e.g. 'ENOENT'."""

    name: str = ""


class XendError(DaemonError):
    """xend answered with an error (HTTP status in ``status``)."""

    status: int = 0


class QmpError(DaemonError):
    """QEMU's QMP monitor (the device model of an HVM guest) refused a command or failed.

    For an error reply, ``qmp_class`` is QEMU's error class (``'GenericError'``,
    ``'CommandNotFound'``, ``'DeviceNotFound'``, ...) and ``desc`` its text.  When the
    connection itself failed both are ``''`` and ``errno`` says how: ENOENT (no socket),
    ECONNREFUSED, ETIMEDOUT (no answer in time), ECONNRESET (QEMU went away), EPROTO (not
    QMP, or a broken stream), EMSGSIZE (a message over the size cap).
    """

    qmp_class: str = ""
    desc: str = ""


class PlacementError(XenvcpuError, ValueError):
    """A placement spec is malformed, or cannot be applied to this host as it stands.

    The message names the file (``source``), the entry (``entry``: 1-based position among
    the ``[[domain]]`` entries, 0 for ``[defaults]``, None for the file as a whole), the key
    and, for a cpulist, the token, its column and the reason (as :class:`CpuListError`).
    """

    source: str | None = None
    entry: int | None = None
    key: str | None = None
    token: str | None = None
    column: int | None = None
    reason: str | None = None


class PlanFailed(XenvcpuError):
    """Applying a plan failed and what had changed was put back.

    ``failed`` lists what failed (``(domain, vcpu or None, what, error message)``),
    ``rolled_back`` what was put back to the state read at plan time, ``vanished`` the
    domains that disappeared meanwhile (reported, not failures), ``rollback_failed`` what
    could not be put back (empty when the host is as it was).
    """

    failed: tuple[tuple[str, int | None, str, str], ...] = ()
    rolled_back: tuple[str, ...] = ()
    vanished: tuple[str, ...] = ()
    rollback_failed: tuple[str, ...] = ()


class AffinityNarrowed(UserWarning):
    """Warning: Xen applied an effective affinity smaller than the one requested."""
