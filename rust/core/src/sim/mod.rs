//! A simulated Xen behind the [`Transport`](crate::transport::Transport) seam.
//!
//! [`SimTransport`] owns an arena like the privcmd transport, and its `hypercall` decodes the
//! very same request blocks from it — domctl (docs/xen-interfaces.md §3), sysctl (§4),
//! xen_version (§2) and multicall batches (§10) — and answers as Xen 4.x does, errno cases
//! included. The host state lives in a [`SimHost`] shared through a [`SimHandle`], so a
//! "toolstack" (the Python layer on sim hosts, or tests) can name domains, change vCPU
//! availability, inject faults.
//!
//! * [`spec`] — host descriptions: the built-in host, scale hosts ([`HostSpec`]), checked
//!   against the `MAX_*` caps; `hostfile` — hosts described in TOML;
//! * `host` — the host model, its toolstack side and fault injection ([`SimHost`]);
//! * `hypervisor` — the hypervisor side: decoding requests and answering them;
//! * `transport` — the arena and the [`SimTransport`];
//! * `bitmap` — Xen's byte bitmaps, the simulator's own.
//!
//! Which host is built is chosen by the Python layer's URI dispatcher
//! (`python/xenvcpu/uri.py`, docs/simulator.md): a [`SimBase`] and its parameters.
//! ```
//! use xenvcpu_core::ops::Xen;
//! use xenvcpu_core::sim::{HostSpec, SimBase};
//!
//! let params = [("version".to_string(), "4.10.1".to_string())].into();
//! let mut xen = Xen::open_sim(&HostSpec::build(&SimBase::Default, &params)?)?;
//! assert_eq!(xen.version().minor, 10);
//! assert_eq!(xen.domains()?.len(), 4);
//! # Ok::<(), xenvcpu_core::error::Error>(())
//! ```

mod bitmap;
mod host;
mod hostfile;
mod hypervisor;
pub mod spec;
mod transport;

pub use host::{SimHandle, SimHost, VcpuState};
pub use spec::{DomSpec, Follow, GuestKind, HostSpec, PoolSpec, SimBase};
pub use transport::{lock, SimTransport, SIM_ARENA_BASE};

#[cfg(test)]
mod tests;
