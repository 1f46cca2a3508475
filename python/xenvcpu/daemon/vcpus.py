"""Change which vCPUs of a running domain are online, the way the toolstack does.

No hypercall can change the online vCPU count of a running domain (xen-interfaces.md §3.7).  For PV
and PVH guests the toolstack writes ``/local/domain/<domid>/cpu/<n>/availability`` =
``online`` | ``offline`` for every n in 0 … max_vcpus-1 in **one** xenstore transaction
(retried on EAGAIN) and the guest kernel, which watches its ``cpu`` subtree, brings the
vCPUs up or down (xen-interfaces.md §5.4, §5.5; libxl ``libxl__set_vcpuonline_xenstore``).  HVM
guests with upstream QEMU take QMP instead (:mod:`xenvcpu.daemon.qmp`, :mod:`xenvcpu.guests`).

These functions are backend-agnostic: the Domain class supplies the facts it got from
the hypervisor (max vCPUs, HVM, dying) and a callable that reads the hypervisor's view
of the online vCPUs (getvcpuinfo / nr_online_vcpus).

What :class:`~xenvcpu.Domain` does with them (``set_vcpus`` / ``set_online``)::

    check_settable(dom.id, dying=info.dying)
    online = validate_count(dom.id, n, info.max_vcpus)       # or validate_online(...)
    write_availability(xs, dom.id, info.max_vcpus, online)
    if wait:
        wait_online(read_online, online, timeout, domain=dom.id)
"""

from __future__ import annotations

import errno as _errno
import itertools
import time
from collections.abc import Iterable, Sequence, Set
from typing import Callable

from xenvcpu._limits import (
    DOMID_FIRST_RESERVED,
    MAX_DOMAIN_NAME,
    MAX_VCPUS,
    ascii_uint,
    timeout_arg,
)
from xenvcpu._ranges import format_ranges
from xenvcpu.daemon.xenstore import Transaction, XenstoreClient
from xenvcpu.errors import (
    DomainDying,
    DomainNotFound,
    DomainRef,
    VcpuCountError,
    VcpuTimeout,
    XenstoreError,
)

__all__ = [
    "availability_path",
    "check_settable",
    "find_domid",
    "list_domains",
    "max_vcpus_from_xenstore",
    "read_availability",
    "read_names",
    "validate_count",
    "validate_online",
    "wait_online",
    "write_availability",
]


def availability_path(domid: int, vcpu: int) -> str:
    """``/local/domain/<domid>/cpu/<vcpu>/availability`` (xen-interfaces.md §5.4)."""
    return f"/local/domain/{int(domid)}/cpu/{int(vcpu)}/availability"


def _xs_number(name: str, limit: int) -> int | None:
    """A xenstore node name that is a number below ``limit`` written as the toolstack
    writes one (ASCII digits, no leading zero): ``cpu/01`` or ``/local/domain/007`` is
    no vCPU or domain, so one number cannot be read through several names."""
    n = ascii_uint(name, limit)
    return n if n is not None and name == str(n) else None


def _name_of(raw: bytes | None) -> str:
    """A domain name as xenstore holds it ("" when missing or longer than any real one:
    xenstored's values are at most 4096 bytes); bytes that are not UTF-8 read as U+FFFD."""
    if raw is None or len(raw) > MAX_DOMAIN_NAME:
        return ""
    return raw.decode("utf-8", "replace")


def _domain_label(domain: DomainRef) -> str:
    return f"domain {domain}" if isinstance(domain, int) else f"domain {domain!r}"


def check_settable(domain: DomainRef, *, dying: bool = False) -> None:
    """Refuse domains whose online vCPUs cannot be changed at all.

    Raises:
        DomainDying: the domain is being destroyed.
    """
    if dying:
        raise DomainDying(
            f"{_domain_label(domain)} is dying (being destroyed): its vCPUs cannot be changed",
            domain=domain,
        )


def _check_max(max_vcpus: int) -> None:
    if isinstance(max_vcpus, bool) or not isinstance(max_vcpus, int) or max_vcpus < 1:
        raise ValueError(f"max_vcpus must be a positive int, not {max_vcpus!r}")
    if max_vcpus > MAX_VCPUS:
        raise ValueError(f"max_vcpus {max_vcpus} is above {MAX_VCPUS}, the most a domain may have")


def validate_count(domain: DomainRef, n: int, max_vcpus: int) -> frozenset[int]:
    """Check an online vCPU count and return the set it means: ``{0, …, n-1}``.

    Like libxl, 0 and anything above the domain's maximum are refused (xen-interfaces.md §5.5).

    Raises:
        VcpuCountError: ``n < 1`` or ``n > max_vcpus``; the message names the domain and
            the valid range ``1..max_vcpus``.
        TypeError: ``n`` is not an int.
    """
    _check_max(max_vcpus)
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"vCPU count must be an int, not {type(n).__name__}")
    if n < 1 or n > max_vcpus:
        raise VcpuCountError(
            f"{_domain_label(domain)}: cannot have {n} vCPUs online; the valid range is "
            f"1..{max_vcpus} (the domain's maximum is {max_vcpus})",
            domain=domain,
        )
    return frozenset(range(n))


def validate_online(domain: DomainRef, online: Iterable[int], max_vcpus: int) -> frozenset[int]:
    """Check a set of vCPU numbers to be online and return it as a frozenset.

    Raises:
        VcpuCountError: the set is empty, or names a vCPU outside ``0..max_vcpus-1``
            (``.vcpu`` is the first such vCPU); the message gives the valid range.
    """
    _check_max(max_vcpus)
    # Read at most a few times max_vcpus items: an endless iterable must end in an error.
    limit = 4 * max(max_vcpus, 1) + 64
    items = list(itertools.islice(online, limit + 1))
    if len(items) > limit:
        raise VcpuCountError(
            f"{_domain_label(domain)}: more than {limit} vCPU numbers given for a domain of "
            f"{max_vcpus} vCPUs (valid vCPUs are 0..{max_vcpus - 1})",
            domain=domain,
        )
    for v in items:
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"vCPU numbers must be ints, not {type(v).__name__}")
    wanted = frozenset(items)
    if not wanted:
        raise VcpuCountError(
            f"{_domain_label(domain)}: at least one vCPU must stay online; valid vCPUs are "
            f"0..{max_vcpus - 1} (1..{max_vcpus} of them may be online)",
            domain=domain,
        )
    bad = sorted(v for v in wanted if v < 0 or v >= max_vcpus)
    if bad:
        raise VcpuCountError(
            f"{_domain_label(domain)} has no vCPU {format_ranges(bad)}: valid vCPUs are "
            f"0..{max_vcpus - 1} (the domain's maximum is {max_vcpus})",
            domain=domain,
            vcpu=bad[0],
        )
    return wanted


def write_availability(
    xs: XenstoreClient,
    domid: int,
    max_vcpus: int,
    online: Set[int],
    *,
    max_attempts: int = 16,
) -> int:
    """Write ``availability`` for every vCPU 0 … max_vcpus-1 in ONE transaction.

    ``online`` vCPUs get ``online``, all others ``offline`` (xen-interfaces.md §5.5).  The body
    first reads ``/local/domain/<domid>`` inside the transaction, so a domain that does not
    exist (or disappears meanwhile, which makes the commit conflict) is reported instead
    of having its nodes created; a conflict (EAGAIN) re-runs the whole body.

    Returns:
        The number of attempts the transaction took (1 without conflicts).

    Raises:
        VcpuCountError: ``online`` is empty or names a vCPU ≥ ``max_vcpus``.
        DomainNotFound: ``/local/domain/<domid>`` does not exist.
        XenstoreError: any other xenstore failure (EAGAIN after ``max_attempts``).
    """
    wanted = validate_online(domid, online, max_vcpus)
    home = f"/local/domain/{int(domid)}"

    def body(tx: Transaction) -> int:
        if not tx.exists(home):
            raise DomainNotFound(
                f"domain {domid} does not exist: xenstore has no {home}",
                errno=_errno.ENOENT,
                domain=domid,
            )
        for vcpu in range(max_vcpus):
            tx.write(availability_path(domid, vcpu), "online" if vcpu in wanted else "offline")
        return tx.attempt

    return xs.transaction(body, max_attempts=max_attempts)


def read_availability(xs: XenstoreClient, domid: int) -> dict[int, bool]:
    """What xenstore currently asks of the guest: ``{vcpu: online?}`` (xen-interfaces.md §5.4).

    vCPUs whose node is missing are left out; this is the *request*, not what the guest
    did -- use the hypervisor's view (getvcpuinfo) for that. Only names a vCPU can have
    count: decimal numbers below MAX_VCPUS (no leading zero); at most MAX_VCPUS names
    are read.

    Raises:
        DomainNotFound: the domain has no ``cpu`` directory in xenstore.
        XenstoreError: ``errno`` E2BIG when ``cpu`` lists more than MAX_VCPUS entries
            (nothing below it is read then).
    """
    base = f"/local/domain/{int(domid)}/cpu"

    def body(tx: Transaction) -> dict[int, bool]:
        try:
            names = tx.directory(base, max_entries=MAX_VCPUS)
        except XenstoreError as exc:
            if exc.errno == _errno.ENOENT:
                raise DomainNotFound(
                    f"domain {domid} has no {base} in xenstore (no such domain?)",
                    errno=_errno.ENOENT,
                    domain=domid,
                ) from exc
            raise
        result: dict[int, bool] = {}
        for name in names:
            # Only names a vCPU can have: ASCII digits below the most vCPUs a domain may
            # have (a bogus cpu/4000000000 would otherwise make max_vcpus four billion).
            vcpu = _xs_number(name, MAX_VCPUS)
            if vcpu is None:
                continue
            value = tx.try_read(f"{base}/{name}/availability")
            if value is not None:
                result[vcpu] = value.strip(b"\0") == b"online"
        return result

    return xs.transaction(body)


def list_domains(xs: XenstoreClient) -> dict[int, str]:
    """``{domid: name}`` of every domain xenstore knows, read in one transaction.

    The pure-Python way to list domains when the hypercall path is unavailable
    (xen-interfaces.md §5.4: ``/local/domain`` lists domids, ``/local/domain/<id>/name`` their
    names); a domain without a ``name`` node gets ``""``. Entries that are no domid
    (not a decimal number below DOMID_FIRST_RESERVED, a leading zero, bytes that are not
    UTF-8) are skipped; a name that is not UTF-8 reads with U+FFFD.

    Raises:
        XenstoreError: ``errno`` E2BIG when ``/local/domain`` lists more entries than
            there can be domains (DOMID_FIRST_RESERVED): nothing below it is read then.
    """

    def body(tx: Transaction) -> dict[int, str]:
        try:
            ids = tx.directory("/local/domain", max_entries=DOMID_FIRST_RESERVED)
        except XenstoreError as exc:
            if exc.errno == _errno.ENOENT:
                return {}
            raise
        domids = [(d, e) for e in ids if (d := _xs_number(e, DOMID_FIRST_RESERVED)) is not None]
        # every name in one pipelined batch: one round trip to xenstored, not one per domain
        got = tx.try_read_many([f"/local/domain/{entry}/name" for _, entry in domids])
        return {domid: _name_of(raw) for (domid, _), raw in zip(domids, got)}

    return xs.transaction(body)


def read_names(xs: XenstoreClient, domids: Sequence[int]) -> dict[int, str]:
    """``{domid: name}`` of the given domains, read in one pipelined batch with no
    transaction and no directory (one round trip to xenstored for up to
    :data:`~xenvcpu.daemon.xenstore.PIPELINE` domains): for callers that know the domids
    already (the hypervisor's domain list). A domain without a ``name`` node (one being
    created or destroyed) is left out; a name that is not UTF-8 reads with U+FFFD.
    """
    ids = [int(d) for d in domids]
    got = xs.try_read_many([f"/local/domain/{d}/name" for d in ids])
    return {d: name for d, raw in zip(ids, got) if (name := _name_of(raw))}


# About how long the list of known domains in a DomainNotFound message may be.
_KNOWN_CHARS = 4000


def find_domid(xs: XenstoreClient, domain: DomainRef) -> int:
    """The domid of a domain given by id or name, as xenstore sees it.

    Raises:
        DomainNotFound: no such id or name (the message lists the known names).
    """
    domains = list_domains(xs)
    if isinstance(domain, int) and not isinstance(domain, bool):
        if domain in domains:
            return domain
    else:
        text = str(domain)
        domid = ascii_uint(text, DOMID_FIRST_RESERVED)
        if domid is not None and domid in domains:
            return domid
        matches = [d for d, name in domains.items() if name == text]
        if len(matches) == 1:
            return matches[0]
    raise DomainNotFound(
        f"no domain {_clip(repr(domain))} in xenstore; known domains: {_known(domains)}",
        errno=_errno.ESRCH,
        domain=domain,
    )


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _known(domains: dict[int, str]) -> str:
    """The known domains for a message, by id, at most about _KNOWN_CHARS long (xenstore
    may list tens of thousands, with names of up to 4096 bytes)."""
    shown: list[str] = []
    size = 0
    listed = sorted(domains.items())
    for d, n in listed:
        if size > _KNOWN_CHARS:
            return ", ".join(shown) + f" and {len(listed) - len(shown)} more"
        shown.append(f"{n[:64] + ('...' if len(n) > 64 else '') or '?'} ({d})")
        size += len(shown[-1]) + 2
    return ", ".join(shown) or "none"


def max_vcpus_from_xenstore(xs: XenstoreClient, domid: int) -> int:
    """The domain's maximum vCPUs as xenstore shows it: libxl writes ``cpu/<n>`` for
    n = 0 … max_vcpus-1 at build time (xen-interfaces.md §5.4).  Prefer the hypervisor's
    ``max_vcpu_id + 1`` when the hypercall path is available. At most MAX_VCPUS: names
    beyond it are no vCPUs (see :func:`read_availability`).

    Raises:
        DomainNotFound: no ``cpu/<n>/availability`` node for the domain.
        XenstoreError: as :func:`read_availability` (E2BIG for a ``cpu`` directory of
            more than MAX_VCPUS entries).
    """
    vcpus = read_availability(xs, domid)
    if not vcpus:
        raise DomainNotFound(
            f"domain {domid} has no cpu/<n>/availability nodes in xenstore",
            errno=_errno.ENOENT,
            domain=domid,
        )
    return max(vcpus) + 1


def wait_online(
    read_online: Callable[[], Set[int]],
    wanted: Set[int],
    timeout: float,
    *,
    domain: DomainRef | None = None,
    poll_interval: float = 0.1,
    wait_event: Callable[[float], object] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> frozenset[int]:
    """Wait until the hypervisor's view of the online vCPUs equals ``wanted``.

    ``read_online()`` returns the vCPUs that are online now (from getvcpuinfo, or the
    simulator).  It is called at once, then after each pause: the pause starts at 5 ms
    and doubles up to ``poll_interval``.  When ``wait_event`` is given it is called with
    the pause length instead of ``sleep``, so a caller can wake early on a xenstore
    watch (e.g. ``lambda t: xs.read_watch(t)``).  ``timeout=0`` checks once.

    Returns:
        The online set, equal to ``wanted``.

    Raises:
        VcpuTimeout: still different after ``timeout`` seconds; ``.pending`` holds the
            vCPUs that did not follow (sorted), the message says which way each went.
        Whatever ``read_online`` raises (e.g. DomainNotFound when the domain vanished).
    """
    timeout = timeout_arg(timeout)
    poll_interval = timeout_arg(poll_interval, "poll_interval")
    target = frozenset(wanted)
    deadline = clock() + timeout
    pause = min(0.005, poll_interval)
    while True:
        now_online = frozenset(read_online())
        if now_online == target:
            return now_online
        left = deadline - clock()
        if left <= 0:
            break
        step = min(pause, left)
        if wait_event is not None:
            wait_event(step)
        else:
            sleep(step)
        pause = min(pause * 2, poll_interval)

    not_up = sorted(target - now_online)
    not_down = sorted(now_online - target)
    what = []
    if not_up:
        what.append(f"vCPU {format_ranges(not_up)} still offline (asked: online)")
    if not_down:
        what.append(f"vCPU {format_ranges(not_down)} still online (asked: offline)")
    who = f"{_domain_label(domain)}: " if domain is not None else ""
    err = VcpuTimeout(
        f"{who}the guest did not follow within {timeout:g} s: "
        + "; ".join(what)
        + " (does the guest kernel support Xen vCPU hotplug?)",
        domain=domain,
        vcpu=(not_up + not_down)[0],
    )
    err.pending = tuple(sorted(not_up + not_down))
    raise err
