//! xenvcpu core: everything that does not need Python.
//!
//! * [`cpumap`] — the one CPU-map type used everywhere (little-endian bytes, cpulist grammar).
//! * [`abi`] — Xen structs, constants and interface versions; [`error`] — the one error type.
//! * [`transport`] — the hypercall seam; [`privcmd`] — the real one (the only `unsafe`).
//! * [`sim`] — a simulated Xen behind the same seam; [`ops`] — the API the bindings wrap
//!   ([`ops::Xen`]).
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod abi;
pub mod cpumap;
pub mod error;
pub mod ops;
pub mod privcmd;
pub mod sim;
pub mod transport;
