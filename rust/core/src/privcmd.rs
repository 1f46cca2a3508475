//! The real transport: `IOCTL_PRIVCMD_HYPERCALL` on the privcmd device (xen-interfaces.md §1).
//!
//! * The privcmd device is opened once, read-write, close-on-exec: `/dev/xen/privcmd`, and on
//!   ENOENT/ENXIO/ENODEV `/proc/xen/privcmd` (xen-interfaces.md §1.1, libxencall's order).
//! * Hypercall memory (xen-interfaces.md §1.5) comes from `/dev/xen/hypercall` (mmap `MAP_SHARED`), or, when
//!   that node does not exist, from an anonymous `MAP_PRIVATE | MAP_LOCKED` mapping with
//!   `MADV_DONTFORK` and every page touched. One arena is reused across calls and only grows.
//!
//! This module holds the project's only `unsafe` code; every block says why it is sound.

use crate::abi::{PrivcmdHypercall, IOCTL_PRIVCMD_HYPERCALL};
use crate::error::{Errno, Error, ErrorKind, Result};
use crate::transport::{pages, Transport, PAGE};
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Primary privcmd node (xen-interfaces.md §1.1).
pub const DEV_PRIVCMD: &str = "/dev/xen/privcmd";
/// xenfs privcmd node (xen-interfaces.md §1.1).
pub const PROC_PRIVCMD: &str = "/proc/xen/privcmd";
/// Hypercall buffer device (xen-interfaces.md §1.1, §1.5).
pub const DEV_HYPERCALL: &str = "/dev/xen/hypercall";

/// Linux `privcmd-buf.c` lets one open file of `/dev/xen/hypercall` hold at most `limit`
/// pages (module parameter, default 64 = 256 KiB; read in torvalds/linux
/// `drivers/xen/privcmd-buf.c`, not in the reference). Operations size their batches to stay
/// within it; a larger arena falls back to locked memory when the device answers ENOSPC.
pub const BUFDEV_DEFAULT_LIMIT: usize = 64 * PAGE;

/// How the arena was allocated (xen-interfaces.md §1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArenaKind {
    /// mmap MAP_SHARED of the hypercall buffer device.
    BufDev,
    /// Anonymous locked private memory, MADV_DONTFORK, pages touched.
    Locked,
}

#[derive(Debug)]
struct Mapping {
    /// Start address (kept as an integer so the transport is `Send` without an unsafe impl).
    addr: usize,
    len: usize,
    kind: ArenaKind,
}

/// The privcmd transport.
#[derive(Debug)]
pub struct Privcmd {
    fd: OwnedFd,
    path: PathBuf,
    bufdev: Option<File>,
    map: Option<Mapping>,
}

fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

fn last_errno() -> i32 {
    errno_of(&std::io::Error::last_os_error())
}

/// Classify a failed `open()` of a privcmd/xenbus-like node (xen-interfaces.md §7).
pub fn open_error(path: &Path, errno: i32) -> Error {
    match errno {
        libc::ENOENT | libc::ENXIO | libc::ENODEV => Error::new(
            ErrorKind::NoHypervisor,
            format!(
                "no Xen privcmd device ({} or {}): not running on Xen, or the privcmd \
                 module / xenfs is not loaded",
                DEV_PRIVCMD, PROC_PRIVCMD
            ),
        )
        .with_errno(errno),
        libc::EACCES | libc::EPERM => {
            Error::permission_denied(&format!("cannot open {}", path.display()), errno)
        }
        _ => Error::new(
            ErrorKind::Other,
            format!("cannot open {}: {}", path.display(), Errno(errno)),
        )
        .with_errno(errno),
    }
}

fn open_rw(path: &Path) -> std::result::Result<File, i32> {
    // std opens with O_CLOEXEC on Linux.
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| errno_of(&e))
}

impl Privcmd {
    /// Open the system's privcmd device and hypercall buffer device.
    pub fn open() -> Result<Self> {
        Self::open_paths(
            Path::new(DEV_PRIVCMD),
            Some(Path::new(PROC_PRIVCMD)),
            Some(Path::new(DEV_HYPERCALL)),
        )
    }

    /// Open given nodes (for tests and unusual layouts). `fallback` is tried only when
    /// `primary` fails with ENOENT/ENXIO/ENODEV; `bufdev` missing (ENOENT) selects the locked
    /// allocator, any other failure is fatal (xen-interfaces.md §1.1).
    pub fn open_paths(
        primary: &Path,
        fallback: Option<&Path>,
        bufdev: Option<&Path>,
    ) -> Result<Self> {
        let (file, path) = match open_rw(primary) {
            Ok(f) => (f, primary.to_path_buf()),
            Err(e @ (libc::ENOENT | libc::ENXIO | libc::ENODEV)) => match fallback {
                Some(fb) => match open_rw(fb) {
                    Ok(f) => (f, fb.to_path_buf()),
                    Err(e2) => return Err(open_error(fb, e2)),
                },
                None => return Err(open_error(primary, e)),
            },
            Err(e) => return Err(open_error(primary, e)),
        };
        let bufdev = match bufdev {
            None => None,
            Some(p) => match open_rw(p) {
                Ok(f) => Some(f),
                Err(libc::ENOENT) => None,
                Err(e) => return Err(open_error(p, e)),
            },
        };
        Ok(Privcmd {
            fd: file.into(),
            path,
            bufdev,
            map: None,
        })
    }

    /// Wrap an already open privcmd fd (and optionally a hypercall buffer device fd).
    pub fn from_fd(fd: OwnedFd, bufdev: Option<File>) -> Self {
        Privcmd {
            fd,
            path: PathBuf::from("<fd>"),
            bufdev,
            map: None,
        }
    }

    /// Path the device was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Which allocator backs the arena (None before the first `reserve`).
    pub fn arena_kind(&self) -> Option<ArenaKind> {
        self.map.as_ref().map(|m| m.kind)
    }

    fn map_new(&self, len: usize) -> Result<Mapping> {
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        if let Some(dev) = &self.bufdev {
            // SAFETY: a fresh mapping (addr NULL) of `len` bytes of a device fd we own; it does
            // not alias any Rust object. The result is checked against MAP_FAILED.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    prot,
                    libc::MAP_SHARED,
                    dev.as_raw_fd(),
                    0,
                )
            };
            if p != libc::MAP_FAILED {
                return Ok(Mapping {
                    addr: p as usize,
                    len,
                    kind: ArenaKind::BufDev,
                });
            }
            let e = last_errno();
            if e != libc::ENOSPC {
                return Err(Error::new(
                    ErrorKind::Other,
                    format!("mmap of {DEV_HYPERCALL} ({len} bytes) failed: {}", Errno(e)),
                )
                .with_errno(e));
            }
            // over the device's per-file page limit: use the locked fallback (xen-interfaces.md §1.5)
        }
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_LOCKED;
        // SAFETY: fresh anonymous mapping (addr NULL, fd -1); aliases nothing; checked below.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, -1, 0) };
        if p == libc::MAP_FAILED {
            let e = last_errno();
            return Err(Error::new(
                ErrorKind::Other,
                format!(
                    "cannot allocate {len} bytes of locked hypercall memory: {} (check \
                     RLIMIT_MEMLOCK, or run as root)",
                    Errno(e)
                ),
            )
            .with_errno(e));
        }
        let m = Mapping {
            addr: p as usize,
            len,
            kind: ArenaKind::Locked,
        };
        // SAFETY: `p..p+len` is the mapping just created; madvise only changes its fork policy.
        let r = unsafe { libc::madvise(p, len, libc::MADV_DONTFORK) };
        if r != 0 {
            let e = last_errno();
            Self::unmap(&m);
            return Err(Error::new(
                ErrorKind::Other,
                format!(
                    "madvise(MADV_DONTFORK) on hypercall memory failed: {}",
                    Errno(e)
                ),
            )
            .with_errno(e));
        }
        // Touch every page so it is present and not shared (xen-interfaces.md §1.5).
        let addr = m.addr;
        // SAFETY: the mapping is `len` readable+writable bytes owned by us and nothing else
        // refers to it yet; the slice lives only for this loop.
        let bytes = unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, len) };
        for off in (0..len).step_by(PAGE) {
            bytes[off] = 0;
        }
        Ok(m)
    }

    fn unmap(m: &Mapping) {
        if m.kind == ArenaKind::Locked {
            // SAFETY: `m` describes a live mapping we created; MADV_DOFORK only resets its fork
            // policy (xen-interfaces.md §1.5 free recipe). Failure is harmless (we unmap next).
            unsafe { libc::madvise(m.addr as *mut libc::c_void, m.len, libc::MADV_DOFORK) };
        }
        // SAFETY: `m` describes a live mapping we created and no slice into it outlives this
        // call (slices are only handed out borrowing `&mut self`).
        unsafe { libc::munmap(m.addr as *mut libc::c_void, m.len) };
    }
}

impl Drop for Privcmd {
    fn drop(&mut self) {
        if let Some(m) = self.map.take() {
            Self::unmap(&m);
        }
    }
}

impl Transport for Privcmd {
    fn reserve(&mut self, len: usize) -> Result<()> {
        let have = self.map.as_ref().map_or(0, |m| m.len);
        if have >= len {
            return Ok(());
        }
        // Grow geometrically up to the bufdev's default per-file limit, exactly beyond it.
        let want = pages(len.max((have * 2).min(BUFDEV_DEFAULT_LIMIT)));
        // Free the old arena first: the buffer device counts pages per open file.
        if let Some(old) = self.map.take() {
            Self::unmap(&old);
        }
        self.map = Some(self.map_new(want)?);
        Ok(())
    }

    fn arena(&mut self) -> (u64, &mut [u8]) {
        match &self.map {
            None => (0, &mut []),
            Some(m) => {
                // SAFETY: the mapping is `m.len` readable+writable bytes that live until unmap,
                // which needs `&mut self`; the returned slice borrows `self` mutably, so no
                // other slice into the arena and no unmap can coexist with it.
                let s = unsafe { std::slice::from_raw_parts_mut(m.addr as *mut u8, m.len) };
                (m.addr as u64, s)
            }
        }
    }

    fn hypercall(&mut self, op: u64, args: [u64; 5]) -> std::result::Result<u64, Errno> {
        let mut hc = PrivcmdHypercall { op, arg: args };
        // SAFETY: IOCTL_PRIVCMD_HYPERCALL (xen-interfaces.md §1.2) reads a 48-byte `privcmd_hypercall`
        // (xen-interfaces.md §1.3), which `hc` is (#[repr(C)], size asserted in abi.rs) and which outlives the
        // call. Memory the hypercall touches is referenced by addresses inside our arena, which
        // stays mapped while `&mut self` is held. On a non-privcmd fd the kernel returns ENOTTY.
        let r = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                IOCTL_PRIVCMD_HYPERCALL as _,
                &mut hc as *mut PrivcmdHypercall,
            )
        };
        if r < 0 {
            Err(Errno(last_errno()))
        } else {
            Ok(r as u64)
        }
    }

    fn name(&self) -> &'static str {
        "privcmd"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{HYPERVISOR_XEN_VERSION, XENVER_VERSION};
    use std::io::Write;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xenvcpu-privcmd-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn missing_device_is_no_hypervisor() {
        let d = tmpdir("missing");
        let e = Privcmd::open_paths(&d.join("privcmd"), Some(&d.join("proc-privcmd")), None)
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::NoHypervisor);
        assert_eq!(e.errno, Some(libc::ENOENT));
        assert!(e.message.contains("/dev/xen/privcmd"));
    }

    #[test]
    fn falls_back_to_proc_node_on_enoent() {
        let d = tmpdir("fallback");
        let fb = d.join("proc-privcmd");
        std::fs::File::create(&fb).unwrap().write_all(b"x").unwrap();
        let p = Privcmd::open_paths(&d.join("absent"), Some(&fb), None).unwrap();
        assert_eq!(p.path(), fb.as_path());
    }

    #[test]
    fn no_fallback_on_other_errors() {
        // A directory cannot be opened read-write: EISDIR is not a "node absent" error, so the
        // fallback (which would succeed) must not be tried.
        let d = tmpdir("eisdir");
        let fb = d.join("proc-privcmd");
        std::fs::File::create(&fb).unwrap();
        let e = Privcmd::open_paths(&d, Some(&fb), None).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Other);
        assert_eq!(e.errno, Some(libc::EISDIR));
    }

    #[test]
    fn eacces_is_permission_denied() {
        let e = open_error(Path::new(DEV_PRIVCMD), libc::EACCES);
        assert_eq!(e.kind, ErrorKind::PermissionDenied);
        assert!(e
            .message
            .contains("run as root in the control domain (dom0)"));
        // A real EACCES from open(): a mode-0600 root file opened by an unprivileged user, like
        // /dev/xen/privcmd (xen-interfaces.md §7). As root we re-run this test in a child as `nobody`.
        if let Some(f) = std::env::var_os("XENVCPU_EACCES_CHILD") {
            let e = Privcmd::open_paths(Path::new(&f), None, None).unwrap_err();
            assert_eq!(e.kind, ErrorKind::PermissionDenied, "{e:?}");
            assert_eq!(e.errno, Some(libc::EACCES));
            return;
        }
        let d = tmpdir("eacces");
        let f = d.join("privcmd-0600");
        std::fs::File::create(&f).unwrap();
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        if !is_root() {
            let e = Privcmd::open_paths(&f, None, None).unwrap_err();
            assert_eq!(e.kind, ErrorKind::PermissionDenied, "{e:?}");
            assert_eq!(e.errno, Some(libc::EACCES));
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&exe)
            .args([
                "--exact",
                "privcmd::tests::eacces_is_permission_denied",
                "--test-threads=1",
            ])
            .env("XENVCPU_EACCES_CHILD", &f)
            .env("TMPDIR", std::env::temp_dir())
            .output()
            .expect("setpriv (util-linux) is needed to test EACCES as root");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("1 passed"), "{text}");
    }

    fn is_root() -> bool {
        // /proc/self/status "Uid:" line: real, effective, ...
        let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            .is_some_and(|u| u == "0")
    }

    #[test]
    fn ioctl_on_non_privcmd_fd_is_enotty() {
        let mut p = Privcmd::open_paths(Path::new("/dev/null"), None, None).unwrap();
        let r = p.hypercall(HYPERVISOR_XEN_VERSION, [XENVER_VERSION, 0, 0, 0, 0]);
        assert_eq!(r, Err(Errno(libc::ENOTTY)));
        let d = tmpdir("regular");
        let f = d.join("file");
        std::fs::File::create(&f).unwrap();
        let mut p = Privcmd::open_paths(&f, None, None).unwrap();
        assert_eq!(p.hypercall(36, [0; 5]), Err(Errno(libc::ENOTTY)));
    }

    #[test]
    fn locked_arena_grows_and_is_writable() {
        let mut p = Privcmd::open_paths(Path::new("/dev/null"), None, None).unwrap();
        assert_eq!(p.arena().1.len(), 0);
        p.reserve(100).unwrap();
        assert_eq!(p.arena_kind(), Some(ArenaKind::Locked));
        let (base, a) = p.arena();
        assert_eq!(a.len(), 4096);
        assert_ne!(base, 0);
        assert_eq!(base % 4096, 0);
        a[4095] = 7;
        p.reserve(50).unwrap(); // no shrink, no remap
        assert_eq!(p.arena().0, base);
        assert_eq!(p.arena().1[4095], 7);
        p.reserve(3 * 4096 + 1).unwrap();
        let (_, a) = p.arena();
        assert_eq!(a.len(), 4 * 4096);
        a.fill(0x5A);
        assert!(a.iter().all(|&b| b == 0x5A));
    }

    #[test]
    fn bufdev_arena_uses_shared_mapping() {
        // /dev/zero stands in for /dev/xen/hypercall: it accepts MAP_SHARED mmaps.
        let mut p = Privcmd::open_paths(Path::new("/dev/null"), None, Some(Path::new("/dev/zero")))
            .unwrap();
        p.reserve(10_000).unwrap();
        assert_eq!(p.arena_kind(), Some(ArenaKind::BufDev));
        let (_, a) = p.arena();
        assert_eq!(a.len(), 12_288);
        a[12_287] = 1;
        assert_eq!(a[12_287], 1);
    }

    #[test]
    fn missing_bufdev_selects_locked_allocator_other_errors_are_fatal() {
        let d = tmpdir("bufdev");
        let mut p =
            Privcmd::open_paths(Path::new("/dev/null"), None, Some(&d.join("absent"))).unwrap();
        p.reserve(1).unwrap();
        assert_eq!(p.arena_kind(), Some(ArenaKind::Locked));
        let e = Privcmd::open_paths(Path::new("/dev/null"), None, Some(&d)).unwrap_err();
        assert_eq!(e.errno, Some(libc::EISDIR));
    }

    #[test]
    fn from_fd_and_send() {
        fn is_send<T: Send>() {}
        is_send::<Privcmd>();
        let f = std::fs::File::open("/dev/null").unwrap();
        let mut p = Privcmd::from_fd(f.into(), None);
        assert_eq!(p.name(), "privcmd");
        assert_eq!(p.hypercall(35, [0; 5]), Err(Errno(libc::ENOTTY)));
    }
}
