//! xenvcpu core: everything that does not need Python.
//!
//! * [`cpumap`] — the one CPU-map type used everywhere (little-endian bytes, cpulist grammar).
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod cpumap;
