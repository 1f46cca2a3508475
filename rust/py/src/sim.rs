//! `xenvcpu._native.SimControl`: the toolstack and test side of a simulated host.
//!
//! The public, documented face is `xenvcpu.sim.SimControl` (Python), which wraps this class
//! and checks its arguments; this one holds the shared handle of the simulated host. Like
//! the hypervisor calls, every method takes the host's lock with the GIL released.
use std::time::Duration;

use pyo3::prelude::*;
use xenvcpu_core::error::{Error, ErrorKind, Result as CoreResult};
use xenvcpu_core::sim::{self, Follow, SimHandle, SimHost, VcpuState};

use crate::errors::core_err;

/// The control side of one simulated host (shared by every connection to it).
#[pyclass(module = "xenvcpu._native", name = "SimControl", frozen)]
pub struct PySimControl {
    host: SimHandle,
}

impl PySimControl {
    pub fn new(host: SimHandle) -> Self {
        PySimControl { host }
    }

    /// Run `f` on the host with the GIL released.
    fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut SimHost) -> CoreResult<T> + Send,
    ) -> PyResult<T> {
        py.detach(|| f(&mut sim::lock(&self.host)))
            .map_err(|e| core_err(py, &e))
    }
}

fn duration_arg(what: &str, s: f64) -> CoreResult<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| {
        Error::new(
            ErrorKind::Other,
            format!("{what} {s} s: expected a finite number of seconds, 0 or more"),
        )
    })
}

#[pymethods]
impl PySimControl {
    /// [(domid, name)] of every domain, by id.
    fn domain_names(&self, py: Python<'_>) -> PyResult<Vec<(u32, String)>> {
        self.with(py, |h| Ok(h.domain_names()))
    }

    /// What the toolstack records of a domain's kind: (the `/libxl/<domid>/type` value or
    /// None, whether a device model is registered); None for an unknown domain.
    fn guest_record(
        &self,
        py: Python<'_>,
        domid: u32,
    ) -> PyResult<Option<(Option<&'static str>, bool)>> {
        self.with(py, |h| Ok(h.guest_record(domid)))
    }

    /// A cpupool's name.
    fn pool_name(&self, py: Python<'_>, pool: u32) -> PyResult<Option<String>> {
        self.with(py, |h| Ok(h.pool_name(pool)))
    }

    /// Write the `availability` of every vCPU (the toolstack's xenstore write).
    fn set_availability(&self, py: Python<'_>, domid: u32, online: Vec<bool>) -> PyResult<()> {
        self.with(py, |h| h.set_availability(domid, &online))
    }

    /// The `availability` nodes of a domain, or None for an unknown domain.
    fn availability(&self, py: Python<'_>, domid: u32) -> PyResult<Option<Vec<bool>>> {
        self.with(py, |h| Ok(h.availability(domid)))
    }

    /// How guests follow availability changes: after `delay` seconds, or never (None).
    #[pyo3(signature = (delay=None))]
    fn set_follow(&self, py: Python<'_>, delay: Option<f64>) -> PyResult<()> {
        let follow = match delay {
            Some(s) => {
                Follow::After(duration_arg("follow delay", s).map_err(|e| core_err(py, &e))?)
            }
            None => Follow::Never,
        };
        self.with(py, |h| {
            h.set_follow(follow);
            Ok(())
        })
    }

    /// Stop (True) or restart (False) the clock.
    fn freeze_clock(&self, py: Python<'_>, frozen: bool) -> PyResult<()> {
        self.with(py, |h| {
            h.freeze_clock(frozen);
            Ok(())
        })
    }

    /// Move the clock forward by `seconds`.
    fn advance(&self, py: Python<'_>, seconds: f64) -> PyResult<()> {
        let by = duration_arg("advance by", seconds).map_err(|e| core_err(py, &e))?;
        self.with(py, |h| {
            h.advance(by);
            Ok(())
        })
    }

    /// Fail the n-th domctl/sysctl from now (1 = the next) with `errno`.
    fn fail_nth(&self, py: Python<'_>, n: u64, errno: i32) -> PyResult<()> {
        self.with(py, |h| {
            h.fail_nth(n, errno);
            Ok(())
        })
    }

    /// Remove a domain just before the n-th domctl/sysctl from now.
    fn remove_domain_at(&self, py: Python<'_>, n: u64, domid: u16) -> PyResult<()> {
        self.with(py, |h| {
            h.remove_domain_at(n, domid);
            Ok(())
        })
    }

    /// Mark a domain dying (or not).
    fn set_dying(&self, py: Python<'_>, domid: u32, dying: bool) -> PyResult<()> {
        self.with(py, |h| h.set_dying(domid, dying))
    }

    /// Set or clear a temporary pin override (Xen then answers EBUSY to hard pins).
    fn set_pin_override(&self, py: Python<'_>, domid: u32, vcpu: u32, on: bool) -> PyResult<()> {
        self.with(py, |h| h.set_pin_override(domid, vcpu, on))
    }

    /// Make the multicall hypercall fail with `errno` (None: accept batches again).
    #[pyo3(signature = (errno=None))]
    fn refuse_multicall(&self, py: Python<'_>, errno: Option<i32>) -> PyResult<()> {
        self.with(py, |h| {
            h.refuse_multicall(errno);
            Ok(())
        })
    }

    /// Pretend to be another Xen release (an unknown one refuses every domctl/sysctl).
    fn set_release(&self, py: Python<'_>, major: u32, minor: u32, patch: u32) -> PyResult<()> {
        self.with(py, |h| {
            h.set_release(major, minor, patch);
            Ok(())
        })
    }

    /// Set an online vCPU's run state: "running", "blocked" or "runnable".
    fn set_vcpu_state(&self, py: Python<'_>, domid: u32, vcpu: u32, state: &str) -> PyResult<()> {
        let s = match state {
            "running" => VcpuState::Running,
            "blocked" => VcpuState::Blocked,
            "runnable" => VcpuState::Runnable,
            other => {
                let e = Error::new(
                    ErrorKind::Other,
                    format!("unknown vCPU state {other:?}: expected running, blocked or runnable"),
                );
                return Err(core_err(py, &e));
            }
        };
        self.with(py, |h| h.set_vcpu_state(domid, vcpu, s))
    }

    /// Hypercalls issued so far (a multicall batch counts once).
    fn hypercalls(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |h| Ok(h.hypercalls()))
    }

    /// domctl/sysctl operations so far (each entry of a batch counts once).
    fn ops(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |h| Ok(h.ops()))
    }

    fn __repr__(&self) -> String {
        "SimControl()".to_string()
    }
}
