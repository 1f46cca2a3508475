//! [`SimHandle`]: the one way to a simulated host, shared by its hypervisor side (the
//! transport) and its toolstack side; for a lasting host it keeps the state file in step.

use super::host::SimHost;
use super::spec::HostSpec;
use super::store::Store;
use crate::error::Result;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

struct Shared {
    host: SimHost,
    store: Option<Store>,
}

/// Shared handle to a simulated host (toolstack side). Clones share the host.
///
/// A host is in memory, or *lasting*: kept in a state file that every access reloads and
/// writes back under a lock, so that every process opening the file sees one host
/// (`store.rs`, docs/simulator.md).
#[derive(Clone)]
pub struct SimHandle {
    shared: Arc<Mutex<Shared>>,
    /// the state file of a lasting host (kept out of the lock: reading it never waits)
    state: Option<Arc<Path>>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("state", &self.state_path())
            .finish()
    }
}

impl SimHandle {
    /// A handle to a host in memory.
    pub fn new(host: SimHost) -> Self {
        SimHandle {
            shared: Arc::new(Mutex::new(Shared { host, store: None })),
            state: None,
        }
    }

    /// The host `spec` describes: in memory, or (`state` given) lasting in the state file at
    /// that absolute path — loaded from it, or made afresh and written to it when there is
    /// no file yet. A file that is not a state of this description is an error.
    pub fn open(spec: &HostSpec, state: Option<&Path>) -> Result<Self> {
        match state {
            None => Ok(Self::new(SimHost::new(spec)?)),
            Some(path) => {
                let (store, host) = Store::open(spec, path)?;
                Ok(SimHandle {
                    state: Some(store.path().into()),
                    shared: Arc::new(Mutex::new(Shared {
                        host,
                        store: Some(store),
                    })),
                })
            }
        }
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding the lock leaves the host usable (tests rely on it).
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` on the host. On a lasting host this locks the state file, reloads the state
    /// if another process changed it, runs `f` and writes the state back if it changed; the
    /// error is the state file's (lock not had in time, file unreadable or not a state).
    pub fn with<T>(&self, f: impl FnOnce(&mut SimHost) -> T) -> Result<T> {
        let mut g = self.shared();
        let Shared { host, store } = &mut *g;
        match store {
            None => Ok(f(host)),
            Some(s) => s.transact(host, f),
        }
    }

    /// The state file of a lasting host (None: the host is in memory).
    pub fn state_path(&self) -> Option<PathBuf> {
        self.state.as_deref().map(Path::to_path_buf)
    }
}

/// The host in memory, locked: for hosts in memory and tests. It bypasses a lasting host's
/// state file (neither reloaded nor written): use [`SimHandle::with`] there.
pub struct SimGuard<'a>(MutexGuard<'a, Shared>);

impl std::ops::Deref for SimGuard<'_> {
    type Target = SimHost;
    fn deref(&self) -> &SimHost {
        &self.0.host
    }
}

impl std::ops::DerefMut for SimGuard<'_> {
    fn deref_mut(&mut self) -> &mut SimHost {
        &mut self.0.host
    }
}

/// Lock a sim host in memory, surviving a poisoned lock (see [`SimGuard`]).
pub fn lock(h: &SimHandle) -> SimGuard<'_> {
    SimGuard(h.shared())
}
