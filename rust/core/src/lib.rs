//! xenvcpu core: everything that does not need Python.
//!
//! * [`cpumap`] — the one CPU-map type used everywhere (little-endian bytes, cpulist grammar).
//! * [`abi`] — Xen structs, constants and interface versions; [`error`] — the one error type.
//! * [`transport`] — the hypercall seam; [`privcmd`] — the real one (the only `unsafe`).
//! * [`sim`] — a simulated Xen behind the same seam; [`ops`] — the API the bindings wrap
//!   ([`ops::Xen`]).
#![forbid(unsafe_op_in_unsafe_fn)]
// `unsafe` lives in the privcmd transport alone (each block with a SAFETY comment,
// enforced by clippy's undocumented_unsafe_blocks); everything else may not use it.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod abi;
pub mod cpumap;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod ops;
#[allow(unsafe_code)]
pub mod privcmd;
pub mod sim;
pub mod transport;
