//! The fuzz targets' bodies (`fuzz/fuzz_targets/*.rs`), here so that the inputs that once
//! found a bug (`fuzz/regressions/`) are replayed by the ordinary tests as well
//! (`rust/core/tests/fuzz_regressions.rs`).
//!
//! Each function takes arbitrary bytes and must neither panic nor abort nor hang on any of
//! them; the assertions inside check what must hold for every input that is accepted.
//! Not a stable API.

use crate::cpumap::CpuMap;
use crate::sim::{HostSpec, SimBase, SimHost, SimTransport, SIM_ARENA_BASE};
use crate::transport::Transport;
use std::collections::BTreeMap;

/// The first two bytes of an input as a number, and the rest.
fn split_u16(data: &[u8]) -> (u16, &[u8]) {
    match data {
        [a, b, rest @ ..] => (u16::from_le_bytes([*a, *b]), rest),
        _ => (0, &[]),
    }
}

/// The cpulist grammar: `[width u16][text]`. Whatever parses prints a canonical form that
/// parses back to the same map, with and without a topology.
pub fn cpulist(data: &[u8]) {
    let (w, rest) = split_u16(data);
    let width = usize::from(w) + 1;
    let text = String::from_utf8_lossy(rest);
    let nodes: Vec<u32> = (0..width).map(|c| (c % 4) as u32).collect();
    for topo in [None, Some(nodes.as_slice())] {
        if let Ok(m) = CpuMap::parse(&text, width, topo) {
            assert_eq!(m.width(), width);
            let again = CpuMap::parse(&m.to_cpulist(), width, None).expect("canonical form");
            assert_eq!(again, m, "{text:?}");
        }
    }
}

/// The byte form: `[width u16 (0 = from the length)][bytes]`. Whatever is accepted packs back
/// to the same bytes (up to the map's length) and unpacks to the same map.
pub fn from_bytes(data: &[u8]) {
    let (w, bytes) = split_u16(data);
    let width = (w != 0).then_some(usize::from(w));
    if let Ok(m) = CpuMap::from_bytes(bytes, width) {
        let packed = m.to_bytes(None).expect("its own length");
        assert_eq!(
            CpuMap::from_bytes(&packed, Some(m.width())).ok(),
            Some(m.clone())
        );
        let n = packed.len().min(bytes.len());
        assert_eq!(packed.get(..n), bytes.get(..n));
    }
}

/// The most vCPUs a fuzzed host is built with (so the fuzzer spends its time on parsing,
/// not on building big hosts; the caps themselves are tested by the spec's own tests).
const BUILD_VCPUS: u64 = 20_000;

fn build(spec: &HostSpec) {
    let total: u64 = spec.domains.iter().map(|d| u64::from(d.vcpus)).sum();
    if total <= BUILD_VCPUS {
        // a spec that validates must build
        SimHost::new(spec).expect("a valid spec builds");
    }
}

/// Simulated-host parameters, as the URI dispatcher hands them over: `[base][k=v&k=v…]`.
pub fn sim_params(data: &[u8]) {
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    let base = if first % 2 == 0 {
        SimBase::Default
    } else {
        SimBase::Scale
    };
    let text = String::from_utf8_lossy(rest);
    let params: BTreeMap<String, String> = text
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Ok(spec) = HostSpec::build(&base, &params) {
        build(&spec);
    }
}

/// A simulated host described in TOML.
pub fn sim_toml(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(spec) = HostSpec::from_toml(text) {
            build(&spec);
        }
    }
}

/// The simulated hypervisor decoding arbitrary request bytes: `[op u8][arg offsets u16 × 2]
/// [arena bytes…]`; the arena is the input, the hypercall names an op and points into it.
pub fn sim_hypercall(data: &[u8]) {
    let [op, a0, a1, b0, b1, arena @ ..] = data else {
        return;
    };
    let op = u64::from(*op % 40); // 35 sysctl, 36 domctl, 13 multicall, 17 xen_version, …
    let arg = |lo: u8, hi: u8| SIM_ARENA_BASE + u64::from(u16::from_le_bytes([lo, hi]));
    let mut t = SimTransport::new(
        SimHost::new(&HostSpec::default_host()).expect("the default host builds"),
    );
    t.reserve(1 << 16).expect("arena");
    let (_, mem) = t.arena();
    let n = arena.len().min(mem.len());
    if let (Some(dst), Some(src)) = (mem.get_mut(..n), arena.get(..n)) {
        dst.copy_from_slice(src);
    }
    let _ = t.hypercall(op, [arg(*a0, *a1), arg(*b0, *b1) & 0xFFFF, 0, 0, 0]);
}
