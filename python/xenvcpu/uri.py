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

A simulated host's query parameters (``version=``, ``offline=``, ``delay_ms=``,
``follow=``, and the scale host's ``cpus=`` …) are checked by the simulator itself, which
names any it does not know; the other schemes take no parameters.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

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
        params: the query parameters (``sim`` only).
    """

    text: str
    scheme: str
    path: str | None = None
    host: tuple[str, int] | None = None
    sim_base: str | None = None
    params: Mapping[str, str] = field(default_factory=lambda: _EMPTY)

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
        _no_params(text, parts, "xen:///system")
        if parts.netloc not in ("", "localhost") or parts.path not in ("", "/", "/system"):
            raise _bad(text, "the local host is xen:///system")
        return Uri(text, scheme)
    if scheme == "sim":
        if parts.netloc not in ("", "localhost") or parts.fragment:
            raise _bad(
                text, "a simulated host is sim:///default, sim:///?cpus=N or sim:///PATH.toml"
            )
        params = MappingProxyType(_query(text, parts.query))
        path = urllib.parse.unquote(parts.path)
        if path in ("/default", "default"):
            return Uri(text, scheme, sim_base="default", params=params)
        if path in ("", "/"):
            return Uri(text, scheme, sim_base="scale", params=params)
        if path.endswith(".toml"):
            return Uri(text, scheme, path=path, sim_base="toml", params=params)
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
    _no_params(text, parts, "xenstore:///PATH")
    if parts.netloc not in ("", "localhost"):
        raise _bad(text, "a xenstore URI has no host (xenstore:///PATH)")
    path = urllib.parse.unquote(parts.path)
    return Uri(text, scheme, path=None if path in ("", "/") else path)
