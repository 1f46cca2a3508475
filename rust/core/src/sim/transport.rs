//! The simulator as a [`Transport`]: an arena like the privcmd one, and a hypercall entry that
//! hands the arena to the simulated hypervisor.

use super::host::{SimHandle, SimHost};
use super::hypervisor::Mem;
use crate::error::{Errno, Result};
use crate::transport::Transport;
use std::sync::{Arc, Mutex, MutexGuard};

/// Base of the simulated arena's guest addresses (any non-zero page-aligned value works; a
/// recognisable one helps debugging).
pub const SIM_ARENA_BASE: u64 = 0x5157_0000_0000;

/// The simulator as a [`Transport`].
#[derive(Debug)]
pub struct SimTransport {
    host: SimHandle,
    arena: Vec<u8>,
}

impl SimTransport {
    /// A transport on a new host.
    pub fn new(host: SimHost) -> Self {
        Self::with_handle(Arc::new(Mutex::new(host)))
    }

    /// A transport on a shared host.
    pub fn with_handle(host: SimHandle) -> Self {
        SimTransport {
            host,
            arena: Vec::new(),
        }
    }

    /// The shared host (toolstack side).
    pub fn handle(&self) -> SimHandle {
        self.host.clone()
    }
}

/// Lock a sim host, surviving a poisoned lock (the state stays usable for tests).
pub fn lock(h: &SimHandle) -> MutexGuard<'_, SimHost> {
    h.lock().unwrap_or_else(|p| p.into_inner())
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
        let mut mem = Mem {
            base: SIM_ARENA_BASE,
            bytes: &mut self.arena,
        };
        lock(&self.host)
            .hypercall(&mut mem, op, args)
            .map_err(Errno)
    }

    fn name(&self) -> &'static str {
        "sim"
    }
}
