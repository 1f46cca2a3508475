//! Lasting simulated hosts: the protocol that keeps a host in a state file (`state.rs`) so
//! that several processes — a CLI run after run, a watcher, their tests — see one host.
//!
//! Every access ([`Store::transact`]: each hypercall, each toolstack or control call):
//!
//! 1. takes an exclusive `flock` on the lock file `PATH.lock`, waiting at most
//!    [`STATE_LOCK_WAIT`] (then a typed error, EWOULDBLOCK);
//! 2. reloads the state if the file changed since this handle last saw it: the lock file
//!    holds a generation number, bumped by every write, and the state file's identity (device,
//!    inode, size, times) is compared too, so a file replaced by hand is noticed; a missing
//!    file is a host made afresh from the description;
//! 3. runs the call;
//! 4. writes the state back if it changed: to `PATH.tmp` (in the same directory), fsync,
//!    rename over `PATH` (atomic: a reader sees the old state or the new one, whole), then
//!    the new generation to the lock file;
//! 5. unlocks.
//!
//! A lock file is held per process (reopened after a fork, whose child would otherwise share
//! the parent's lock). Files that are not regular files are refused (a FIFO would block the
//! read), and a state file is read only up to [`MAX_STATE_BYTES`].
#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice
)]

use super::host::SimHost;
use super::spec::{bad, HostSpec};
use super::state::{self, Desc, MAX_STATE_BYTES};
use crate::error::{Error, ErrorKind, Result};
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest a call waits for another process's hold on a state file's lock.
pub const STATE_LOCK_WAIT: Duration = Duration::from_secs(5);

/// What identifies one version of the state file (a write replaces the file: new inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Fingerprint {
    fn of(m: &fs::Metadata) -> Self {
        Fingerprint {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// The flock of a lock file, released when dropped.
struct Flock(Arc<File>);

impl Drop for Flock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// One handle's view of a state file.
pub(super) struct Store {
    path: PathBuf,
    lock_path: PathBuf,
    tmp_path: PathBuf,
    /// the path, for messages
    shown: String,
    /// the description the host is made from when the file is missing
    spec: HostSpec,
    desc: Desc,
    /// the lock file, and the process that opened it
    lock: Option<(u32, Arc<File>)>,
    /// the generation and the file this handle last loaded or wrote (None: reload)
    seen: Option<(Option<u64>, Fingerprint)>,
    /// the state as last loaded or written, to tell whether a call changed it
    last: Vec<u8>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

impl Store {
    /// The store of the state file at `path` for hosts described by `spec`, and the host it
    /// holds (made afresh, and the file written, when there is no file yet).
    pub(super) fn open(spec: &HostSpec, path: &Path) -> Result<(Self, SimHost)> {
        let shown = path.display().to_string();
        if !path.is_absolute() || path.file_name().is_none() {
            return Err(bad(format!(
                "state file {shown:?}: expected an absolute path to a file"
            )));
        }
        let mut host = SimHost::new(spec)?;
        let mut store = Store {
            path: path.to_path_buf(),
            lock_path: with_suffix(path, ".lock"),
            tmp_path: with_suffix(path, ".tmp"),
            shown,
            spec: spec.clone(),
            desc: state::describe(spec),
            lock: None,
            seen: None,
            last: Vec::new(),
        };
        store.transact(&mut host, |_| ())?;
        Ok((store, host))
    }

    /// The state file's path.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Run `f` on the host with the state file locked, reloaded before and written after.
    pub(super) fn transact<T>(
        &mut self,
        host: &mut SimHost,
        f: impl FnOnce(&mut SimHost) -> T,
    ) -> Result<T> {
        let lock = self.acquire()?;
        let gen = read_generation(&lock.0);
        let r = self.refresh(host, gen).and_then(|()| {
            let out = f(host);
            self.write_back(host, &lock.0, gen).map(|()| out)
        });
        if r.is_err() {
            // what is in memory may be ahead of the file: read the file again next time
            self.seen = None;
        }
        r
    }

    fn error(&self, what: &str, e: &std::io::Error) -> Error {
        bad(format!("state file {}: {what}: {e}", self.shown))
            .with_errno(e.raw_os_error().unwrap_or(libc::EIO))
    }

    fn lock_file(&mut self) -> Result<Arc<File>> {
        let pid = std::process::id();
        if let Some((p, f)) = &self.lock {
            if *p == pid {
                return Ok(f.clone());
            }
            // a forked child: its own lock, and no view of the parent's
            self.seen = None;
        }
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.lock_path)
            .map_err(|e| self.error(&format!("cannot open {}", self.lock_path.display()), &e))?;
        let regular = f.metadata().map(|m| m.is_file()).unwrap_or(false);
        if !regular {
            return Err(bad(format!(
                "state file {}: its lock file {} is not a regular file",
                self.shown,
                self.lock_path.display()
            )));
        }
        let f = Arc::new(f);
        self.lock = Some((pid, f.clone()));
        Ok(f)
    }

    fn acquire(&mut self) -> Result<Flock> {
        let f = self.lock_file()?;
        let start = Instant::now();
        let mut pause = Duration::from_micros(100);
        loop {
            match f.try_lock() {
                Ok(()) => return Ok(Flock(f)),
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => return Err(self.error("cannot lock it", &e)),
            }
            if start.elapsed() >= STATE_LOCK_WAIT {
                return Err(Error::new(
                    ErrorKind::Other,
                    format!(
                        "sim host: state file {}: another process has held its lock ({}) for \
                         more than {} s",
                        self.shown,
                        self.lock_path.display(),
                        STATE_LOCK_WAIT.as_secs()
                    ),
                )
                .with_errno(libc::EWOULDBLOCK));
            }
            std::thread::sleep(pause);
            pause = pause.saturating_mul(2).min(Duration::from_millis(20));
        }
    }

    /// Bring the host up to the file (or make it afresh when there is no file).
    fn refresh(&mut self, host: &mut SimHost, gen: Option<u64>) -> Result<()> {
        match fs::metadata(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                *host = SimHost::new(&self.spec)?;
                self.seen = None;
                self.last.clear();
                Ok(())
            }
            Err(e) => Err(self.error("cannot read it", &e)),
            Ok(m) if self.seen == Some((gen, Fingerprint::of(&m))) => Ok(()),
            Ok(_) => {
                let (bytes, fp) = self.read()?;
                state::decode(&bytes, &self.spec, &self.desc, host, &self.shown)?;
                self.last = bytes;
                self.seen = Some((gen, fp));
                Ok(())
            }
        }
    }

    /// The state file's bytes (at most MAX_STATE_BYTES) and identity.
    fn read(&self) -> Result<(Vec<u8>, Fingerprint)> {
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.path)
            .map_err(|e| self.error("cannot read it", &e))?;
        let m = f.metadata().map_err(|e| self.error("cannot read it", &e))?;
        if !m.is_file() {
            return Err(bad(format!(
                "state file {} is not a regular file",
                self.shown
            )));
        }
        if m.len() > MAX_STATE_BYTES {
            return Err(too_big(&self.shown, m.len()));
        }
        let mut bytes = Vec::new();
        f.take(MAX_STATE_BYTES.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| self.error("cannot read it", &e))?;
        let n = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        if n > MAX_STATE_BYTES {
            return Err(too_big(&self.shown, n));
        }
        Ok((bytes, Fingerprint::of(&m)))
    }

    /// Write the host's state if it changed: temp file, fsync, rename; then the generation.
    fn write_back(&mut self, host: &SimHost, lock: &File, gen: Option<u64>) -> Result<()> {
        let bytes = state::encode(host, &self.desc)?;
        if self.seen.is_some() && bytes == self.last {
            return Ok(());
        }
        let n = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        if n > MAX_STATE_BYTES {
            return Err(too_big(&self.shown, n));
        }
        let write = || -> std::io::Result<fs::Metadata> {
            // not through a symlink someone left, not into a FIFO
            let mut t = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(&self.tmp_path)?;
            t.write_all(&bytes)?;
            t.sync_all()?;
            drop(t);
            fs::rename(&self.tmp_path, &self.path)?;
            fs::metadata(&self.path)
        };
        let m = write().map_err(|e| self.error("cannot write it", &e))?;
        let next = gen.unwrap_or(0).wrapping_add(1);
        lock.write_all_at(format!("{next:020}\n").as_bytes(), 0)
            .map_err(|e| self.error("cannot write its lock file", &e))?;
        self.seen = Some((Some(next), Fingerprint::of(&m)));
        self.last = bytes;
        Ok(())
    }
}

fn too_big(shown: &str, n: u64) -> Error {
    bad(format!(
        "state file {shown}: {n} bytes is more than the {MAX_STATE_BYTES} a state file may hold \
         (a lasting host is meant for small hosts)"
    ))
}

/// The generation a lock file holds (None: none yet, or not one).
fn read_generation(f: &File) -> Option<u64> {
    let mut buf = [0u8; 32];
    let n = f.read_at(&mut buf, 0).ok()?;
    let text = std::str::from_utf8(buf.get(..n)?).ok()?.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}
