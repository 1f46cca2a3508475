//! The simulator as a [`Transport`]: an arena like the privcmd one, and a hypercall entry that
//! hands the arena to the simulated hypervisor.

use super::handle::SimHandle;
use super::host::SimHost;
use super::hypervisor::Mem;
use super::store::STATE_LOCK_WAIT;
use crate::error::{Errno, Error, Result};
use crate::transport::Transport;
use std::time::Instant;

/// Base of the simulated arena's guest addresses (any non-zero page-aligned value works; a
/// recognisable one helps debugging).
pub const SIM_ARENA_BASE: u64 = 0x5157_0000_0000;

/// The simulator as a [`Transport`].
#[derive(Debug)]
pub struct SimTransport {
    host: SimHandle,
    arena: Vec<u8>,
    /// A lasting host's state file failed (see [`Transport::take_error`]) and when.
    failure: Option<(Error, Instant)>,
}

impl SimTransport {
    /// A transport on a new host.
    pub fn new(host: SimHost) -> Self {
        Self::with_handle(SimHandle::new(host))
    }

    /// A transport on a shared host.
    pub fn with_handle(host: SimHandle) -> Self {
        SimTransport {
            host,
            arena: Vec::new(),
            failure: None,
        }
    }

    /// The shared host (toolstack side).
    pub fn handle(&self) -> SimHandle {
        self.host.clone()
    }
}

impl Transport for SimTransport {
    fn reserve(&mut self, len: usize) -> Result<()> {
        if self.arena.len() < len {
            let want = crate::transport::pages(len.max(self.arena.len() * 2));
            self.arena = vec![0u8; want];
        }
        Ok(())
    }

    fn arena(&mut self) -> (u64, &mut [u8]) {
        (SIM_ARENA_BASE, &mut self.arena)
    }

    fn hypercall(&mut self, op: u64, args: [u64; 5]) -> std::result::Result<u64, Errno> {
        // After a state file failure, the rest of the operation fails at once (EIO) rather
        // than waiting for the lock once per hypercall, until the error is taken.
        if let Some((_, at)) = &self.failure {
            if at.elapsed() < STATE_LOCK_WAIT {
                return Err(Errno(libc::EIO));
            }
            self.failure = None;
        }
        let mut mem = Mem {
            base: SIM_ARENA_BASE,
            bytes: &mut self.arena,
        };
        match self.host.with(|h| h.hypercall(&mut mem, op, args)) {
            Ok(r) => r.map_err(Errno),
            Err(e) => {
                self.failure = Some((e, Instant::now()));
                Err(Errno(libc::EIO))
            }
        }
    }

    fn take_error(&mut self) -> Option<Error> {
        self.failure.take().map(|(e, _)| e)
    }

    fn name(&self) -> &'static str {
        "sim"
    }
}
