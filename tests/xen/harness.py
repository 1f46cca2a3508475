#!/usr/bin/env python3
"""The Xen lab: run the project's `xen` tests against a real Xen 4.17 under qemu (TCG).

    python3 tests/xen/harness.py            (what `make xen-test` runs; as root)

Stages, each with a hard timeout:
  1. preflight + host tools  apt-get install qemu-system-x86 debootstrap e2fsprogs libxen-dev
                             if missing
  2. wheel (in parallel)     `maturin build --release` of this checkout (or XEN_TEST_WHEEL)
  3. dom0 rootfs             debootstrap bookworm minbase + Debian's kernel and Xen 4.17,
                             cached in $XEN_LAB_DIR and rebuilt when its recipe changes
  4. boot image              ext4 image of the rootfs + lab/ scripts, hypervisor, kernel,
                             initrd, the domU's busybox initramfs (cached, cheap to rebuild)
  5. boot + tests            qemu-system-x86_64 -cpu qemu64,+svm,+npt -smp 4: Xen, a PV dom0
                             with 2 vCPUs, the PV guest "domu" (vcpus=2, maxvcpus=4; with
                             XEN_TEST_GUESTS also the PVH "domu-pvh" and the HVM "domu-hvm");
                             dom0 installs the wheel and runs `pytest -m xen tests/xen` as root
  6. results                 junit.xml, pytest.log, serial logs, summary.json in the run dir

Exit codes: 0 all tests passed; 1 a test failed, the run did not finish, or the project
could not be built; 77 the lab could not start for a reason outside the project (not root,
apt or the Debian mirror unreachable, a package missing, no qemu, not enough memory or disk):
then a JUnit file with the xen tests marked skipped and the reason is written.
Settings are environment variables; see docs/lab.md or the KNOBS table below.
"""

from __future__ import annotations

import fcntl
import glob
import gzip
import hashlib
import inspect
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

EXIT_PASS, EXIT_FAIL, EXIT_UNAVAILABLE = 0, 1, 77

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
GUEST = HERE / "lab"

KNOBS = {  # name: (default, meaning)
    "XEN_LAB_DIR": ("/var/tmp/xenvcpu-lab", "cache: rootfs tree, boot image, runs/"),
    "XEN_TEST_OUT": ("", "run directory (default $XEN_LAB_DIR/runs/<UTC time>)"),
    "XEN_TEST_JUNIT": ("", "also copy the JUnit XML to this path"),
    "XEN_TEST_PATHS": (
        "tests/xen benches/xen",
        "pytest paths / node ids, relative to the checkout (benches/xen: one untimed round each)",
    ),
    "XEN_TEST_ARGS": ("", "extra pytest arguments, e.g. '-k pin -x'"),
    "XEN_TEST_ENV": ("", "NAME=VALUE ... exported for pytest in dom0, e.g. PYTHONTRACEMALLOC=20"),
    "XEN_TEST_WHEEL": ("", "use this wheel (file, or directory holding one) instead of building"),
    "XEN_TEST_MIRROR": ("", "Debian mirror (default: the host's apt sources)"),
    "XEN_TEST_REBUILD": ("0", "1: debootstrap the rootfs again even if cached"),
    "XEN_TEST_SHELL": ("0", "1: interactive root shell in dom0 instead of the tests (no timeouts)"),
    "XEN_TEST_GUESTS": (
        "pv",
        "guests dom0 starts: any of pv (domu), pvh (domu-pvh), hvm (domu-hvm), comma-separated; "
        "none for no guest",
    ),
    "XEN_TEST_NO_DOMU": ("0", "1: start no guest (same as XEN_TEST_GUESTS=none)"),
    "XEN_TEST_GUEST_TIMEOUT": (
        "240",
        "s, dom0 waits this long for each guest's init to report (1500 with hvm)",
    ),
    "XEN_TEST_VERBOSE": ("0", "1: echo every serial console line"),
    "XEN_TEST_CPU": (
        "qemu64,+svm,+npt",
        "qemu -cpu model; SVM lets Xen run PVH and HVM guests, +npt adds HAP (docs/lab.md)",
    ),
    "XEN_TEST_QEMU": ("qemu-system-x86_64", "the qemu binary (name on PATH or a path)"),
    "XEN_TEST_XEN_ARGS": ("", "extra Xen command line arguments, e.g. 'sched=credit'"),
    "XEN_TEST_SMP": ("4", "emulated pCPUs"),
    "XEN_TEST_MEM": ("2G", "qemu RAM"),
    "XEN_TEST_DOM0_MEM": ("768M", "dom0 RAM"),
    "XEN_TEST_DOM0_VCPUS": ("2", "dom0 vCPUs (4 doubles the boot time on 2 host cores)"),
    "XEN_TEST_TCG_THREAD": (
        "single",
        "qemu TCG threading: single, or multi (a thread per pCPU: the PV guest stalls under "
        "load; multi with pvh, whose kernel crashes under single, and with hvm, whose guest "
        "never leaves SeaBIOS under single)",
    ),
    "XEN_TEST_DEADLINE": (
        "1500",
        "s, the whole harness; every stage's timeout is capped by what is left (3300 with hvm)",
    ),
    "XEN_TEST_APT_TIMEOUT": ("300", "s, apt-get update + install"),
    "XEN_TEST_DEBOOTSTRAP_TIMEOUT": ("600", "s, debootstrap"),
    "XEN_TEST_BUILD_TIMEOUT": ("900", "s, maturin build --release (runs alongside debootstrap)"),
    "XEN_TEST_BOOT_TIMEOUT": (
        "600",
        "s, qemu start until pytest starts in dom0 (1800 with hvm)",
    ),
    "XEN_TEST_TEST_TIMEOUT": ("600", "s, the pytest run inside dom0"),
}


# Defaults that change when the run starts the PVH or the HVM guest (XEN_TEST_GUESTS has pvh or
# hvm), unless the variable is set (docs/lab.md, "Guest types"). Under single-threaded TCG the
# PVH guest's kernel crashed seconds after its init in 3 of 3 boots (with the system's qemu 7.2
# and with qemu 10.0), and ran through every test in every boot under multi-threaded TCG. The
# HVM guest never gets out of SeaBIOS's real mode under single, and takes 12-15 min to boot
# under multi on a quiet host, more than the 1800 s boot timeout on a busy one.
PVH_DEFAULTS = {
    "XEN_TEST_TCG_THREAD": "multi",
}
HVM_DEFAULTS = {
    "XEN_TEST_TCG_THREAD": "multi",
    "XEN_TEST_GUEST_TIMEOUT": "1500",
    "XEN_TEST_BOOT_TIMEOUT": "1800",
    "XEN_TEST_DEADLINE": "3300",
}


def knob(name: str) -> str:
    if os.environ.get(name, ""):
        return os.environ[name]
    if name in HVM_DEFAULTS and "hvm" in guests():
        return HVM_DEFAULTS[name]
    if name in PVH_DEFAULTS and "pvh" in guests():
        return PVH_DEFAULTS[name]
    return KNOBS[name][0]


def knob_int(name: str) -> int:
    try:
        return int(knob(name))
    except ValueError:
        raise SystemExit(f"xen-test: {name} must be an integer, got {knob(name)!r}") from None


def budget(name: str) -> float:
    """The timeout of a stage: its knob, capped by what is left of XEN_TEST_DEADLINE."""
    left = knob_int("XEN_TEST_DEADLINE") - (time.monotonic() - T0)
    if left < 5:
        raise TimeoutError(
            f"XEN_TEST_DEADLINE ({knob('XEN_TEST_DEADLINE')} s) reached before {name}"
        )
    return min(knob_int(name), left)


# --- the dom0 rootfs recipe: any change here rebuilds the cached rootfs -------------------
SUITE = "bookworm"
PACKAGES = [
    "linux-image-amd64",
    "xen-hypervisor-4.17-amd64",
    "xen-utils-4.17",
    "python3",
    "python3-pip",
    "python3-pytest",
    "busybox-static",
    # tests/conftest.py and pyproject's pytest addopts need these
    "python3-hypothesis",
    "python3-pytest-benchmark",
    # the exporter's tests (tests/xen/test_monitoring.py): xenvcpu[exporter]
    "python3-prometheus-client",
    # tests/xen/test_ansible_lab.py: the Ansible collection under Debian's ansible-core;
    # debootstrap resolves no virtual packages, and python3-cryptography (which ansible-core
    # needs) depends on python3-cffi-backend-api-*, which only python3-cffi-backend provides
    "ansible-core",
    "python3-cffi-backend",
    "iproute2",
    "kmod",
    "procps",
    "strace",
    # the HVM guest's device model (qemu-system-i386 built for Xen; pulls in seabios, which
    # hvmloader embeds); hvmloader itself is in xen-utils-4.17 (/usr/lib/xen-4.17/boot)
    "qemu-system-xen",
]
ROOTFS_RECIPE = {"suite": SUITE, "variant": "minbase", "packages": PACKAGES, "layout": 1}
IMAGE_SIZE = "3G"

# serial-console milestones: name -> regex (the first match's time is recorded)
MARKS = {
    "xen_banner": r"Xen version 4\.17",
    "xen_hvm": r"HVM: (SVM|VMX) enabled",
    "xen_hands_over": r"Freed \d+kB init memory",
    "dom0_userspace": r"XENVCPU-LAB: dom0 userspace reached",
    "xenstored_up": r"XENVCPU-LAB: xenstored up",
    "shares_mounted": r"XENVCPU-LAB: shares mounted",
    "wheel_installed": r"XENVCPU-LAB: wheel installed",
    "domu_up": r"XENVCPU-LAB: domu up",
    "pvh_up": r"XENVCPU-LAB: domu-pvh up",
    "hvm_up": r"XENVCPU-LAB: domu-hvm up",
    "pytest_start": r"XENVCPU-LAB: pytest start",
    "pytest_done": r"XENVCPU-LAB: pytest done",
    "lab_done": r"^XENVCPU-LAB-DONE",
}
FATAL = r"Hardware Dom0 crashed|Panic on CPU|Kernel panic - not syncing|\(XEN\) .*FATAL"


class LabUnavailable(Exception):
    """The lab cannot start for a reason outside the project (exit 77, tests skipped)."""


class HarnessFailure(Exception):
    """The project or the lab failed (exit 1)."""


T0 = time.monotonic()
TIMINGS: dict[str, float] = {}
CHILDREN: list[subprocess.Popen[bytes]] = []


def log(msg: str) -> None:
    print(f"[xen-test {time.monotonic() - T0:7.1f}s] {msg}", flush=True)


def loud(msg: str) -> None:
    bar = "!" * 78
    print(f"\n{bar}\n{msg}\n{bar}\n", file=sys.stderr, flush=True)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def spawn(cmd: list[str], log_path: Path | None = None, **kw: Any) -> subprocess.Popen[bytes]:
    """Start cmd in its own process group (so a timeout kills the whole tree)."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(
        cmd,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        **kw,
    )
    CHILDREN.append(proc)
    return proc


def wait(proc: subprocess.Popen[bytes], timeout: float, what: str) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        raise TimeoutError(f"{what} did not finish within {timeout:.0f} s") from None


def run(cmd: list[str], timeout: float, log_path: Path, **kw: Any) -> int:
    with open(log_path, "ab") as f:
        f.write(f"\n+ {shlex.join(cmd)}\n".encode())
    return wait(spawn(cmd, log_path, **kw), timeout, cmd[0])


def tail(path: Path, n: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


# --- 1. preflight and host tools ------------------------------------------------------
def preflight(lab: Path, mem: str) -> None:
    if os.geteuid() != 0:
        raise LabUnavailable("the Xen lab needs root (debootstrap, mke2fs -d of a root-owned tree)")
    want_mib = parse_size_mib(mem) + 768  # qemu peaks at ~1.4 GiB with -m 2G; leave headroom
    avail_mib = meminfo_mib("MemAvailable")
    if avail_mib < want_mib:
        raise LabUnavailable(
            f"not enough memory: {avail_mib} MiB available, the lab needs about {want_mib} MiB"
        )
    lab.mkdir(parents=True, exist_ok=True)
    free_gib = shutil.disk_usage(lab).free / 2**30
    if free_gib < 4:
        raise LabUnavailable(
            f"not enough disk space in {lab}: {free_gib:.1f} GiB free, needs 4 GiB"
        )


def parse_size_mib(size: str) -> int:
    m = re.fullmatch(r"(\d+)([MG]?)", size.strip().upper())
    if not m:
        raise SystemExit(f"xen-test: cannot parse memory size {size!r}")
    return int(m[1]) * (1024 if m[2] == "G" else 1)


def meminfo_mib(key: str) -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) // 1024
    return 0


# Host files the lab needs besides commands: libxenctrl's headers and library, to compile
# the C baseline of benches/xen (build_c_baselines) against the same Xen 4.17 ABI as dom0.
NEED_FILES = {"/usr/include/xenctrl.h": "libxen-dev"}


def host_tools(out: Path) -> None:
    need = {
        "qemu-system-x86_64": "qemu-system-x86",
        "debootstrap": "debootstrap",
        "mke2fs": "e2fsprogs",
    }
    missing = sorted(
        {pkg for tool, pkg in need.items() if not shutil.which(tool)}
        | {pkg for path, pkg in NEED_FILES.items() if not os.path.exists(path)}
    )
    if not missing:
        return
    log(f"installing host tools: {' '.join(missing)}")
    timeout = budget("XEN_TEST_APT_TIMEOUT")
    t = time.monotonic()
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    apt_log = out / "apt.log"
    try:
        # another apt-get on the machine (a concurrent `make deps`) holds dpkg's lock for a
        # while: wait for it instead of calling the lab unavailable
        lock_wait = ["-o", f"DPkg::Lock::Timeout={max(int(timeout) - 60, 30)}"]
        rc = run(["apt-get", *lock_wait, "update", "-q"], timeout, apt_log, env=env)
        rc = rc or run(
            ["apt-get", *lock_wait, "install", "-y", "-q", "--no-install-recommends", *missing],
            max(60, timeout - (time.monotonic() - t)),
            apt_log,
            env=env,
        )
    except (TimeoutError, OSError) as e:
        raise LabUnavailable(f"installing {' '.join(missing)} failed: {e}\n{tail(apt_log)}") from e
    if rc != 0:
        raise LabUnavailable(
            f"apt-get could not install {' '.join(missing)} (rc {rc}):\n{tail(apt_log)}"
        )
    still = [tool for tool in need if not shutil.which(tool)]
    still += [path for path in NEED_FILES if not os.path.exists(path)]
    if still:
        raise LabUnavailable(f"still missing after apt-get install: {' '.join(still)}")


def debian_mirror() -> str:
    if knob("XEN_TEST_MIRROR"):
        return knob("XEN_TEST_MIRROR")
    texts = []
    for path in [*sorted(glob.glob("/etc/apt/sources.list.d/*.sources")), "/etc/apt/sources.list"]:
        try:
            texts.append(Path(path).read_text())
        except OSError:
            pass
    for text in texts:
        # deb822 stanzas ("URIs: ... Suites: bookworm ...") and one-line "deb [opts] URI suite ..."
        for stanza in re.split(r"\n\s*\n", text):
            uri = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.*)$", stanza, re.M)
            if uri and suites and SUITE in suites[1].split() and "security" not in uri[1]:
                return uri[1]
        for m in re.finditer(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", text, re.M):
            if m[2] == SUITE and "security" not in m[1]:
                return m[1]
    raise LabUnavailable(f"no Debian {SUITE} mirror in the host's apt sources; set XEN_TEST_MIRROR")


# --- 2. the wheel --------------------------------------------------------------------
def start_wheel_build(dist: Path, out: Path) -> subprocess.Popen[bytes] | None:
    given = knob("XEN_TEST_WHEEL")
    if given:
        wheels = (
            sorted(glob.glob(os.path.join(given, "*.whl"))) if os.path.isdir(given) else [given]
        )
        if not wheels or not os.path.isfile(wheels[-1]):
            raise HarnessFailure(f"XEN_TEST_WHEEL={given}: no wheel there")
        shutil.copy2(wheels[-1], dist)
        log(f"using the given wheel {wheels[-1]}")
        return None
    if not shutil.which("maturin"):
        raise HarnessFailure("maturin is not installed: cannot build the project's wheel")
    log("building the wheel: maturin build --release (log: maturin.log)")
    env = dict(os.environ, CARGO_TERM_COLOR="never")
    # an own target directory: a concurrent `cargo`/`maturin develop` in the checkout cannot
    # pull the library out from under this build (kept between runs, so rebuilds are incremental)
    env.setdefault("CARGO_TARGET_DIR", str(Path(knob("XEN_LAB_DIR")) / "cargo-target"))
    cmd = ["maturin", "build", "--release", "--out", str(dist)]
    with open(out / "maturin.log", "ab") as f:
        f.write(f"+ {shlex.join(cmd)}\n".encode())
    proc = spawn(cmd, out / "maturin.log", cwd=REPO, env=env)
    proc.started = time.monotonic()  # type: ignore[attr-defined]

    def timed() -> None:
        proc.wait()
        TIMINGS["wheel_build"] = round(time.monotonic() - proc.started, 1)  # type: ignore[attr-defined]

    threading.Thread(target=timed, daemon=True).start()
    return proc


def finish_wheel_build(proc: subprocess.Popen[bytes] | None, dist: Path, out: Path) -> Path:
    if proc is not None:
        t = time.monotonic()
        try:
            left = budget("XEN_TEST_BUILD_TIMEOUT") - (time.monotonic() - proc.started)  # type: ignore[attr-defined]
            rc = wait(proc, max(1, left), "maturin build")
        except TimeoutError as e:
            raise HarnessFailure(f"{e}\n{tail(out / 'maturin.log')}") from e
        if time.monotonic() - t > 1:
            log(f"waited {time.monotonic() - t:.0f} s for maturin")
        if rc != 0:
            raise HarnessFailure(
                f"the project's wheel did not build (maturin rc {rc}); maturin.log:\n"
                f"{tail(out / 'maturin.log', 40)}"
            )
    wheels = sorted(dist.glob("*.whl"))
    if len(wheels) != 1:
        raise HarnessFailure(f"expected one wheel in {dist}, found {[w.name for w in wheels]}")
    log(f"wheel: {wheels[0].name}")
    return wheels[0]


# --- 3. the dom0 rootfs --------------------------------------------------------------
def build_rootfs(lab: Path, out: Path) -> None:
    rootfs, stamp = lab / "rootfs", lab / "rootfs.stamp"
    want = digest(ROOTFS_RECIPE)
    if (
        knob("XEN_TEST_REBUILD") != "1"
        and stamp.exists()
        and stamp.read_text().strip() == want
        and (rootfs / "boot/xen-4.17-amd64.gz").exists()
    ):
        log(f"rootfs: cached ({rootfs}, recipe {want})")
        return
    mirror = debian_mirror()
    new = lab / "rootfs.new"
    shutil.rmtree(new, ignore_errors=True)
    log(f"rootfs: debootstrap {SUITE} from {mirror} (log: debootstrap.log)")
    cmd = [
        "debootstrap",
        "--variant=minbase",
        "--include=" + ",".join(PACKAGES),
        SUITE,
        str(new),
        mirror,
    ]
    try:
        rc = run(cmd, budget("XEN_TEST_DEBOOTSTRAP_TIMEOUT"), out / "debootstrap.log")
    except TimeoutError as e:
        raise LabUnavailable(
            f"{e} (mirror {mirror} slow or unreachable?)\n{tail(out / 'debootstrap.log')}"
        ) from e
    if rc != 0 or not (new / "boot/xen-4.17-amd64.gz").exists():
        shutil.rmtree(new, ignore_errors=True)
        raise LabUnavailable(
            f"debootstrap failed (rc {rc}; mirror {mirror} unreachable or a package missing?):\n"
            f"{tail(out / 'debootstrap.log')}"
        )
    for deb in (new / "var/cache/apt/archives").glob("*.deb"):  # ~120 MB of downloads
        deb.unlink()
    stamp.unlink(missing_ok=True)
    shutil.rmtree(rootfs, ignore_errors=True)
    new.rename(rootfs)
    stamp.write_text(want + "\n")


# --- 4. the boot image -----------------------------------------------------------------
def cpio_newc(entries: list[tuple[str, int, bytes, int]]) -> bytes:
    """A 'newc' cpio archive (what the kernel unpacks as an initramfs).
    entries: (path, mode incl. file type, data, rdev as (major << 8 | minor))."""
    out = bytearray()
    for ino, (name, mode, data, rdev) in enumerate([*entries, ("TRAILER!!!", 0, b"", 0)], 1):
        nameb = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev >> 8, rdev & 0xFF, len(nameb), 0]
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + nameb
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def build_image(lab: Path, out: Path) -> dict[str, Path]:
    """Install lab/ into the rootfs, build the domU initramfs, make the ext4 image."""
    rootfs, img = lab / "rootfs", lab / "image"
    files = {name: img / name for name in ("xen", "vmlinuz", "initrd.img", "rootfs.img")}
    inputs = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(GUEST.iterdir())
        if p.is_file()
    }
    want = digest(
        {
            "rootfs": (lab / "rootfs.stamp").read_text().strip(),
            "guest": inputs,
            "code": inspect.getsource(build_image) + inspect.getsource(cpio_newc),
            "size": IMAGE_SIZE,
        }
    )
    stamp = img / "image.stamp"
    if (
        stamp.exists()
        and stamp.read_text().strip() == want
        and all(p.exists() for p in files.values())
    ):
        log(f"boot image: cached ({img}, recipe {want})")
        return files
    log("boot image: building")
    stamp.unlink(missing_ok=True)
    img.mkdir(exist_ok=True)
    kernels = sorted(
        rootfs.glob("boot/vmlinuz-*"),
        key=lambda p: [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", p.name)],
    )
    if not kernels:
        raise HarnessFailure(f"no kernel in {rootfs}/boot")
    kver = kernels[-1].name.removeprefix("vmlinuz-")
    labdir = rootfs / "xenvcpu-lab"
    shutil.rmtree(labdir, ignore_errors=True)
    labdir.mkdir()
    shutil.copy2(GUEST / "dom0-init.sh", labdir)
    (labdir / "dom0-init.sh").chmod(0o755)
    for cfg in sorted(GUEST.glob("*.cfg")):  # domu.cfg, domu-pvh.cfg, domu-hvm.cfg
        shutil.copy2(cfg, labdir)
    shutil.copy2(GUEST / "install_wheel.py", labdir)
    shutil.copy2(
        kernels[-1], labdir / "vmlinuz"
    )  # Debian's kernel doubles as the guests' kernel (PV, PVH and HVM)
    busybox = (rootfs / "bin/busybox").read_bytes()
    initrd = cpio_newc(
        [(d, 0o040755, b"", 0) for d in ("bin", "dev", "etc", "proc", "sbin", "sys", "tmp")]
        + [
            ("dev/console", 0o020600, b"", 5 << 8 | 1),
            ("bin/busybox", 0o100755, busybox, 0),
            ("init", 0o100755, (GUEST / "domu-init.sh").read_bytes(), 0),
        ]
    )
    (labdir / "domu-initrd.cpio.gz").write_bytes(gzip.compress(initrd, 9))
    (rootfs / "etc/hostname").write_text("xenvcpu-dom0\n")
    (rootfs / "etc/fstab").write_text("/dev/vda / ext4 rw,relatime 0 1\n")
    # the hypervisor comes from the rootfs, so it matches the tools (the host's apt may be newer)
    with gzip.open(rootfs / "boot/xen-4.17-amd64.gz") as src, open(files["xen"], "wb") as dst:
        shutil.copyfileobj(src, dst)
    shutil.copy2(kernels[-1], files["vmlinuz"])
    # Debian's MODULES=most initramfs carries virtio_pci, virtio_blk and ext4
    shutil.copy2(rootfs / f"boot/initrd.img-{kver}", files["initrd.img"])
    tmp = img / "rootfs.img.new"
    tmp.unlink(missing_ok=True)
    rc = run(
        [
            "mke2fs",
            "-q",
            "-t",
            "ext4",
            "-L",
            "xenvcpu-root",
            "-E",
            "root_owner=0:0",
            "-d",
            str(rootfs),
            str(tmp),
            IMAGE_SIZE,
        ],
        600,
        out / "image.log",
    )
    if rc != 0:
        raise HarnessFailure(f"mke2fs failed (rc {rc}):\n{tail(out / 'image.log')}")
    tmp.rename(files["rootfs.img"])
    stamp.write_text(want + "\n")
    return files


class LabLock:
    """One harness at a time builds the cache; runs themselves may overlap."""

    def __init__(self, path: Path, timeout: float):
        self.path, self.timeout = path, timeout

    def __enter__(self) -> LabLock:
        self.f = open(self.path, "w")
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise HarnessFailure(
                        f"{self.path} stayed locked for {self.timeout:.0f} s (another xen-test?)"
                    ) from None
                time.sleep(2)

    def __exit__(self, *exc: object) -> None:
        self.f.close()


# --- 5. boot and test ------------------------------------------------------------------
def qemu_command(files: dict[str, Path], share: Path) -> list[str]:
    xen_args = (
        f"dom0_mem={knob('XEN_TEST_DOM0_MEM')},max:{knob('XEN_TEST_DOM0_MEM')} "
        f"dom0_max_vcpus={knob('XEN_TEST_DOM0_VCPUS')} console=com1 com1=115200,8n1 "
        "loglvl=all guest_loglvl=all noreboot console_timestamps=boot bootscrub=0"
    )
    if knob("XEN_TEST_XEN_ARGS"):
        xen_args += " " + knob("XEN_TEST_XEN_ARGS")
    # qemu's multiboot -initrd separates modules with ',': the dom0 command line must have none
    linux_args = "root=/dev/vda rw console=hvc0 earlyprintk=xen init=/xenvcpu-lab/dom0-init.sh"
    assert "," not in linux_args and "," not in str(files["vmlinuz"]) + str(files["initrd.img"])
    return [
        knob("XEN_TEST_QEMU"),
        "-accel",
        f"tcg,thread={knob('XEN_TEST_TCG_THREAD')}",
        "-machine",
        "pc",
        "-cpu",
        knob("XEN_TEST_CPU"),
        "-smp",
        knob("XEN_TEST_SMP"),
        "-m",
        knob("XEN_TEST_MEM"),
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
        "-kernel",
        str(files["xen"]),
        "-append",
        xen_args,
        "-initrd",
        f"{files['vmlinuz']} {linux_args},{files['initrd.img']}",
        # snapshot=on: dom0's writes never reach the cached image
        "-drive",
        f"file={files['rootfs.img']},if=virtio,format=raw,cache=unsafe,snapshot=on",
        "-virtfs",
        f"local,path={REPO},mount_tag=host,security_model=none,readonly=on",
        "-virtfs",
        f"local,path={share},mount_tag=out,security_model=none",
    ]


def build_c_baselines(share: Path) -> None:
    """Compile the libxenctrl baseline of benches/xen on the host (against Debian's
    libxen-dev, the same Xen 4.17 ABI as dom0's libxenctrl) into the share: dom0 has no
    compiler. A failure is logged; the benchmark that needs it then fails saying so."""
    src = REPO / "benches" / "xen" / "xc_loop.c"
    if not src.exists():
        return
    (share / "bin").mkdir(exist_ok=True)
    cmd = [
        "cc",
        "-O2",
        "-Wall",
        "-Wextra",
        "-o",
        str(share / "bin" / "xc_loop"),
        str(src),
        "-lxenctrl",
    ]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        log(f"could not compile {src.name}: {e}")
        return
    if r.returncode != 0:
        log(
            f"could not compile {src.name} (needs libxen-dev: make deps): {r.stderr.strip()[-400:]}"
        )


GUEST_KINDS = ("pv", "pvh", "hvm")  # dom0-init.sh names them domu, domu-pvh, domu-hvm


def guests() -> list[str]:
    """The guests dom0 starts (XEN_TEST_GUESTS, or none with XEN_TEST_NO_DOMU=1), in order."""
    if os.environ.get("XEN_TEST_NO_DOMU") == "1":
        return []
    text = os.environ.get("XEN_TEST_GUESTS") or KNOBS["XEN_TEST_GUESTS"][0]
    kinds = text.replace(",", " ").split()
    if kinds == ["none"]:
        return []
    bad = [g for g in kinds if g not in GUEST_KINDS]
    if bad:
        raise SystemExit(f"xen-test: XEN_TEST_GUESTS: unknown {bad}; use {','.join(GUEST_KINDS)}")
    return [g for g in GUEST_KINDS if g in kinds]


def write_lab_env(share: Path) -> None:
    # dom0 runs pytest in /mnt/host, the checkout
    args = shlex.split(knob("XEN_TEST_PATHS")) + shlex.split(knob("XEN_TEST_ARGS"))
    env = {
        "XENVCPU_PYTEST_ARGS": shlex.join(args),
        "XENVCPU_TEST_TIMEOUT": str(knob_int("XEN_TEST_TEST_TIMEOUT")),
        "XENVCPU_SHELL": knob("XEN_TEST_SHELL"),
        "XENVCPU_GUESTS": " ".join(guests()),
        "XENVCPU_GUEST_TIMEOUT": str(knob_int("XEN_TEST_GUEST_TIMEOUT")),
    }
    lines = [f"{k}={shlex.quote(v)}\n" for k, v in env.items()]
    for pair in shlex.split(knob("XEN_TEST_ENV")):
        name, sep, value = pair.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise SystemExit(f"xen-test: XEN_TEST_ENV: {pair!r} is not NAME=VALUE")
        lines.append(f"export {name}={shlex.quote(value)}\n")
    (share / "lab.env").write_text("".join(lines))


def boot_interactive(cmd: list[str]) -> int:
    log(
        "XEN_TEST_SHELL=1: dom0 gives you a root shell on this terminal; `exit` powers off "
        "(Ctrl-A X kills qemu)"
    )
    cmd = [c if c != "stdio" else "mon:stdio" for c in cmd]
    cmd[cmd.index("-monitor") + 1] = "none"
    return subprocess.call(cmd)


def boot(cmd: list[str], out: Path) -> dict[str, Any]:
    boot_timeout = budget("XEN_TEST_BOOT_TIMEOUT")
    # pytest's own timeout in dom0 is XEN_TEST_TEST_TIMEOUT; give dom0 time to report and power off
    total_timeout = min(
        boot_timeout + knob_int("XEN_TEST_TEST_TIMEOUT") + 120, budget("XEN_TEST_DEADLINE")
    )
    verbose = knob("XEN_TEST_VERBOSE") == "1"
    (out / "qemu-cmd.txt").write_text(shlex.join(cmd) + "\n")
    log(f"booting Xen + dom0 in qemu (TCG); serial log: {out / 'serial.log'}")
    seen: dict[str, float] = {}
    state: dict[str, Any] = {"killed": None, "hwm_kib": 0}
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    CHILDREN.append(proc)

    def kill(why: str) -> None:
        if state["killed"] is None:
            state["killed"] = why
            log(f"killing qemu: {why}")
        kill_group(proc)

    def watchdog() -> None:
        while proc.poll() is None:
            now = time.monotonic() - t0
            try:
                with open(f"/proc/{proc.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            state["hwm_kib"] = max(state["hwm_kib"], int(line.split()[1]))
            except OSError:
                pass
            if now > total_timeout:
                kill(f"overall timeout {total_timeout} s")
            elif "pytest_start" not in seen and now > boot_timeout:
                kill(f"dom0 did not start the tests within {boot_timeout} s")
            elif "lab_done" in seen and now > seen["lab_done"] + 60:
                kill("dom0 finished but did not power off within 60 s")
            elif "fatal" in seen and now > seen["fatal"] + 5:
                kill("Xen or dom0 crashed")
            time.sleep(1)

    threading.Thread(target=watchdog, daemon=True).start()
    in_pytest = False
    with open(out / "serial.log", "wb") as raw, open(out / "serial-ts.log", "w") as ts:
        assert proc.stdout is not None
        for line in proc.stdout:
            now = time.monotonic() - t0
            raw.write(line)
            text = line.decode("utf-8", "replace").rstrip("\r\n").replace("\r", "")
            ts.write(f"[{now:8.2f}] {text}\n")
            ts.flush()
            for name, rx in MARKS.items():
                if name not in seen and re.search(rx, text):
                    seen[name] = round(now, 2)
                    log(f"{name} at {now:.1f} s: {text[:110]}")
            # a guest's console that dom0 quotes ("[guest NAME] ...") is not Xen or dom0 crashing
            if "fatal" not in seen and not text.startswith("[guest ") and re.search(FATAL, text):
                seen["fatal"] = round(now, 2)
                log(f"FATAL at {now:.1f} s: {text[:110]}")
            if name_match(text, "pytest_done"):
                in_pytest = False
            if verbose or in_pytest:
                print(f"  | {text}", flush=True)
            if name_match(text, "pytest_start"):
                in_pytest = True
    proc.wait()
    wall = round(time.monotonic() - t0, 1)
    return {
        "wall_s": wall,
        "marks_s": seen,
        "qemu_rc": proc.returncode,
        "killed": state["killed"],
        "qemu_peak_rss_mib": state["hwm_kib"] // 1024,
    }


def name_match(text: str, mark: str) -> bool:
    return re.search(MARKS[mark], text) is not None


# --- 6. results ------------------------------------------------------------------------
def first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""


def junit_counts(path: Path) -> dict[str, Any]:
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    counts: dict[str, Any] = {
        k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")
    }
    bad = []
    for case in root.iter("testcase"):
        for kind in ("failure", "error"):
            el = case.find(kind)
            if el is not None:
                bad.append(
                    f"{kind.upper()}: {case.get('classname')}::{case.get('name')}: "
                    f"{first_line(el.get('message') or '')[:160]}"
                )
    counts["problems"] = bad
    return counts


def synthetic_junit(path: Path, kind: str, message: str) -> None:
    """A one-case JUnit file for runs that never reached pytest: kind is 'skipped' or 'error'."""
    n_skip, n_err = (1, 0) if kind == "skipped" else (0, 1)
    path.write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<testsuites>'
        f'<testsuite name="xen" tests="1" skipped="{n_skip}" errors="{n_err}" failures="0">'
        f'<testcase classname="tests.xen" name="xen_lab"><{kind} message={quoteattr(message)}/>'
        "</testcase></testsuite></testsuites>\n"
    )


def prune_runs(runs: Path, keep: int) -> None:
    """Keep the newest `keep` run directories under $XEN_LAB_DIR/runs."""
    try:
        old = sorted((p for p in runs.iterdir() if p.is_dir()), key=lambda p: p.name)[:-keep]
    except OSError:
        return
    for p in old:
        shutil.rmtree(p, ignore_errors=True)


def main() -> int:
    lab = Path(knob("XEN_LAB_DIR"))
    out = Path(knob("XEN_TEST_OUT") or lab / "runs" / time.strftime("%Y%m%d-%H%M%S", time.gmtime()))
    share, dist = out / "share", out / "share" / "dist"
    shutil.rmtree(share, ignore_errors=True)
    dist.mkdir(parents=True)
    try:
        last = lab / "last"
        last.unlink(missing_ok=True)
        last.symlink_to(out)
    except OSError:
        pass
    log(f"run directory: {out}")
    prune_runs(lab / "runs", keep=20)
    summary: dict[str, Any] = {
        "out": str(out),
        "timings_s": TIMINGS,
        "started_utc": time.strftime("%FT%TZ", time.gmtime()),
        "settings": {
            "guests": guests(),
            "cpu": knob("XEN_TEST_CPU"),
            "tcg_thread": knob("XEN_TEST_TCG_THREAD"),
        },
    }
    status, reason, rc = "failed", "", EXIT_FAIL
    wheel_proc = None
    try:
        t = time.monotonic()
        preflight(lab, knob("XEN_TEST_MEM"))
        host_tools(out)
        TIMINGS["host_tools"] = round(time.monotonic() - t, 1)
        wheel_proc = start_wheel_build(
            dist, out
        )  # CPU-bound; overlaps the network-bound debootstrap
        with LabLock(lab / "lock", budget("XEN_TEST_DEADLINE")):
            t = time.monotonic()
            build_rootfs(lab, out)
            TIMINGS["rootfs"] = round(time.monotonic() - t, 1)
            t = time.monotonic()
            files = build_image(lab, out)
            TIMINGS["image"] = round(time.monotonic() - t, 1)
        t = time.monotonic()
        finish_wheel_build(wheel_proc, dist, out)
        TIMINGS["wheel_wait_after_image"] = round(time.monotonic() - t, 1)
        TIMINGS["wheel_ready_since_start"] = round(time.monotonic() - T0, 1)
        build_c_baselines(share)
        write_lab_env(share)
        cmd = qemu_command(files, share)
        if knob("XEN_TEST_SHELL") == "1":
            return boot_interactive(cmd)
        t = time.monotonic()
        result = boot(cmd, out)
        TIMINGS["boot_and_tests"] = round(time.monotonic() - t, 1)
        summary["qemu"] = result
        marks = result["marks_s"]
        if "xen_banner" not in marks:
            raise LabUnavailable(
                f"qemu did not boot Xen (rc {result['qemu_rc']}, {result['killed'] or 'exited'}):\n"
                f"{tail(out / 'serial.log')}"
            )
        for name in ("pytest.log", "pytest.rc", "junit.xml", "lab.log"):
            if (share / name).exists():
                shutil.copy2(share / name, out / name)
        for path in [*share.glob("*-console.log"), *share.glob("qemu-dm-*.log")]:
            shutil.copy2(path, out / path.name)
        junit = out / "junit.xml"
        if (share / "pytest.rc").exists() and junit.exists():
            pytest_rc = int((share / "pytest.rc").read_text().strip() or 99)
            counts = junit_counts(junit)
            summary["pytest_rc"], summary["tests"] = pytest_rc, counts
            ok = (
                pytest_rc == 0
                and counts["failures"] == 0
                and counts["errors"] == 0
                and counts["tests"] > 0
            )
            status, rc = ("passed", EXIT_PASS) if ok else ("failed", EXIT_FAIL)
            reason = f"pytest rc {pytest_rc}"
        elif (share / "pytest.rc").exists():
            pytest_rc_text = (share / "pytest.rc").read_text().strip()
            if pytest_rc_text in ("124", "137"):  # coreutils timeout: TERM, then KILL
                reason = (
                    f"pytest timed out in dom0 (XEN_TEST_TEST_TIMEOUT="
                    f"{knob('XEN_TEST_TEST_TIMEOUT')} s): see pytest.log"
                )
            else:
                reason = (
                    f"pytest exited {pytest_rc_text} without writing junit.xml "
                    "(usage or collection error?): see pytest.log"
                )
            synthetic_junit(junit, "error", reason)
        else:
            where = max(marks, key=marks.get) if marks else "nothing"
            reason = (
                f"the run did not finish (last milestone: {where}; "
                f"{result['killed'] or 'qemu exited rc {}'.format(result['qemu_rc'])})"
            )
            synthetic_junit(junit, "error", reason)
    except LabUnavailable as e:
        status, reason, rc = "unavailable", str(e), EXIT_UNAVAILABLE
        loud(
            f"XEN LAB UNAVAILABLE -- the xen tests are SKIPPED (exit {EXIT_UNAVAILABLE}):\n{reason}"
        )
        synthetic_junit(
            out / "junit.xml", "skipped", "Xen lab unavailable: " + reason.splitlines()[0]
        )
    except (HarnessFailure, TimeoutError) as e:
        status, reason, rc = "failed", str(e), EXIT_FAIL
        loud(f"XEN TEST FAILED before the tests ran:\n{reason}")
        synthetic_junit(out / "junit.xml", "error", reason.splitlines()[0])
    finally:
        for child in CHILDREN:
            kill_group(child)
    TIMINGS["total"] = round(time.monotonic() - T0, 1)
    summary.update(status=status, reason=reason, exit_code=rc)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    if knob("XEN_TEST_JUNIT"):
        Path(knob("XEN_TEST_JUNIT")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(out / "junit.xml", knob("XEN_TEST_JUNIT"))
    print_summary(summary, out)
    return rc


def print_summary(summary: dict[str, Any], out: Path) -> None:
    print("\n===== xen-test summary =====")
    status = summary["status"].upper()
    print(f"status: {status}  (exit {summary['exit_code']})  {first_line(summary['reason'])}")
    tests = summary.get("tests")
    if tests:
        print(
            f"tests: {tests['tests']} run, {tests['failures']} failed, {tests['errors']} errors, "
            f"{tests['skipped']} skipped"
        )
        for p in tests["problems"]:
            print("  " + p)
    print("stage times (s): " + ", ".join(f"{k}={v}" for k, v in summary["timings_s"].items()))
    q = summary.get("qemu")
    if q:
        print(
            "boot milestones (s after qemu start): "
            + ", ".join(f"{k}={v}" for k, v in q["marks_s"].items())
        )
        print(f"qemu wall {q['wall_s']} s, peak RSS {q['qemu_peak_rss_mib']} MiB")
    print(f"results: {out}/ (junit.xml, pytest.log, serial-ts.log, summary.json)")
    if tests:
        bad = tests["failures"] + tests["errors"]
        passed = tests["tests"] - bad - tests["skipped"]
        print(f"xen-test: {passed} passed, {bad} failed, {tests['skipped']} skipped")


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        for name, (default, meaning) in KNOBS.items():
            print(f"  {name:30} {meaning} [{default or 'unset'}]")
        sys.exit(0)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    sys.exit(main())
