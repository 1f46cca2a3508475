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
    "MAX_TIMEOUT",
    "MAX_VCPUS",
    "ascii_uint",
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


def timeout_arg(value: object, name: str = "timeout") -> float:
    """A wait in seconds: a finite number from 0 to :data:`MAX_TIMEOUT`.

    Raises:
        TypeError: not a number (bools are refused too).
        ValueError: negative, NaN, infinite or above the cap; the message says which.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} is a number of seconds, not {type(value).__name__}")
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_TIMEOUT:
        raise ValueError(
            f"{name} {value!r}: expected a finite number of seconds from 0 to {MAX_TIMEOUT:g}"
        )
    return seconds


def ascii_uint(text: str, limit: int) -> int | None:
    """``text`` as a number below ``limit`` when it is ASCII digits only, else None.

    Unlike ``str.isdigit`` and ``int``, other scripts' digits ("٣") and signs, spaces or
    underscores are not numbers here; the length is checked before converting.
    """
    if not text or len(text) > len(str(limit)) or not (text.isascii() and text.isdigit()):
        return None
    n = int(text)
    return n if n < limit else None
