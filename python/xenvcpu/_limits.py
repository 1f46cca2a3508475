"""Every size and wait a caller can name, capped, and the checks that enforce the caps.

Input from users, files and daemons is checked here before anything is allocated or
waited for, so that no input can exhaust memory or hang the process; each refusal names
the cap. The same caps are listed in docs/limits.md (the Rust core has its own for what it
parses: ``MAX_WIDTH``, ``MAX_MAPLEN``, the simulated host's sizes).
"""

from __future__ import annotations

import math

__all__ = [
    "DOMID_FIRST_RESERVED",
    "MAX_DOMAIN_NAME",
    "MAX_SXP_BYTES",
    "MAX_SXP_DEPTH",
    "MAX_SXP_NUMBER",
    "MAX_TIMEOUT",
    "MAX_TX_ATTEMPTS",
    "MAX_VCPUS",
    "MAX_XEND_BODY",
    "MAX_XS_EVENT",
    "MAX_XS_EVENTS",
    "MAX_XS_MESSAGE",
    "ascii_uint",
    "count_arg",
    "timeout_arg",
]

#: The longest wait any call accepts, in seconds (a day): a longer one is surely a mistake.
MAX_TIMEOUT = 86400.0
#: The most vCPUs a domain may have (Xen's own per-domain limit on x86, MAX_VIRT_CPUS).
MAX_VCPUS = 8192
#: Domain ids at and above this are Xen's reserved ones (DOMID_FIRST_RESERVED, xen.h).
DOMID_FIRST_RESERVED = 0x7FF0
#: Longest domain name looked up or shown (xenstore values are at most 4096 bytes).
MAX_DOMAIN_NAME = 4096

# ---- protocol clients (xenvcpu.daemon): what a daemon's reply may make us hold or do

#: Largest xenstore message taken from the daemon, header excluded. Requests are capped
#: at the protocol's 4096 bytes (XENSTORE_PAYLOAD_MAX), but oxenstored answers a big
#: DIRECTORY in one reply beyond that; a length over this cap is not xenstore.
MAX_XS_MESSAGE = 1 << 20
#: Largest watch event: a node path (at most 3072 bytes) and the token the WATCH request
#: carried (the request fit 4096 bytes), with their NULs.
MAX_XS_EVENT = 8192
#: Watch events a xenstore client keeps for ``read_watch``; beyond this the oldest is
#: dropped and counted (a consumer that falls behind re-reads the nodes it watches).
MAX_XS_EVENTS = 1024
#: Most attempts a xenstore transaction may be given (each may wait a full timeout).
MAX_TX_ATTEMPTS = 1000
#: Largest xend HTTP reply body read (the biggest real reply, a detailed domain list,
#: is some kilobytes per domain). http.client caps the headers: 100 of them, each line
#: at most 65536 bytes.
MAX_XEND_BODY = 4 << 20
#: Largest SXP text parsed (a xend reply body).
MAX_SXP_BYTES = MAX_XEND_BODY
#: Deepest nesting of SXP lists (xend's records nest about five deep).
MAX_SXP_DEPTH = 64
#: Longest SXP number, in characters, and the largest magnitude of its decimal
#: exponent: a vcpu_avail mask of MAX_VCPUS bits has 2467 digits; ``1e999999999``
#: would take minutes to turn into an int.
MAX_SXP_NUMBER = 2560


def timeout_arg(value: object, name: str = "timeout", *, zero: bool = True) -> float:
    """A wait in seconds: a finite number from 0 to :data:`MAX_TIMEOUT`.

    ``zero=False`` refuses 0 as well: for the timeout of a client's every request, where
    0 would make each one fail (0 as a "poll" suits only single waits).

    Raises:
        TypeError: not a number (bools are refused too).
        ValueError: negative, NaN, infinite or above the cap (or 0 when ``zero`` is
            False); the message says which.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} is a number of seconds, not {type(value).__name__}")
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_TIMEOUT or (seconds == 0 and not zero):
        low = "0" if zero else "more than 0"
        raise ValueError(
            f"{name} {_shown(value)}: expected a finite number of seconds from {low} to "
            f"{MAX_TIMEOUT:g}"
        )
    return seconds


def _shown(value: object) -> str:
    """A number for a message: a huge int by its size (its digits could be thousands)."""
    if isinstance(value, int) and value.bit_length() >= 64:
        return f"a {value.bit_length()}-bit number"
    return repr(value)


def count_arg(value: object, name: str, low: int, high: int) -> int:
    """A whole number from ``low`` to ``high`` (a count, or an id a protocol carries).

    Raises:
        TypeError: not an int (bools are refused too).
        ValueError: outside ``low..high``; the message gives the range.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} {_shown(value)} is outside {low}..{high}")
    return value


def ascii_uint(text: str, limit: int) -> int | None:
    """``text`` as a number below ``limit`` when it is ASCII digits only, else None.

    Unlike ``str.isdigit`` and ``int``, other scripts' digits ("٣") and signs, spaces or
    underscores are not numbers here; the length is checked before converting.
    """
    if not text or len(text) > len(str(limit)) or not (text.isascii() and text.isdigit()):
        return None
    n = int(text)
    return n if n < limit else None
