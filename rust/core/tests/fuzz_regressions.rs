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
