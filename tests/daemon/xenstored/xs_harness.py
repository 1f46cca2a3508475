"""Run Debian's real oxenstored (Xen 4.17) as a plain process on a host without Xen.

The xenstore client tests talk to this daemon over its unix socket.  How:

1. ``apt-get download`` oxenstored's package (xen-utils-4.17) and the libraries it
   links (libxenmisc4.17 = libxenctrl/libxenguest, libxenevtchn1, ...), ``dpkg -x`` them
   into a cache (``$XENVCPU_XS_CACHE``, default ``/var/tmp/xenvcpu-xs``, or
   ``/var/tmp/xenvcpu-xs-<uid>`` when not root).  Nothing is installed on the host.
   When the download fails and we are root, ``apt-get update`` is run once and the
   download retried.  From a fresh machine this step takes about 5 s; later runs reuse
   the cache and the daemon is up in about 0.1 s.
2. Build ``nohv_shim.c`` (beside this file) with gcc into the cache: an LD_PRELOAD shim
   that fakes the few libxenctrl/libxenevtchn calls oxenstored makes at start-up and
   clamps its RLIMIT_NOFILE request (see the comment at the top of the C file).
3. oxenstored's socket path is compiled in (``/var/run/xenstored/socket``).  So it runs
   under ``unshare -m`` (``unshare -r -m`` when not root) where a private tmpfs covers
   ``/run`` and a private temporary directory is bind-mounted on ``/run/xenstored``;
   the socket appears as ``<tmpdir>/socket`` outside, and the host's ``/run`` is never
   touched.

If the packages cannot be obtained, :func:`prepare` raises :class:`Unavailable` (the
fixture turns it into ``pytest.skip`` with the exact reason, or into a failure when
``XENVCPU_REQUIRE_XENSTORED=1``).  Everything else that goes wrong is an error.

Manual use::

    python tests/daemon/xenstored/xs_harness.py run    # prints XENSTORED_PATH=..., Ctrl-C stops
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHIM_SOURCE = HERE / "nohv_shim.c"
DEFAULT_CACHE = Path(
    os.environ.get(
        "XENVCPU_XS_CACHE",
        "/var/tmp/xenvcpu-xs" if os.geteuid() == 0 else f"/var/tmp/xenvcpu-xs-{os.geteuid()}",
    )
)

#: oxenstored and exactly the shared libraries it needs (checked with ldd).
PACKAGES = [
    "xen-utils-4.17",
    "libxenmisc4.17",
    "libxenevtchn1",
    "libxentoollog1",
    "libxentoolcore1",
    "libxencall1",
    "libxengnttab1",
    "libxenforeignmemory1",
    "libxendevicemodel1",
]
OXENSTORED_REL = Path("usr/lib/xen-4.17/bin/oxenstored")


class Unavailable(Exception):
    """oxenstored cannot be obtained on this machine (the reason is the message)."""


@dataclass
class Prepared:
    oxenstored: Path
    lib_path: str
    shim: Path


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False
    )


def _download(cache: Path) -> None:
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise Unavailable("apt-get/dpkg not found: cannot download Debian's xen-utils-4.17")
    debs = Path(tempfile.mkdtemp(prefix="debs-", dir=cache))
    try:
        result = _run(["apt-get", "download", *PACKAGES], cwd=debs)
        if result.returncode != 0 and os.geteuid() == 0:
            # A fresh machine may have no package lists yet.
            _run(["apt-get", "update"])
            result = _run(["apt-get", "download", *PACKAGES], cwd=debs)
        if result.returncode != 0:
            raise Unavailable(
                "apt-get download " + " ".join(PACKAGES) + " failed "
                f"(exit {result.returncode}): {result.stdout.strip()[-800:]}"
            )
        root = cache / "root.new"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        for deb in sorted(debs.glob("*.deb")):
            out = _run(["dpkg", "-x", str(deb), str(root)])
            if out.returncode != 0:
                raise RuntimeError(f"dpkg -x {deb.name} failed: {out.stdout}")
        if not (root / OXENSTORED_REL).is_file():
            raise RuntimeError(f"{OXENSTORED_REL} missing after unpacking {PACKAGES}")
        shutil.rmtree(cache / "root", ignore_errors=True)
        root.rename(cache / "root")
    finally:
        shutil.rmtree(debs, ignore_errors=True)


def _build_shim(cache: Path) -> Path:
    digest = hashlib.sha256(SHIM_SOURCE.read_bytes()).hexdigest()[:16]
    shim = cache / f"nohv_shim-{digest}.so"
    if shim.is_file():
        return shim
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise RuntimeError(f"gcc not found: it is needed to build {SHIM_SOURCE}")
    tmp = shim.with_suffix(f".{os.getpid()}.tmp")
    cmd = [gcc, "-shared", "-fPIC", "-O2", "-Wall", "-o", str(tmp), str(SHIM_SOURCE), "-ldl"]
    out = _run(cmd)
    if out.returncode != 0:
        raise RuntimeError(f"building the oxenstored shim failed:\n{out.stdout}")
    tmp.rename(shim)
    return shim


def prepare(cache: Path = DEFAULT_CACHE) -> Prepared:
    """Make sure oxenstored and the shim are in ``cache``; download/build when missing."""
    cache.mkdir(parents=True, exist_ok=True)
    root = cache / "root"
    if not (root / OXENSTORED_REL).is_file():
        _download(cache)
    lib_path = ":".join(str(root / d) for d in ("usr/lib/x86_64-linux-gnu", "usr/lib/xen-4.17/lib"))
    return Prepared(root / OXENSTORED_REL, lib_path, _build_shim(cache))


_NAMESPACE_SCRIPT = r"""
set -e
mount --make-rprivate /
run=$(readlink -f /var/run)
mount -t tmpfs -o mode=0755 xenvcpu-xs "$run"
mkdir -p "$run/xenstored"
mount --bind "$SOCKDIR" "$run/xenstored"
exec env LD_PRELOAD="$SHIM" LD_LIBRARY_PATH="$LIBS" "$OXENSTORED" \
    --no-domain-init --no-fork --config-file "$SOCKDIR/oxenstored.conf"
"""


class Oxenstored:
    """One running oxenstored; ``socket_path`` is what XENSTORED_PATH should be."""

    def __init__(self, prepared: Prepared, workdir: Path | None = None) -> None:
        self.prepared = prepared
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="xenvcpu-xs-"))
        self.socket_path = str(self.workdir / "socket")
        self.log_path = self.workdir / "oxenstored.out"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> str:
        if shutil.which("unshare") is None:
            raise RuntimeError("unshare (util-linux) not found")
        conf = self.workdir / "oxenstored.conf"
        conf.write_text(
            f"pid-file = {self.workdir}/oxenstored.pid\n"
            f"xenstored-log-file = {self.workdir}/xenstored.log\n"
            f"access-log-file = {self.workdir}/access.log\n"
            "persistent = false\n"
            # oxenstored limits values to 2048 bytes by default; lift it so a request
            # of exactly XENSTORE_PAYLOAD_MAX (4096) bytes can be tested end to end.
            "quota-maxsize = 8192\n"
        )
        unshare = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-r", "-m"]
        env = dict(os.environ)
        env.update(
            SOCKDIR=str(self.workdir),
            SHIM=str(self.prepared.shim),
            LIBS=self.prepared.lib_path,
            OXENSTORED=str(self.prepared.oxenstored),
        )
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [*unshare, "sh", "-c", _NAMESPACE_SCRIPT],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"oxenstored exited with {self.proc.returncode}:\n{self.log()}")
            if os.path.exists(self.socket_path) and self._connectable():
                return self.socket_path
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(
            f"oxenstored did not create {self.socket_path} in {timeout} s:\n{self.log()}"
        )

    def _connectable(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            try:
                s.connect(self.socket_path)
            except OSError:
                return False
            return True

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def main(argv: list[str]) -> int:
    if argv[1:2] != ["run"]:
        print("usage: xs_harness.py run", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    try:
        prepared = prepare()
    except Unavailable as exc:
        print(f"unavailable: {exc}", file=sys.stderr)
        return 1
    daemon = Oxenstored(prepared)
    path = daemon.start()
    print(
        f"XENSTORED_PATH={path} PID={daemon.proc.pid if daemon.proc else '?'} "
        f"(ready in {time.monotonic() - t0:.2f} s)",
        flush=True,
    )
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        daemon.cleanup()
    return 0


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    sys.exit(main(sys.argv))
