#![no_main]
//! Fuzz target: xenvcpu_core::fuzzing::sim_params (see that module).
libfuzzer_sys::fuzz_target!(|data: &[u8]| xenvcpu_core::fuzzing::sim_params(data));
