//! Every input kept in fuzz/seeds and fuzz/regressions (the ones that once found a bug),
//! replayed through the fuzz targets' bodies by the ordinary test run: a bug the fuzzer
//! found cannot come back unnoticed, even where nobody runs `make fuzz`.

use std::path::Path;
use xenvcpu_core::fuzzing;

fn replay(target: &str, body: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut n = 0;
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path
                .file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with('.'))
            {
                continue;
            }
            body(&std::fs::read(&path).unwrap());
            n += 1;
        }
    }
    assert!(n > 0, "no kept inputs for {target}");
}

#[test]
fn cpulist() {
    replay("cpulist", fuzzing::cpulist);
}

#[test]
fn from_bytes() {
    replay("from_bytes", fuzzing::from_bytes);
}

#[test]
fn sim_params() {
    replay("sim_params", fuzzing::sim_params);
}

#[test]
fn sim_toml() {
    replay("sim_toml", fuzzing::sim_toml);
}

#[test]
fn sim_hypercall() {
    replay("sim_hypercall", fuzzing::sim_hypercall);
}

#[test]
fn sim_state() {
    replay("sim_state", fuzzing::sim_state);
}

/// The seeds of `sim_state` are states the default host reads (so the fuzzer starts from
/// inside the format, and a change of the format that would refuse today's files shows).
#[test]
fn sim_state_seeds_are_states_of_the_default_host() {
    use xenvcpu_core::sim::{read_state, HostSpec};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/sim_state");
    let spec = HostSpec::default_host();
    for name in ["default", "changed", "gone"] {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        let host = read_state(&bytes, &spec).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(
            host.domain_names().len(),
            if name == "gone" { 3 } else { 4 }
        );
    }
}

/// Every truncation and many one-byte edits of a state (digits, brackets, quotes, commas,
/// dashes: what turns a state into a hostile one) go through the `sim_state` body: no panic,
/// and whatever is still accepted round-trips.
#[test]
fn sim_state_mutations() {
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/sim_state/changed");
    let bytes = std::fs::read(seed).unwrap();
    for n in (0..bytes.len()).step_by(5) {
        fuzzing::sim_state(&bytes[..n]);
    }
    for (i, b) in b"9-,\"]{0".iter().enumerate() {
        for at in (i..bytes.len()).step_by(11) {
            let mut m = bytes.clone();
            m[at] = *b;
            fuzzing::sim_state(&m);
        }
    }
}
