"""Backends: each turns a parsed URI into the :class:`~xenvcpu._backend.Parts` of a Host.

One module per kind of connection, picked once per URI scheme by :func:`open_parts` (the
way psutil picks its platform module):

* :mod:`xenvcpu.backends.native` -- ``xen:`` (privcmd hypercalls + xenstore) and ``sim:``
  (the simulated host), both through the native module;
* :mod:`xenvcpu.backends.xend` -- ``xend+unix:`` / ``xend+http:`` (Xen <= 4.4, pure Python);
* :mod:`xenvcpu.backends.xenstore` -- ``xenstore:`` (xenstore alone, pure Python).

A backend never imports :mod:`xenvcpu.host`: it hands over parts, and
:func:`xenvcpu.connect` builds the Host.
"""

from __future__ import annotations

from xenvcpu._backend import Parts
from xenvcpu.uri import Uri

__all__ = ["open_parts"]


def open_parts(uri: Uri) -> Parts:
    """Connect to what ``uri`` names and return the parts of a Host."""
    if uri.scheme in ("xen", "sim"):
        from xenvcpu.backends import native

        return native.open_parts(uri)
    if uri.scheme in ("xend+unix", "xend+http"):
        from xenvcpu.backends import xend

        return xend.open_parts(uri)
    from xenvcpu.backends import xenstore

    return xenstore.open_parts(uri)
