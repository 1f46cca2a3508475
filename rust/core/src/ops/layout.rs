//! Where the pieces of a multicall batch sit in the hypercall arena.
//!
//! A batch of `n` items (a vCPU to read, a vCPU to pin) is laid out in the arena as three
//! runs: every multicall entry (docs/xen-interfaces.md §10) from offset 0, then every
//! domctl request block, then every bitmap, 8-byte aligned. An item owns `entries` entries,
//! `blocks` blocks and `maps` bitmaps, in item order, so item `i`'s `k`-th block is at
//! `blocks_at + (i * blocks + k) * BLOCK`. Every offset the batch code uses comes from here.

use super::{align8, BLOCK, CHUNK_BYTES};
use crate::abi::MulticallEntry;

/// The shape of one item of a batch and the size of its bitmaps.
#[derive(Debug, Clone, Copy)]
pub(super) struct BatchLayout {
    entries: usize,
    blocks: usize,
    maps: usize,
    /// bytes of one bitmap (the host's map length)
    pub map_len: usize,
    /// bytes between two bitmaps (map_len rounded up to 8)
    map_stride: usize,
}

/// A batch of `n` items laid out by a [`BatchLayout`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Chunk {
    layout: BatchLayout,
    n: usize,
    blocks_at: usize,
    maps_at: usize,
}

impl BatchLayout {
    /// Items of `entries` multicall entries, `blocks` request blocks and `maps` bitmaps of
    /// `map_len` bytes each.
    pub fn new(entries: usize, blocks: usize, maps: usize, map_len: usize) -> Self {
        BatchLayout {
            entries,
            blocks,
            maps,
            map_len,
            map_stride: align8(map_len),
        }
    }

    /// Arena bytes one item takes.
    fn item_bytes(&self) -> usize {
        self.entries * MulticallEntry::SIZE + self.blocks * BLOCK + self.maps * self.map_stride
    }

    /// How many items go in one batch: as many as fit the arena target (at least one).
    pub fn items_per_chunk(&self) -> usize {
        (CHUNK_BYTES / self.item_bytes()).max(1)
    }

    /// The layout of a batch of `n` items.
    pub fn chunk(&self, n: usize) -> Chunk {
        let blocks_at = n * self.entries * MulticallEntry::SIZE;
        Chunk {
            layout: *self,
            n,
            blocks_at,
            maps_at: blocks_at + n * self.blocks * BLOCK,
        }
    }
}

impl Chunk {
    /// Arena bytes the whole batch needs.
    pub fn bytes(&self) -> usize {
        self.maps_at + self.n * self.layout.maps * self.layout.map_stride
    }

    /// Multicall entries in the batch (all at offset 0, in item order).
    pub fn entry_count(&self) -> usize {
        self.n * self.layout.entries
    }

    /// Offset of item `i`'s `k`-th multicall entry.
    pub fn entry(&self, i: usize, k: usize) -> usize {
        (i * self.layout.entries + k) * MulticallEntry::SIZE
    }

    /// Offset of the result field of item `i`'s `k`-th entry.
    pub fn result(&self, i: usize, k: usize) -> usize {
        self.entry(i, k) + crate::abi::MULTICALL_RESULT
    }

    /// Offset of item `i`'s `k`-th request block.
    pub fn block(&self, i: usize, k: usize) -> usize {
        self.blocks_at + (i * self.layout.blocks + k) * BLOCK
    }

    /// Offset of item `i`'s `k`-th bitmap.
    pub fn map(&self, i: usize, k: usize) -> usize {
        self.maps_at + (i * self.layout.maps + k) * self.layout.map_stride
    }

    /// The byte range of all of item `i`'s bitmaps (to clear them at once).
    pub fn maps_of(&self, i: usize) -> std::ops::Range<usize> {
        self.map(i, 0)..self.map(i, 0) + self.layout.maps * self.layout.map_stride
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_do_not_overlap_and_fit_the_batch() {
        let l = BatchLayout::new(2, 2, 2, 9); // 9-byte maps, 16-byte stride
        let c = l.chunk(3);
        assert_eq!(c.entry_count(), 6);
        assert_eq!(c.block(0, 0), 6 * MulticallEntry::SIZE);
        assert_eq!(c.map(0, 0), c.block(2, 1) + BLOCK);
        assert_eq!(c.map(2, 1) + 16, c.bytes());
        assert_eq!(c.maps_of(1), c.map(1, 0)..c.map(2, 0));
        assert_eq!(c.result(1, 1), c.entry(1, 1) + 8);
        assert!(l.items_per_chunk() * (2 * MulticallEntry::SIZE + 2 * BLOCK + 32) <= CHUNK_BYTES);
    }
}
