"""The one place a hypervisor URI is read.

:func:`parse` turns a URI into a :class:`Uri`: which backend serves it and that backend's
arguments, all checked. :func:`xenvcpu.connect` dispatches on :attr:`Uri.scheme`; the
backends receive the parsed form, never the text, so every URI is accepted or refused
here, with the same answer whichever module would serve it.

===============================================  =============================================
``xen:///system`` (also ``xen:///``, ``xen://``)   the local Xen host: privcmd + xenstore
``sim:///default``                                 the built-in simulated host
``sim:///?cpus=4096&domains=1000``                 a simulated scale host
``sim:///PATH/host.toml``                          a simulated host described in TOML
``xend+unix:///var/lib/xend/xend-socket``          a Xen <= 4.4 host through xend's socket
``xend+http://HOST[:8000]``                        a Xen <= 4.4 host through xend over HTTP
``xenstore:///`` or ``xenstore:///PATH``           xenstore alone (domain list, online vCPUs)
===============================================  =============================================

``xen:``, ``sim:`` and ``xenstore:`` take ``run_dir=`` (Xen's XEN_RUN_DIR, where libxl's QMP
sockets ``qmp-libxl-<domid>`` are: ``/var/run/xen``) and ``lib_dir=`` (XEN_LIB_DIR, where
libxl's per-domain lock files are: ``/var/lib/xen``), for HVM guests' vCPUs; on ``sim:``
they have no default (a simulated HVM domain has a device model only where ``run_dir``
holds a QEMU socket for it) and ``lib_dir`` defaults to ``run_dir``. A simulated host's
other parameters (``version=``, ``offline=``, ``delay_ms=``, ``follow=``, the scale host's
``cpus=`` …) are checked by the simulator itself, which names any it does not know.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Optional

from xenvcpu.daemon.xend import DEFAULT_PORT as XEND_DEFAULT_PORT
from xenvcpu.daemon.xend import DEFAULT_UNIX_PATH as XEND_DEFAULT_SOCKET
from xenvcpu.errors import InvalidUri, NotSupported

__all__ = [
    "DEFAULT_URI",
    "MAX_URI_LENGTH",
    "SCHEMES",
    "XEND_DEFAULT_PORT",
    "XEND_DEFAULT_SOCKET",
    "Uri",
    "parse",
]

DEFAULT_URI = "xen:///system"
#: Longer URIs are refused before they are parsed.
MAX_URI_LENGTH = 4096

#: Every scheme and what serves it.
SCHEMES: Mapping[str, str] = MappingProxyType(
    {
        "xen": "the local Xen host (privcmd hypercalls + xenstore)",
        "sim": "a simulated Xen host (in this process)",
        "xend+unix": "a Xen <= 4.4 host through xend's unix socket",
        "xend+http": "a Xen <= 4.4 host through xend over HTTP",
        "xenstore": "xenstore alone (domain list, online vCPUs; pure Python)",
    }
)

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class Uri:
    """A parsed hypervisor URI.

    Attributes:
        text: the URI as given.
        scheme: one of :data:`SCHEMES`.
        path: ``xenstore``: the socket or device (None: the usual places); ``xend+unix``:
            the socket; ``sim``: the TOML file (None: the built-in or a scale host).
        host: ``xend+http``: ``(hostname, port)``.
        sim_base: ``sim``: ``"default"``, ``"scale"`` or ``"toml"``.
        params: the query parameters the backend reads itself (``sim`` only).
        run_dir: ``run_dir=`` (``xen``, ``sim``, ``xenstore``), or None.
        lib_dir: ``lib_dir=`` (``xen``, ``sim``, ``xenstore``), or None.
    """

    text: str
    scheme: str
    path: str | None = None
    host: tuple[str, int] | None = None
    sim_base: str | None = None
    params: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    run_dir: str | None = None
    lib_dir: str | None = None

    def __str__(self) -> str:
        return self.text

    @property
    def needs_native(self) -> bool:
        """Whether the native module serves this URI (hypercalls or the simulator)."""
        return self.scheme in ("xen", "sim")


def _bad(text: str, why: str) -> InvalidUri:
    return InvalidUri(f"invalid hypervisor URI {text!r}: {why}")


def _no_params(text: str, parts: urllib.parse.SplitResult, example: str) -> None:
    if parts.query or parts.fragment:
        raise _bad(text, f"this scheme takes no parameters ({example})")


#: The parameters of the toolstack's directories (see the module docstring).
_DIR_PARAMS = ("run_dir", "lib_dir")


Dirs = tuple[Optional[str], Optional[str]]


def _dirs(text: str, params: dict[str, str]) -> Dirs:
    """Take run_dir= and lib_dir= out of ``params``: absolute paths, or None."""
    found: list[str | None] = []
    for key in _DIR_PARAMS:
        value = params.pop(key, None)
        if value is not None and not value.startswith("/"):
            raise _bad(text, f"{key}={value!r} is not an absolute path")
        found.append(value)
    return found[0], found[1]


def _only_dirs(text: str, parts: urllib.parse.SplitResult, example: str) -> Dirs:
    """The run_dir=/lib_dir= of a scheme that takes no other parameter."""
    if parts.fragment:
        raise _bad(text, "a URI here has no #fragment")
    params = _query(text, parts.query)
    dirs = _dirs(text, params)
    if params:
        raise _bad(
            text,
            f"unknown parameter {next(iter(params))!r}: this scheme takes only run_dir= and "
            f"lib_dir= ({example})",
        )
    return dirs


def _query(text: str, query: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in query.split("&"):
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = urllib.parse.unquote(key)
        if not sep or not key:
            raise _bad(text, f"parameter {item!r} is not NAME=VALUE")
        if key in params:
            raise _bad(text, f"parameter {key!r} is given twice")
        params[key] = urllib.parse.unquote(value)
    return params


def parse(text: str) -> Uri:
    """Check a hypervisor URI and split it into what its backend needs.

    Raises:
        NotSupported: an unknown scheme (the message lists the known ones).
        InvalidUri: a known scheme with a malformed rest (a ``ValueError``).
    """
    if not isinstance(text, str):
        raise TypeError(f"a hypervisor URI is a str, not {type(text).__name__}")
    if len(text) > MAX_URI_LENGTH:
        raise InvalidUri(
            f"invalid hypervisor URI: {len(text)} characters, more than the "
            f"{MAX_URI_LENGTH} a URI may have"
        )
    if not text.isprintable():
        raise _bad(text, "it contains control characters")
    scheme, colon, _ = text.partition(":")
    if not colon or scheme not in SCHEMES:
        raise NotSupported(
            f"unknown hypervisor URI {text!r}: use xen:///system or sim:///default, "
            "xenstore:/// or xend+unix:///PATH / xend+http://HOST:PORT"
        )
    try:
        parts = urllib.parse.urlsplit(text)
    except ValueError as e:
        raise _bad(text, str(e)) from None
    if scheme == "xen":
        run_dir, lib_dir = _only_dirs(text, parts, "xen:///system?run_dir=/var/run/xen")
        if parts.netloc not in ("", "localhost") or parts.path not in ("", "/", "/system"):
            raise _bad(text, "the local host is xen:///system")
        return Uri(text, scheme, run_dir=run_dir, lib_dir=lib_dir)
    if scheme == "sim":
        if parts.netloc not in ("", "localhost") or parts.fragment:
            raise _bad(
                text, "a simulated host is sim:///default, sim:///?cpus=N or sim:///PATH.toml"
            )
        query = _query(text, parts.query)
        run_dir, lib_dir = _dirs(text, query)
        params = MappingProxyType(query)
        path = urllib.parse.unquote(parts.path)
        base = {"/default": "default", "default": "default", "": "scale", "/": "scale"}.get(path)
        if base is None and path.endswith(".toml"):
            base = "toml"
        if base is not None:
            return Uri(
                text,
                scheme,
                path=path if base == "toml" else None,
                sim_base=base,
                params=params,
                run_dir=run_dir,
                lib_dir=lib_dir,
            )
        raise _bad(
            text,
            f"unknown simulated host {path!r}: use sim:///default, sim:///?cpus=N&domains=M "
            "or sim:///path/host.toml",
        )
    if scheme == "xend+unix":
        _no_params(text, parts, "xend+unix:///var/lib/xend/xend-socket")
        if parts.netloc not in ("", "localhost"):
            raise _bad(text, "a xend+unix URI has no host (xend+unix:///PATH)")
        return Uri(text, scheme, path=urllib.parse.unquote(parts.path) or XEND_DEFAULT_SOCKET)
    if scheme == "xend+http":
        _no_params(text, parts, "xend+http://HOST:8000")
        try:
            port = parts.port
        except ValueError:
            raise _bad(text, "the port is not a number from 0 to 65535") from None
        if not parts.hostname:
            raise _bad(text, "no host (xend+http://HOST:PORT)")
        return Uri(text, scheme, host=(parts.hostname, port or XEND_DEFAULT_PORT))
    # xenstore
    run_dir, lib_dir = _only_dirs(text, parts, "xenstore:///PATH?run_dir=/var/run/xen")
    if parts.netloc not in ("", "localhost"):
        raise _bad(text, "a xenstore URI has no host (xenstore:///PATH)")
    path = urllib.parse.unquote(parts.path)
    return Uri(
        text,
        scheme,
        path=None if path in ("", "/") else path,
        run_dir=run_dir,
        lib_dir=lib_dir,
    )
