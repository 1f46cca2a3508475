"""``xen:`` and ``sim:`` URIs: the native module's hypervisor, with its toolstack.

``xen:///system`` opens ``/dev/xen/privcmd`` (hypercalls) and xenstored (names and the
online-vCPU request, :class:`~xenvcpu.toolstack.XenstoreToolstack`). ``sim:`` URIs open a
simulated host inside this process; its toolstack side and its test controls
(:class:`~xenvcpu.sim.SimControl`, ``Host.sim``) share the simulated host's state.
"""

from __future__ import annotations

from typing import NoReturn

from xenvcpu import _impl
from xenvcpu._backend import Parts
from xenvcpu.errors import NoHypervisor, NotSupported, PermissionDenied
from xenvcpu.sim import SimControl
from xenvcpu.toolstack import SimToolstack, XenstoreToolstack
from xenvcpu.uri import Uri

__all__ = ["open_parts"]


def open_parts(uri: Uri) -> Parts:
    """Open the hypervisor (or simulated host) of a ``xen:`` or ``sim:`` URI.

    Raises:
        NoHypervisor: no privcmd device (not a Xen control domain), or no native module.
        PermissionDenied: privcmd exists but this process may not use it (run as root).
        InterfaceMismatch: the running Xen speaks an interface version xenvcpu does not know.
        NotSupported: ``sim:`` without the native module.
    """
    if not _impl.HAVE_NATIVE:
        _no_native(uri)
    if uri.scheme == "sim":
        assert uri.sim_base is not None
        hv = _impl.Hypervisor.simulated(uri.sim_base, dict(uri.params), uri.path)
        control = hv.sim_control()
        assert control is not None
        return Parts(hv, SimToolstack(control, uri.run_dir, uri.lib_dir), sim=SimControl(control))
    try:
        hv = _impl.Hypervisor.privcmd()
    except (NoHypervisor, PermissionDenied) as e:
        raise type(e)(
            f"{e.message}; without privcmd, xenstore:/// still lists domains and sets "
            "online vCPUs (pure Python)",
            errno=e.errno,
            domain=e.domain,
            vcpu=e.vcpu,
        ) from e
    return Parts(hv, XenstoreToolstack(run_dir=uri.run_dir, lib_dir=uri.lib_dir))


def _no_native(uri: Uri) -> NoReturn:
    """Raise the typed error for a URI that needs the missing native module."""
    why = f"xenvcpu._native cannot be loaded ({_impl.NATIVE_ERROR})"
    if uri.scheme == "sim":
        raise NotSupported(f"{uri}: the simulated host is part of the native module, and {why}")
    raise NoHypervisor(
        f"{uri}: hypercalls need the native module, and {why}; xenstore:/// (domain list, "
        "online vCPUs) and, on Xen <= 4.4, xend+unix:///var/lib/xend/xend-socket still work"
    )
