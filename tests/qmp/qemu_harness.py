"""Real QEMU for the QMP tests: QEMU processes, and a small Linux guest for CPU hot-remove.

* :class:`Qemu` runs ``qemu-system-x86_64`` (TCG, ``-display none -nodefaults``) with its
  QMP monitor on a unix socket (``-qmp unix:PATH,server=on,wait=off``) and the serial
  console in a file.  Without a kernel it is started paused (``-S``): QEMU still answers
  QMP and hot-adds CPUs, which is all most tests need, and starts in about 0.05 s.
* :func:`prepare_guest` makes a Linux guest for the tests that remove CPUs (QEMU only
  completes ``device_del`` of a CPU when the guest OS ejects it): Debian's kernel and
  busybox-static are fetched with ``apt-get download`` (never installed on the host), the
  kernel (``boot/vmlinuz-*``) and ``bin/busybox`` are pulled out of the packages with
  ``dpkg-deb --fsys-tarfile``, and a newc initramfs is built here in Python around the
  :data:`GUEST_INIT` script.  Everything is cached in ``$XENVCPU_QEMU_GUEST_CACHE``
  (default ``/var/tmp/xenvcpu-qemu-guest``; ``-<uid>`` appended when not root) and reused
  while the package versions and the init script are unchanged.  From a fresh machine
  this takes about 10 s (a 70 MB download); with the cache, nothing.

When QEMU or the packages cannot be had, :class:`Unavailable` says exactly what is
missing and how to get it; the fixtures turn it into a skip, or into a failure when
``XENVCPU_REQUIRE_QEMU=1``.

Manual use::

    python tests/qmp/qemu_harness.py guest     # boots the guest, prints its QMP socket
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

QEMU = "qemu-system-x86_64"
DEFAULT_CACHE = Path(
    os.environ.get(
        "XENVCPU_QEMU_GUEST_CACHE",
        "/var/tmp/xenvcpu-qemu-guest"
        if os.geteuid() == 0
        else f"/var/tmp/xenvcpu-qemu-guest-{os.geteuid()}",
    )
)
#: The Debian packages the guest is made of (the kernel is linux-image-amd64's dependency).
KERNEL_META = "linux-image-amd64"
BUSYBOX = "busybox-static"
#: Seconds for the whole download + unpack (apt-get, dpkg-deb), and for each apt step.
PREPARE_TIMEOUT = 300.0
#: Marker lines the guest writes on its serial console.
MARK = "XENVCPU-GUEST:"

#: The guest's /init: mount the kernel file systems, then every 0.2 s bring newly
#: hot-plugged CPUs online (no udev here) and print the CPU masks whenever they change.
GUEST_INIT = r"""#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox --install -s /bin
cpus=/sys/devices/system/cpu
seen=" "
for d in $cpus/cpu[0-9]*; do seen="$seen${d##*/cpu} "; done
read -r online < $cpus/online
read -r present < $cpus/present
echo "XENVCPU-GUEST: up online=$online present=$present"
last=""
while :; do
  for d in $cpus/cpu[0-9]*; do
    n=${d##*/cpu}
    case "$seen" in *" $n "*) continue ;; esac
    seen="$seen$n "
    [ -e "$d/online" ] && echo 1 > "$d/online" 2>/dev/null
  done
  read -r online < $cpus/online
  read -r present < $cpus/present
  now="online=$online present=$present"
  if [ "$now" != "$last" ]; then echo "XENVCPU-GUEST: $now"; last=$now; fi
  sleep 0.2
done
"""
#: The kernel command line: serial console, quiet enough to boot fast, panic = exit.
GUEST_CMDLINE = "console=ttyS0 loglevel=4 panic=-1"


class Unavailable(Exception):
    """QEMU or the guest's packages cannot be had here (the message says what and how)."""


def require_qemu() -> str:
    found = shutil.which(QEMU)
    if found is None:
        raise Unavailable(
            f"{QEMU} not found: install Debian's qemu-system-x86 (`make deps` does it as "
            "root; or `apt-get install qemu-system-x86`)"
        )
    return found


# ------------------------------------------------------------------------- the guest


@dataclass(frozen=True)
class GuestFiles:
    kernel: Path
    initrd: Path
    #: e.g. "linux-image-6.1.0-57-amd64 6.1.192-3, busybox-static 1:1.35.0-4+deb12u1+b1"
    description: str


def cpio_newc(entries: list[tuple[str, int, bytes, int]]) -> bytes:
    """A 'newc' cpio archive (what the kernel unpacks as an initramfs), as
    tests/xen/harness.py builds it.  entries: (path, mode with file type, data, rdev)."""
    out = bytearray()
    for ino, (name, mode, data, rdev) in enumerate([*entries, ("TRAILER!!!", 0, b"", 0)], 1):
        nameb = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev >> 8, rdev & 0xFF, len(nameb), 0]
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + nameb
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def build_initrd(busybox: bytes) -> bytes:
    dirs = [(d, 0o040755, b"", 0) for d in ("bin", "dev", "proc", "sys", "tmp")]
    return gzip.compress(
        cpio_newc(
            [
                *dirs,
                ("dev/console", 0o020600, b"", 5 << 8 | 1),
                ("bin/busybox", 0o100755, busybox, 0),
                ("init", 0o100755, GUEST_INIT.encode(), 0),
            ]
        ),
        6,
    )


def _run(cmd: list[str], timeout: float, cwd: Path | None = None) -> str:
    """Run a command; Unavailable (with its output) when it fails or hangs."""
    try:
        done = subprocess.run(
            cmd,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise Unavailable(
            f"{cmd[0]} not found (needed to fetch the guest's Debian packages)"
        ) from None
    except subprocess.TimeoutExpired:
        raise Unavailable(f"`{' '.join(cmd)}` did not finish within {timeout:g} s") from None
    if done.returncode != 0:
        raise Unavailable(
            f"`{' '.join(cmd)}` failed (exit {done.returncode}): {done.stdout.strip()[-600:]}"
        )
    return done.stdout


def _apt(cmd: list[str], deadline: float, cwd: Path | None = None) -> str:
    """An apt command; on a fresh machine (no package lists) run `apt-get update` once."""
    try:
        return _run(cmd, max(1.0, deadline - time.monotonic()), cwd)
    except Unavailable as first:
        if os.geteuid() != 0:
            raise
        try:
            _run(["apt-get", "update", "-q"], max(1.0, deadline - time.monotonic()))
        except Unavailable as update:
            raise Unavailable(f"{first}; then {update}") from None
        return _run(cmd, max(1.0, deadline - time.monotonic()), cwd)


def _kernel_package(deadline: float) -> str:
    out = _apt(["apt-cache", "depends", KERNEL_META], deadline)
    found = re.search(r"Depends:\s*(linux-image-\S+)", out)
    if not found:
        raise Unavailable(f"apt-cache depends {KERNEL_META} names no kernel package:\n{out}")
    return found[1]


def _version(name: str, deadline: float) -> str:
    out = _apt(["apt-cache", "policy", name], deadline)
    found = re.search(r"Candidate:\s*(\S+)", out)
    if not found or found[1] == "(none)":
        raise Unavailable(f"no installable version of {name} in the apt sources:\n{out}")
    return found[1]


def _extract(deb: Path, pattern: str, dest: Path, deadline: float) -> None:
    """Copy the one member of ``deb`` matching ``pattern`` to ``dest``."""
    proc = subprocess.Popen(
        ["dpkg-deb", "--fsys-tarfile", str(deb)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                if time.monotonic() > deadline:
                    raise Unavailable(f"unpacking {deb.name} took too long")
                if member.isfile() and re.fullmatch(pattern, member.name):
                    src = tar.extractfile(member)
                    assert src is not None
                    tmp = dest.with_suffix(".tmp")
                    with open(tmp, "wb") as out:
                        shutil.copyfileobj(src, out)
                    tmp.rename(dest)
                    return
    finally:
        proc.stdout.close()
        proc.kill()
        proc.wait()
    raise Unavailable(f"{deb.name} has no file matching {pattern}")


def _has_pvh_entry(elf: bytes) -> bool:
    """Whether an x86-64 ELF kernel has the Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)."""
    if elf[:5] != b"\x7fELF\x02":
        return False
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        p_type, _flags, offset, _va, _pa, filesz = struct.unpack_from(
            "<IIQQQQ", elf, phoff + i * phentsize
        )
        if p_type != 4:  # PT_NOTE
            continue
        pos, end = offset, offset + filesz
        while pos + 12 <= end:
            namesz, descsz, note_type = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12 : pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and note_type == 18:
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def pvh_kernel(bzimage: Path) -> Path | None:
    """The uncompressed ``vmlinux`` inside a bzImage, when it can boot through PVH.

    QEMU boots such an ELF kernel directly at its PVH entry: under TCG that takes the
    guest to /init in about 3.5 s instead of 10 s, the XZ decompression of the bzImage
    being the difference.  None when the payload is not XZ or has no PVH entry.
    """
    data = bzimage.read_bytes()
    start = data.find(b"\xfd7zXZ\x00")
    if start < 0:
        return None
    try:
        elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[start:])
    except lzma.LZMAError:
        return None
    if not _has_pvh_entry(elf):
        return None
    out = bzimage.with_name(bzimage.name.replace("vmlinuz", "vmlinux", 1))
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(elf)
    tmp.rename(out)
    return out


def _locked(cache: Path, timeout: float) -> int:
    fd = os.open(cache / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    end = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > end:
                os.close(fd)
                raise Unavailable(f"{cache}/.lock held by another run for {timeout:g} s") from None
            time.sleep(0.2)


def prepare_guest(cache: Path = DEFAULT_CACHE, timeout: float = PREPARE_TIMEOUT) -> GuestFiles:
    """The guest's kernel and initramfs in ``cache``, fetched and built when missing."""
    try:
        return _prepare_guest(cache, timeout)
    except Unavailable as exc:
        raise Unavailable(
            f"cannot fetch Debian's {KERNEL_META} and {BUSYBOX} into {cache}: {exc}. The "
            "guest needs apt sources that reach a Debian mirror (it is fetched once, then "
            "cached; XENVCPU_QEMU_GUEST_CACHE picks another cache directory)"
        ) from None


def _prepare_guest(cache: Path, timeout: float) -> GuestFiles:
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise Unavailable(
            "apt-get/dpkg-deb not found: the guest kernel comes from Debian's "
            f"{KERNEL_META} package (a Debian-based host is needed)"
        )
    deadline = time.monotonic() + timeout
    cache.mkdir(parents=True, exist_ok=True)
    lock = _locked(cache, timeout)
    try:
        stamp = cache / "guest.json"
        initrd_digest = hashlib.sha256(GUEST_INIT.encode()).hexdigest()[:16]
        if stamp.exists():
            # The cache is used as it is; delete guest.json to fetch the newest kernel.
            known = json.loads(stamp.read_text())
            files = GuestFiles(
                cache / known["kernel"], cache / f"initrd-{initrd_digest}.gz", known["what"]
            )
            if files.kernel.exists() and (cache / "busybox").exists():
                if not files.initrd.exists():
                    files.initrd.write_bytes(build_initrd((cache / "busybox").read_bytes()))
                return files
        package = _kernel_package(deadline)
        what = f"{package} {_version(package, deadline)}, {BUSYBOX} {_version(BUSYBOX, deadline)}"
        debs = Path(tempfile.mkdtemp(prefix="debs-", dir=cache))
        try:
            _apt(["apt-get", "download", "-q", package, BUSYBOX], deadline, cwd=debs)
            kernel_deb = next(debs.glob(f"{package}_*.deb"))
            busybox_deb = next(debs.glob(f"{BUSYBOX}_*.deb"))
            kernel = f"vmlinuz-{package.removeprefix('linux-image-')}"
            _extract(kernel_deb, r"\./boot/vmlinuz-.*", cache / kernel, deadline)
            _extract(busybox_deb, r"\./bin/busybox", cache / "busybox", deadline)
        finally:
            shutil.rmtree(debs, ignore_errors=True)
        vmlinux = pvh_kernel(cache / kernel)
        if vmlinux is not None:
            kernel = vmlinux.name
        initrd = cache / f"initrd-{initrd_digest}.gz"
        initrd.write_bytes(build_initrd((cache / "busybox").read_bytes()))
        stamp.write_text(json.dumps({"kernel": kernel, "what": what}) + "\n")
        return GuestFiles(cache / kernel, initrd, what)
    finally:
        os.close(lock)


# ------------------------------------------------------------------------------ QEMU


class Qemu:
    """One qemu-system-x86_64 process with QMP on ``self.qmp_path``.

    Args:
        args: machine arguments, e.g. ``["-machine", "pc", "-smp", "1,maxcpus=4"]``.
        workdir: where the socket, console and log files go.
        guest: boot this kernel + initramfs; without it QEMU is started paused (-S).
        accel: the TCG accelerator options.  Multi-threaded TCG is the default: QEMU 7.2
            aborts on CPU hot-remove with single-threaded TCG (see docs/qmp.md).
    """

    def __init__(
        self,
        args: list[str],
        workdir: Path,
        *,
        guest: GuestFiles | None = None,
        accel: str = "tcg,thread=multi",
        memory: str = "256",
    ) -> None:
        self.binary = require_qemu()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.qmp_path = str(workdir / "qmp.sock")
        self.console_path = workdir / "console.log"
        self.log_path = workdir / "qemu.log"
        cmd = [
            self.binary,
            "-accel",
            accel,
            "-m",
            memory,
            "-display",
            "none",
            "-nodefaults",
            "-no-reboot",
            "-qmp",
            f"unix:{self.qmp_path},server=on,wait=off",
            "-serial",
            f"file:{self.console_path}",
            *args,
        ]
        if guest is None:
            cmd.append("-S")
        else:
            cmd += ["-kernel", str(guest.kernel), "-initrd", str(guest.initrd)]
            cmd += ["-append", GUEST_CMDLINE]
        self.cmd = cmd
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self, timeout: float = 10.0) -> Qemu:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started = time.monotonic()
        deadline = self.started + timeout
        # The socket file appears at bind(), a moment before QEMU listens: wait until a
        # connection is accepted (QEMU then sees a client come and go, which is harmless).
        while not self._listening():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{QEMU} exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{QEMU} did not listen on QMP within {timeout:g} s")
            time.sleep(0.01)
        return self

    def _listening(self) -> bool:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(self.qmp_path)
            return True
        except OSError:
            return False
        finally:
            probe.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def console(self) -> str:
        try:
            return self.console_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_console(self, pattern: str, timeout: float, after: int = 0) -> re.Match[str]:
        """The first match of ``pattern`` in the console past offset ``after``."""
        regex = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while True:
            found = regex.search(self.console(), after)
            if found:
                return found
            if not self.alive():
                raise RuntimeError(
                    f"QEMU exited ({self.proc.returncode if self.proc else '?'}) before the "
                    f"console showed {pattern!r}:\n{self.console()[-2000:]}\n{self.log()}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the console did not show {pattern!r} within {timeout:g} s:\n"
                    f"{self.console()[-2000:]}"
                )
            time.sleep(0.05)

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL and reap (idempotent)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


def main(argv: list[str]) -> int:
    if argv[1:] != ["guest"]:
        print(__doc__)
        return 2
    files = prepare_guest()
    qemu = Qemu(["-machine", "pc", "-smp", "1,maxcpus=4"], Path(tempfile.mkdtemp()), guest=files)
    qemu.start()
    t0 = time.monotonic()
    qemu.wait_console(f"^{MARK} up", 120)
    print(f"booted {files.description} in {time.monotonic() - t0:.1f} s")
    print(f"QMP: {qemu.qmp_path}  console: {qemu.console_path}  (Ctrl-C stops)")
    try:
        while qemu.alive():
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        qemu.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
