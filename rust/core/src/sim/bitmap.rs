//! CPU bitmaps in Xen's byte form (`ceil(nr_cpu_ids / 8)` bytes, CPU n = bit n % 8 of byte
//! n / 8), as the simulated hypervisor keeps them.
//!
//! These helpers are the simulator's own on purpose: the simulator is the reference the
//! product's `CpuMap` (crate::cpumap) is tested against, so it must not share that code.

use crate::abi;

pub(super) fn nbytes(nr_cpu_ids: u32) -> usize {
    abi::bitmap_bytes(nr_cpu_ids)
}

pub(super) fn map_from(cpus: &[u32], nr: u32) -> Vec<u8> {
    let mut m = vec![0u8; nbytes(nr)];
    for &c in cpus {
        if c < nr {
            m[(c / 8) as usize] |= 1 << (c % 8);
        }
    }
    m
}

pub(super) fn has(m: &[u8], c: u32) -> bool {
    m.get((c / 8) as usize)
        .is_some_and(|b| b & (1 << (c % 8)) != 0)
}

pub(super) fn and(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(x, y)| x & y).collect()
}

pub(super) fn is_empty(m: &[u8]) -> bool {
    m.iter().all(|&b| b == 0)
}

pub(super) fn first(m: &[u8]) -> Option<u32> {
    m.iter()
        .position(|&b| b != 0)
        .map(|i| i as u32 * 8 + m[i].trailing_zeros())
}

pub(super) fn nth_set(m: &[u8], n: u32) -> Option<u32> {
    let count: u32 = m.iter().map(|b| b.count_ones()).sum();
    if count == 0 {
        return None;
    }
    let mut k = n % count;
    for (i, &b) in m.iter().enumerate() {
        let c = b.count_ones();
        if k < c {
            let mut bb = b;
            for _ in 0..k {
                bb &= bb - 1;
            }
            return Some(i as u32 * 8 + bb.trailing_zeros());
        }
        k -= c;
    }
    None
}
