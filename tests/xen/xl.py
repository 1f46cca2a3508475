"""Run and parse `xl` inside the lab's dom0: the reference the xenvcpu API is checked against.

Every function shells out to the real `xl` (Xen 4.17) and returns plain Python data:

    info()                  -> dict of `xl info` ("nr_cpus" -> "4"; ints where the value is one)
    domains()               -> [Domain(name, domid, mem_mib, vcpus, state, time_s)]  (`xl list`)
    vcpus(dom=None)   -> [Vcpu(name, domid, vcpu, cpu, state, time_s, hard, soft)]  (`xl vcpu-list`)
    vcpu_pin(dom, vcpu, hard, soft=None)    `xl vcpu-pin`
    vcpu_set(dom, count, timeout=...)       `xl vcpu-set`, then wait until that many are online
    parse_cpulist("0-2,5", nr_cpus) -> frozenset  ("all", "none", "-" and "^N" exclusions too)
    format_cpulist({0, 1, 3}) -> "0-1,3"

Affinities and the CPU column are frozensets of pCPU numbers (an offline vCPU has cpu=None),
so they compare directly with `set(xenvcpu.CpuMap)` -- iteration yields the set CPUs.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Union

XL = "xl"


class XlError(RuntimeError):
    def __init__(self, argv: list[str], rc: int, stderr: str):
        super().__init__(f"{' '.join(argv)} failed (rc {rc}): {stderr.strip()}")
        self.argv, self.rc, self.stderr = argv, rc, stderr


def xl(*args: object, timeout: float = 60) -> str:
    """Run `xl ARGS...`; return its stdout, raise XlError on a non-zero exit."""
    argv = [XL, *map(str, args)]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise XlError(argv, p.returncode, p.stderr)
    return p.stdout


# --- cpulists ---------------------------------------------------------------------------
def parse_cpulist(text: str, nr_cpus: int | None = None) -> frozenset[int]:
    """Parse xl's (and Linux's) CPU list syntax into a set of CPU numbers.

    "0-2,5" -> {0,1,2,5}; "all" -> range(nr_cpus); "none", "-" or "" -> empty;
    "0-3,^2" -> {0,1,3} (exclusions, as `xl vcpu-pin` accepts them); whitespace is ignored.
    """
    text = text.strip()
    if text in ("", "-", "none"):
        return frozenset()
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        neg = part.startswith("^")
        part = part.lstrip("^")
        if part == "all":
            if nr_cpus is None:
                raise ValueError("'all' needs nr_cpus")
            chunk = set(range(nr_cpus))
        else:
            m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
            if not m:
                raise ValueError(f"bad cpulist element {part!r} in {text!r}")
            lo, hi = int(m[1]), int(m[2] if m[2] is not None else m[1])
            if hi < lo:
                raise ValueError(f"bad range {part!r} in {text!r}")
            chunk = set(range(lo, hi + 1))
        if neg:
            cpus -= chunk
        else:
            cpus |= chunk
    return frozenset(cpus)


def format_cpulist(cpus: Iterable[int]) -> str:
    """{0, 1, 3} -> "0-1,3" (ascending ranges; "" for the empty set)."""
    out: list[str] = []
    run: list[int] = []
    for c in sorted(set(cpus)):
        if run and c == run[-1] + 1:
            run.append(c)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [c]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


# --- xl info -------------------------------------------------------------------------------
def info() -> dict[str, int | str]:
    """`xl info` as a dict; values that are plain integers become ints."""
    result: dict[str, int | str] = {}
    for line in xl("info").splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        result[key] = int(value) if re.fullmatch(r"-?\d+", value) else value
    return result


def nr_cpus() -> int:
    return int(info()["nr_cpus"])


# --- xl list --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Domain:
    name: str
    domid: int
    mem_mib: int
    vcpus: int
    state: str
    time_s: float


def domains() -> list[Domain]:
    """`xl list`: Name ID Mem VCPUs State Time(s)."""
    rows = []
    for line in xl("list").splitlines()[1:]:
        f = line.split()
        if len(f) < 6:
            continue
        rows.append(Domain(f[0], int(f[1]), int(f[2]), int(f[3]), f[4], float(f[5])))
    return rows


def domid(name: str) -> int:
    return int(xl("domid", name).strip())


# --- xl vcpu-list -------------------------------------------------------------------------
@dataclass(frozen=True)
class Vcpu:
    name: str
    domid: int
    vcpu: int
    cpu: int | None  # None: offline ("-")
    state: str  # "r--" running, "-b-" blocked, "--p" offline (not up in the guest)
    time_s: float
    hard: frozenset[int]
    soft: frozenset[int]
    hard_text: str = field(default="", compare=False)  # as xl printed it: "all", "0-1,3"
    soft_text: str = field(default="", compare=False)

    @property
    def online(self) -> bool:
        return not self.state.endswith("p")


def vcpus(dom: object = None, nr: int | None = None) -> list[Vcpu]:
    """`xl vcpu-list [dom]`: Name ID VCPU CPU State Time(s) Affinity (Hard / Soft)."""
    nr = nr_cpus() if nr is None else nr
    rows = []
    out = xl("vcpu-list", *([] if dom is None else [dom]))
    for line in out.splitlines()[1:]:
        m = re.fullmatch(
            r"\s*(\S+)\s+(\d+)\s+(\d+)\s+(\d+|-)\s+(\S{3})\s+([\d.]+)\s+(\S+)\s*/\s*(\S+)\s*", line
        )
        if not m:
            continue
        rows.append(
            Vcpu(
                m[1],
                int(m[2]),
                int(m[3]),
                None if m[4] == "-" else int(m[4]),
                m[5],
                float(m[6]),
                parse_cpulist(m[7], nr),
                parse_cpulist(m[8], nr),
                m[7],
                m[8],
            )
        )
    return rows


def vcpu(dom: object, n: int) -> Vcpu:
    for v in vcpus(dom):
        if v.vcpu == n:
            return v
    raise LookupError(f"domain {dom} has no vCPU {n}")


# --- xl vcpu-pin / vcpu-set ----------------------------------------------------------------
Cpus = Union[str, Iterable[int]]  # xl syntax ("all", "0-1", "-") or CPU numbers


def _cpus_arg(cpus: Cpus) -> str:
    return cpus if isinstance(cpus, str) else (format_cpulist(cpus) or "none")


def vcpu_pin(dom: object, vcpu_: object, hard: Cpus, soft: Cpus | None = None) -> None:
    """`xl vcpu-pin DOM VCPU HARD [SOFT]`.

    CPUs are a set or xl syntax ("all", "0-1", "-" keeps the current map)."""
    xl("vcpu-pin", dom, vcpu_, _cpus_arg(hard), *([] if soft is None else [_cpus_arg(soft)]))


class AffinitySaver:
    """Remembers vCPU affinities (`save`) and puts them back (`restore`): the `restore_affinity`
    fixture of tests/xen/conftest.py restores after each test."""

    def __init__(self) -> None:
        self.saved: dict[tuple[str, int], tuple[frozenset[int], frozenset[int]]] = {}

    def save(self, dom: object, vcpu_: int) -> None:
        v = vcpu(dom, vcpu_)
        self.saved.setdefault((str(dom), vcpu_), (v.hard, v.soft))

    def restore(self) -> None:
        for (dom, n), (hard, soft) in self.saved.items():
            vcpu_pin(dom, n, hard or "all", soft or "all")


def online_count(dom: object) -> int:
    return sum(v.online for v in vcpus(dom))


def vcpu_set(dom: object, count: int, timeout: float = 60) -> None:
    """`xl vcpu-set DOM COUNT`, then wait until `xl vcpu-list` shows COUNT online vCPUs.

    Raising the count needs the guest to online the new vCPUs (domu's init does, as a udev rule
    would); until it does, they show as "--p"."""
    xl("vcpu-set", dom, count)
    deadline = time.monotonic() + timeout
    while True:
        n = online_count(dom)
        if n == count:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"domain {dom}: {n} vCPUs online {timeout} s after `xl vcpu-set {dom} {count}`"
            )
        time.sleep(0.5)


# --- the lab guests' side ------------------------------------------------------------------
CONSOLE_LOG = "/var/log/xen/console/guest-{name}.log"


def console_log(name: str) -> str:
    """The console log of a lab guest, without the CRs (xenconsoled's log of the PV console for
    domu and domu-pvh; the emulated serial port of domu-hvm, which qemu writes there)."""
    with open(CONSOLE_LOG.format(name=name), "rb") as f:
        return f.read().decode("utf-8", "replace").replace("\r", "")


def guest_online(name: str) -> frozenset[int]:
    """The online CPU set the guest's own init last reported ("DOMU online=0-1" lines of
    lab/domu-init.sh, printed within about a second of a change)."""
    lines = re.findall(r"^DOMU online=(\S*)$", console_log(name), re.M)
    if not lines:
        raise LookupError(f"{name} has not reported its online CPUs on its console yet")
    return parse_cpulist(lines[-1])


def wait_guest_online(name: str, want: Iterable[int], timeout: float = 60) -> float:
    """Wait until the guest reports `want` online; return how long that took (s)."""
    want = frozenset(want)
    t0 = time.monotonic()
    while True:
        try:
            if guest_online(name) == want:
                return time.monotonic() - t0
        except LookupError:
            pass
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(
                f"{name} did not report online={format_cpulist(want)} in {timeout} s"
            )
        time.sleep(0.5)


def xenstore_read(path: str) -> str | None:
    """`xenstore-read PATH`, None if the node does not exist."""
    p = subprocess.run(["xenstore-read", path], capture_output=True, text=True, timeout=30)
    return p.stdout.strip() if p.returncode == 0 else None


def xenstore_exists(path: str) -> bool:
    p = subprocess.run(["xenstore-exists", path], capture_output=True, timeout=30)
    return p.returncode == 0
