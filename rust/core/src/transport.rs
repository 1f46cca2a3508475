//! The seam between operations and a hypervisor.
//!
//! A transport owns one *arena* of hypercall-safe memory (xen-interfaces.md §1.5) and issues one hypercall
//! at a time. Callers lay out request blocks, bitmaps, output arrays and multicall entry arrays
//! in the arena, compute guest addresses as `arena base + offset`, and call
//! [`Transport::hypercall`]. A multicall batch (xen-interfaces.md §10) is just hypercall 13 whose argument
//! points at an entry array in the same arena, so single calls and batches share the seam.
//!
//! The real implementation is [`crate::privcmd::Privcmd`]; the simulated Xen is
//! [`crate::sim::SimTransport`]. Both read exactly the same bytes.

use crate::error::{Errno, Result};

/// A hypervisor connection: hypercall-safe memory + one hypercall entry point.
pub trait Transport: Send {
    /// Make the arena at least `len` bytes long. It is reused across calls and only grows; its
    /// base address may change when it grows, and its contents are then undefined.
    fn reserve(&mut self, len: usize) -> Result<()>;

    /// The arena: its guest-visible base address and its bytes (`len()` ≥ last `reserve`).
    fn arena(&mut self) -> (u64, &mut [u8]);

    /// Issue hypercall `op` with five arguments. Returns the raw non-negative result, or the
    /// errno (Xen's −E, or the kernel's own ioctl error; xen-interfaces.md §1.4).
    fn hypercall(&mut self, op: u64, args: [u64; 5]) -> std::result::Result<u64, Errno>;

    /// Short name for messages ("privcmd", "sim").
    fn name(&self) -> &'static str;
}

impl Transport for Box<dyn Transport> {
    fn reserve(&mut self, len: usize) -> Result<()> {
        (**self).reserve(len)
    }
    fn arena(&mut self) -> (u64, &mut [u8]) {
        (**self).arena()
    }
    fn hypercall(&mut self, op: u64, args: [u64; 5]) -> std::result::Result<u64, Errno> {
        (**self).hypercall(op, args)
    }
    fn name(&self) -> &'static str {
        (**self).name()
    }
}

/// Arena sizes are rounded up to whole 4 KiB pages (xen-interfaces.md §1.5: mappings are n × 4096 bytes).
pub const PAGE: usize = 4096;

/// Round `len` up to whole pages (at least one).
#[inline]
pub fn pages(len: usize) -> usize {
    len.max(1).div_ceil(PAGE) * PAGE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_rounding() {
        assert_eq!(pages(0), 4096);
        assert_eq!(pages(1), 4096);
        assert_eq!(pages(4096), 4096);
        assert_eq!(pages(4097), 8192);
    }
}
