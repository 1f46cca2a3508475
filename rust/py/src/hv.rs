//! `xenvcpu._native.Hypervisor` and the record types it returns.
//!
//! One `Hypervisor` owns one connection (privcmd fd + hypercall buffers, or a simulated
//! host). Every call releases the GIL for its whole duration, bulk calls included, so other
//! Python threads run while Xen works.
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyList, PyTuple};
use xenvcpu_core::cpumap::CpuMap;
use xenvcpu_core::error::{Error, ErrorKind};
use xenvcpu_core::ops::{self, DomainInfo, Pinning, VcpuInfo, Xen};
use xenvcpu_core::sim::{self, Follow, VcpuState as SimVcpuState};

use crate::cpumap::PyCpuMap;
use crate::errors;

/// A core error as an instance of its `xenvcpu.errors` class.
pub fn core_err(py: Python<'_>, e: &Error) -> PyErr {
    let ctx = errors::Context {
        errno: e.errno,
        domain: e.domain,
        vcpu: e.vcpu,
    };
    errors::make(py, e.kind.class_name(), &e.message, &ctx)
}

pub fn exc_object(py: Python<'_>, e: &Error) -> Py<PyAny> {
    core_err(py, e).into_value(py).into_any()
}

static VCPU_STATES: PyOnceLock<[Py<PyAny>; 4]> = PyOnceLock::new();

/// The `xenvcpu.types.VcpuState` member for a state (members looked up once).
fn vcpu_state(py: Python<'_>, state: ops::VcpuRunState) -> PyResult<Py<PyAny>> {
    let members = VCPU_STATES.get_or_try_init(py, || -> PyResult<[Py<PyAny>; 4]> {
        let cls = PyModule::import(py, "xenvcpu.types")?.getattr("VcpuState")?;
        let get = |n: &str| cls.getattr(n).map(Bound::unbind);
        Ok([
            get("OFFLINE")?,
            get("RUNNING")?,
            get("BLOCKED")?,
            get("RUNNABLE")?,
        ])
    })?;
    let i = match state {
        ops::VcpuRunState::Offline => 0,
        ops::VcpuRunState::Running => 1,
        ops::VcpuRunState::Blocked => 2,
        ops::VcpuRunState::Runnable => 3,
    };
    Ok(members[i].clone_ref(py))
}

/// One vCPU as Xen reported it: getvcpuinfo plus the configured hard and soft affinity.
#[pyclass(module = "xenvcpu._native", name = "VcpuInfo", frozen)]
pub struct PyVcpuInfo {
    pub domain: u32,
    pub v: VcpuInfo,
}

#[pymethods]
impl PyVcpuInfo {
    /// Build one by hand (backends that do not use hypercalls, tests).
    #[new]
    #[pyo3(signature = (domain, number, *, online, blocked, running, cpu_time_ns, cpu, hard_affinity, soft_affinity))]
    #[allow(clippy::too_many_arguments)]
    fn py_new(
        domain: u32,
        number: u32,
        online: bool,
        blocked: bool,
        running: bool,
        cpu_time_ns: u64,
        cpu: Option<u32>,
        hard_affinity: PyRef<'_, PyCpuMap>,
        soft_affinity: PyRef<'_, PyCpuMap>,
    ) -> Self {
        PyVcpuInfo {
            domain,
            v: VcpuInfo {
                number,
                online,
                blocked,
                running,
                cpu_time_ns,
                cpu: if online { cpu } else { None },
                hard: hard_affinity.inner.clone(),
                soft: soft_affinity.inner.clone(),
            },
        }
    }

    /// Domain id.
    #[getter]
    fn domain(&self) -> u32 {
        self.domain
    }
    /// vCPU number.
    #[getter]
    fn number(&self) -> u32 {
        self.v.number
    }
    /// OFFLINE, RUNNING, BLOCKED or RUNNABLE (online, waiting for a pCPU).
    #[getter]
    fn state(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        vcpu_state(py, self.v.state())
    }
    #[getter]
    fn online(&self) -> bool {
        self.v.online
    }
    #[getter]
    fn blocked(&self) -> bool {
        self.v.blocked
    }
    #[getter]
    fn running(&self) -> bool {
        self.v.running
    }
    /// Nanoseconds this vCPU has run.
    #[getter]
    fn cpu_time_ns(&self) -> u64 {
        self.v.cpu_time_ns
    }
    /// The physical CPU it runs or last ran on; None when offline.
    #[getter]
    fn cpu(&self) -> Option<u32> {
        self.v.cpu
    }
    /// Hard affinity as configured (the CPUs it may run on).
    #[getter]
    fn hard_affinity(&self) -> PyCpuMap {
        PyCpuMap::wrap(self.v.hard.clone())
    }
    /// Soft affinity as configured (the CPUs it prefers).
    #[getter]
    fn soft_affinity(&self) -> PyCpuMap {
        PyCpuMap::wrap(self.v.soft.clone())
    }
    fn __repr__(&self) -> String {
        format!(
            "VcpuInfo(domain={}, number={}, state={}, cpu={}, cpu_time_ns={}, hard_affinity='{}', soft_affinity='{}')",
            self.domain,
            self.v.number,
            self.v.state().name(),
            self.v.cpu.map_or("None".to_string(), |c| c.to_string()),
            self.v.cpu_time_ns,
            self.v.hard,
            self.v.soft
        )
    }
}

/// A domain as getdomaininfo reported it at one moment.
#[pyclass(module = "xenvcpu._native", name = "DomainInfo", frozen)]
pub struct PyDomainInfo {
    d: DomainInfo,
}

impl PyDomainInfo {
    pub fn new(d: &DomainInfo) -> Self {
        PyDomainInfo { d: d.clone() }
    }
}

fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = text.bytes().filter(|&b| b != b'-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

#[pymethods]
impl PyDomainInfo {
    /// Build one by hand (backends that do not use hypercalls, tests).
    #[new]
    #[pyo3(signature = (id, uuid, max_vcpus, online_vcpus, *, dying=false, hvm=false, shutdown_code=None, paused=false, running=false, blocked=false, cpu_time_ns=0, cpupool=0, tot_pages=0, max_pages=0))]
    #[allow(clippy::too_many_arguments)]
    fn py_new(
        id: u32,
        uuid: &str,
        max_vcpus: u32,
        online_vcpus: u32,
        dying: bool,
        hvm: bool,
        shutdown_code: Option<u8>,
        paused: bool,
        running: bool,
        blocked: bool,
        cpu_time_ns: u64,
        cpupool: u32,
        tot_pages: u64,
        max_pages: u64,
    ) -> PyResult<Self> {
        let uuid = parse_uuid(uuid).ok_or_else(|| {
            pyo3::exceptions::PyValueError::new_err(format!(
                "uuid {uuid:?}: expected 32 hex digits (dashes allowed)"
            ))
        })?;
        use xenvcpu_core::abi::dominf;
        let flags = [
            (dying, dominf::DYING),
            (hvm, dominf::HVM_GUEST),
            (shutdown_code.is_some(), dominf::SHUTDOWN),
            (paused, dominf::PAUSED),
            (blocked, dominf::BLOCKED),
            (running, dominf::RUNNING),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .fold(0, |f, (_, bit)| f | bit)
            | (u32::from(shutdown_code.unwrap_or(0)) << dominf::SHUTDOWNSHIFT);
        Ok(PyDomainInfo {
            d: DomainInfo {
                id,
                uuid,
                flags,
                dying,
                hvm,
                shutdown: shutdown_code.is_some(),
                shutdown_code,
                paused,
                running,
                blocked,
                max_vcpus,
                nr_online_vcpus: online_vcpus,
                cpu_time_ns,
                cpupool,
                tot_pages,
                max_pages,
            },
        })
    }

    #[getter]
    fn id(&self) -> u32 {
        self.d.id
    }
    /// UUID in the 8-4-4-4-12 form.
    #[getter]
    fn uuid(&self) -> String {
        self.d.uuid_string()
    }
    /// Raw XEN_DOMINF_* flags.
    #[getter]
    fn flags(&self) -> u32 {
        self.d.flags
    }
    #[getter]
    fn dying(&self) -> bool {
        self.d.dying
    }
    #[getter]
    fn hvm(&self) -> bool {
        self.d.hvm
    }
    #[getter]
    fn shutdown(&self) -> bool {
        self.d.shutdown
    }
    #[getter]
    fn shutdown_code(&self) -> Option<u8> {
        self.d.shutdown_code
    }
    #[getter]
    fn paused(&self) -> bool {
        self.d.paused
    }
    #[getter]
    fn running(&self) -> bool {
        self.d.running
    }
    #[getter]
    fn blocked(&self) -> bool {
        self.d.blocked
    }
    /// Number of vCPUs (max_vcpu_id + 1).
    #[getter]
    fn max_vcpus(&self) -> u32 {
        self.d.max_vcpus
    }
    /// vCPUs online at that moment.
    #[getter]
    fn online_vcpus(&self) -> u32 {
        self.d.nr_online_vcpus
    }
    /// Nanoseconds all vCPUs have run.
    #[getter]
    fn cpu_time_ns(&self) -> u64 {
        self.d.cpu_time_ns
    }
    #[getter]
    fn cpupool(&self) -> u32 {
        self.d.cpupool
    }
    #[getter]
    fn tot_pages(&self) -> u64 {
        self.d.tot_pages
    }
    #[getter]
    fn max_pages(&self) -> u64 {
        self.d.max_pages
    }
    fn __repr__(&self) -> String {
        format!(
            "DomainInfo(id={}, uuid='{}', max_vcpus={}, online_vcpus={}, cpupool={})",
            self.d.id,
            self.d.uuid_string(),
            self.d.max_vcpus,
            self.d.nr_online_vcpus,
            self.d.cpupool
        )
    }
}

fn vcpu_list<'py>(py: Python<'py>, domain: u32, v: Vec<VcpuInfo>) -> PyResult<Bound<'py, PyList>> {
    let items: Vec<Bound<'py, PyVcpuInfo>> = v
        .into_iter()
        .map(|v| Bound::new(py, PyVcpuInfo { domain, v }))
        .collect::<PyResult<_>>()?;
    PyList::new(py, items)
}

fn opt_map(m: Option<CpuMap>) -> Option<PyCpuMap> {
    m.map(PyCpuMap::wrap)
}

fn pinning_tuple<'py>(py: Python<'py>, p: Pinning) -> PyResult<Bound<'py, PyTuple>> {
    (opt_map(p.hard), opt_map(p.soft)).into_pyobject(py)
}

/// A connection to a hypervisor: real (`xen:///system`, through privcmd) or simulated (`sim:///...`).
#[pyclass(module = "xenvcpu._native", name = "Hypervisor", frozen)]
pub struct PyHypervisor {
    xen: Mutex<Xen>,
    uri: String,
}

impl PyHypervisor {
    fn lock(&self) -> MutexGuard<'_, Xen> {
        // A panic while holding the lock cannot leave the connection half-updated in a way
        // later calls depend on (each call lays out its buffers afresh), so recover it.
        self.xen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` on the connection with the GIL released.
    fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut Xen) -> ops_result::R<T> + Send,
    ) -> PyResult<T> {
        py.detach(|| f(&mut self.lock()))
            .map_err(|e| core_err(py, &e))
    }

    fn sim_handle(&self, py: Python<'_>) -> PyResult<sim::SimHandle> {
        self.lock().sim().cloned().ok_or_else(|| {
            core_err(
                py,
                &Error::new(
                    ErrorKind::NotSupported,
                    format!("{} is not a simulated host", self.uri),
                ),
            )
        })
    }

    fn sim<T>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut sim::SimHost) -> ops_result::R<T>,
    ) -> PyResult<T> {
        let h = self.sim_handle(py)?;
        let mut host = sim::lock(&h);
        f(&mut host).map_err(|e| core_err(py, &e))
    }
}

mod ops_result {
    pub type R<T> = xenvcpu_core::error::Result<T>;
}

fn map_arg(m: Option<PyRef<'_, PyCpuMap>>) -> Option<CpuMap> {
    m.map(|m| m.inner.clone())
}

#[pymethods]
impl PyHypervisor {
    /// Open `xen:///system` (privcmd) or a `sim:///` host.
    #[new]
    fn py_new(py: Python<'_>, uri: &str) -> PyResult<Self> {
        let owned = uri.to_string();
        let xen = py
            .detach(move || {
                if owned.starts_with("sim:") {
                    Xen::open_sim(&owned)
                } else if owned == "xen:///system" || owned == "xen:///" || owned == "xen://" {
                    Xen::open_privcmd()
                } else {
                    Err(Error::new(
                        ErrorKind::NotSupported,
                        format!(
                            "unknown hypervisor URI {owned:?}: use xen:///system or sim:///default"
                        ),
                    ))
                }
            })
            .map_err(|e| core_err(py, &e))?;
        Ok(PyHypervisor {
            xen: Mutex::new(xen),
            uri: uri.to_string(),
        })
    }

    #[getter]
    fn uri(&self) -> &str {
        &self.uri
    }

    /// "privcmd" or "sim".
    #[getter]
    fn transport(&self) -> &'static str {
        self.lock().transport_name()
    }

    /// (major, minor, domctl interface version, sysctl interface version).
    #[getter]
    fn version(&self) -> (u32, u32, u32, u32) {
        let v = self.lock().version();
        (v.major, v.minor, v.domctl, v.sysctl)
    }

    /// Width of every CPU map of this host: max_cpu_id + 1.
    #[getter]
    fn width(&self) -> usize {
        self.lock().width()
    }

    /// Whether bulk operations go through multicall batches.
    #[getter]
    fn multicall(&self) -> bool {
        self.lock().multicall_enabled()
    }

    /// Turn multicall batching off (one hypercall per domctl, as libxenctrl does) or on.
    #[setter]
    fn set_multicall(&self, on: bool) {
        self.lock().set_batching(on);
    }

    /// physinfo as a dict of its fields.
    fn physinfo<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
        let p = self.with(py, |x| x.physinfo())?;
        let d = pyo3::types::PyDict::new(py);
        d.set_item("threads_per_core", p.threads_per_core)?;
        d.set_item("cores_per_socket", p.cores_per_socket)?;
        d.set_item("nr_cpus", p.nr_cpus)?;
        d.set_item("max_cpu_id", p.max_cpu_id)?;
        d.set_item("nr_nodes", p.nr_nodes)?;
        d.set_item("max_node_id", p.max_node_id)?;
        d.set_item("cpu_khz", p.cpu_khz)?;
        d.set_item("capabilities", p.capabilities)?;
        d.set_item("total_pages", p.total_pages)?;
        d.set_item("free_pages", p.free_pages)?;
        Ok(d)
    }

    /// Online physical CPUs.
    fn online_cpus(&self, py: Python<'_>) -> PyResult<PyCpuMap> {
        Ok(PyCpuMap::wrap(self.with(py, |x| x.online_cpus())?))
    }

    /// Per CPU id: (core, socket, node), or None for a CPU that is not present.
    #[allow(clippy::type_complexity)]
    fn topology(
        &self,
        py: Python<'_>,
    ) -> PyResult<Vec<Option<(Option<u32>, Option<u32>, Option<u32>)>>> {
        let t = self.with(py, |x| x.topology())?;
        Ok(t.into_iter()
            .map(|c| c.map(|c| (c.core, c.socket, c.node)))
            .collect())
    }

    /// NUMA nodes: (id, memsize bytes, memfree bytes, distances).
    #[allow(clippy::type_complexity)]
    fn numa(
        &self,
        py: Python<'_>,
    ) -> PyResult<Vec<(u32, Option<u64>, Option<u64>, Vec<Option<u32>>)>> {
        let n = self.with(py, |x| x.numa())?;
        Ok(n.into_iter()
            .map(|n| (n.id, n.memsize, n.memfree, n.distances))
            .collect())
    }

    /// cpupools: (id, scheduler id, number of domains, CPUs).
    fn cpupools(&self, py: Python<'_>) -> PyResult<Vec<(u32, u32, u32, PyCpuMap)>> {
        let p = self.with(py, |x| x.cpupools())?;
        Ok(p.into_iter()
            .map(|p| (p.id, p.sched_id, p.n_dom, PyCpuMap::wrap(p.cpus)))
            .collect())
    }

    /// Every domain (getdomaininfolist, paged).
    fn domains(&self, py: Python<'_>) -> PyResult<Vec<PyDomainInfo>> {
        let d = self.with(py, |x| x.domains())?;
        Ok(d.iter().map(PyDomainInfo::new).collect())
    }

    /// One domain by id (exact: never another domain's record).
    fn domain(&self, py: Python<'_>, domid: u32) -> PyResult<PyDomainInfo> {
        Ok(PyDomainInfo::new(&self.with(py, |x| x.domain(domid))?))
    }

    /// Every vCPU of a domain (batched).
    fn vcpus<'py>(&self, py: Python<'py>, domid: u32) -> PyResult<Bound<'py, PyList>> {
        let v = self.with(py, |x| x.vcpus(domid))?;
        vcpu_list(py, domid, v)
    }

    /// One vCPU.
    fn vcpu(&self, py: Python<'_>, domid: u32, vcpu: u32) -> PyResult<PyVcpuInfo> {
        let v = self.with(py, |x| x.vcpu(domid, vcpu))?;
        Ok(PyVcpuInfo { domain: domid, v })
    }

    /// Every vCPU of every domain in one batched pass, kept columnar (see `Snapshot`).
    fn snapshot(&self, py: Python<'_>) -> PyResult<crate::snapshot::PySnapshot> {
        let width = self.lock().width();
        let all = self.with(py, |x| x.snapshot())?;
        Ok(crate::snapshot::PySnapshot::new(width, all))
    }

    /// Pin one vCPU; returns the effective (hard, soft) maps Xen applied (None: not set).
    #[pyo3(signature = (domid, vcpu, hard=None, soft=None, force=false))]
    fn pin<'py>(
        &self,
        py: Python<'py>,
        domid: u32,
        vcpu: u32,
        hard: Option<PyRef<'_, PyCpuMap>>,
        soft: Option<PyRef<'_, PyCpuMap>>,
        force: bool,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let (h, s) = (map_arg(hard), map_arg(soft));
        let p = self.with(py, |x| x.pin(domid, vcpu, h.as_ref(), s.as_ref(), force))?;
        pinning_tuple(py, p)
    }

    /// Pin every vCPU of a domain (validated first, then batched):
    /// [(vcpu, (hard, soft) or the exception for that vCPU)].
    #[pyo3(signature = (domid, hard=None, soft=None, force=false))]
    fn pin_all<'py>(
        &self,
        py: Python<'py>,
        domid: u32,
        hard: Option<PyRef<'_, PyCpuMap>>,
        soft: Option<PyRef<'_, PyCpuMap>>,
        force: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let (h, s) = (map_arg(hard), map_arg(soft));
        let all = self.with(py, |x| x.pin_all(domid, h.as_ref(), s.as_ref(), force))?;
        let mut out = Vec::with_capacity(all.len());
        for (v, r) in all {
            let item: Py<PyAny> = match r {
                Ok(p) => pinning_tuple(py, p)?.into_any().unbind(),
                Err(e) => exc_object(py, &e),
            };
            out.push((v, item).into_pyobject(py)?);
        }
        PyList::new(py, out)
    }

    /// Benchmark hook: `rounds` snapshots in a pure-Rust loop over this connection;
    /// returns (vCPUs per snapshot, seconds in total).
    fn _bench_snapshot(&self, py: Python<'_>, rounds: u32) -> PyResult<(usize, f64)> {
        let (n, t) = self.with(py, |x| ops::bench_snapshot(x, rounds))?;
        Ok((n, t.as_secs_f64()))
    }

    // ---- the simulated host's toolstack side (names, pools, vCPU availability, faults) ----

    /// Whether this is a simulated host.
    #[getter]
    fn is_sim(&self) -> bool {
        self.lock().sim().is_some()
    }

    /// Simulated host: [(domid, name)].
    fn sim_domain_names(&self, py: Python<'_>) -> PyResult<Vec<(u32, String)>> {
        self.sim(py, |h| Ok(h.domain_names()))
    }

    /// Simulated host: a cpupool's name.
    fn sim_pool_name(&self, py: Python<'_>, pool: u32) -> PyResult<Option<String>> {
        self.sim(py, |h| Ok(h.pool_name(pool)))
    }

    /// Simulated host: write the `availability` of every vCPU (the toolstack's xenstore write).
    fn sim_set_availability(&self, py: Python<'_>, domid: u32, online: Vec<bool>) -> PyResult<()> {
        self.sim(py, |h| h.set_availability(domid, &online))
    }

    /// Simulated host: the `availability` nodes of a domain.
    fn sim_availability(&self, py: Python<'_>, domid: u32) -> PyResult<Option<Vec<bool>>> {
        self.sim(py, |h| Ok(h.availability(domid)))
    }

    /// Simulated host: how guests follow availability changes (seconds; None = never).
    #[pyo3(signature = (delay=None))]
    fn sim_set_follow(&self, py: Python<'_>, delay: Option<f64>) -> PyResult<()> {
        let f = match delay {
            Some(s) if s >= 0.0 && s.is_finite() => Follow::After(Duration::from_secs_f64(s)),
            Some(s) => {
                return Err(core_err(
                    py,
                    &Error::new(ErrorKind::Other, format!("follow delay {s} must be >= 0")),
                ))
            }
            None => Follow::Never,
        };
        self.sim(py, |h| {
            h.set_follow(f);
            Ok(())
        })
    }

    /// Simulated host: stop or restart the clock.
    fn sim_freeze_clock(&self, py: Python<'_>, frozen: bool) -> PyResult<()> {
        self.sim(py, |h| {
            h.freeze_clock(frozen);
            Ok(())
        })
    }

    /// Simulated host: advance the clock by `seconds`.
    fn sim_advance(&self, py: Python<'_>, seconds: f64) -> PyResult<()> {
        self.sim(py, |h| {
            h.advance(Duration::from_secs_f64(seconds.max(0.0)));
            Ok(())
        })
    }

    /// Simulated host: fail the n-th domctl/sysctl from now with `errno`.
    fn sim_fail_nth(&self, py: Python<'_>, n: u64, errno: i32) -> PyResult<()> {
        self.sim(py, |h| {
            h.fail_nth(n, errno);
            Ok(())
        })
    }

    /// Simulated host: remove a domain just before the n-th domctl/sysctl from now.
    fn sim_remove_domain_at(&self, py: Python<'_>, n: u64, domid: u16) -> PyResult<()> {
        self.sim(py, |h| {
            h.remove_domain_at(n, domid);
            Ok(())
        })
    }

    /// Simulated host: mark a domain dying.
    fn sim_set_dying(&self, py: Python<'_>, domid: u32, dying: bool) -> PyResult<()> {
        self.sim(py, |h| h.set_dying(domid, dying))
    }

    /// Simulated host: set or clear a pin override (Xen then answers EBUSY).
    fn sim_set_pin_override(
        &self,
        py: Python<'_>,
        domid: u32,
        vcpu: u32,
        on: bool,
    ) -> PyResult<()> {
        self.sim(py, |h| h.set_pin_override(domid, vcpu, on))
    }

    /// Simulated host: make the multicall hypercall fail with `errno` (None: accept).
    #[pyo3(signature = (errno=None))]
    fn sim_refuse_multicall(&self, py: Python<'_>, errno: Option<i32>) -> PyResult<()> {
        self.sim(py, |h| {
            h.refuse_multicall(errno);
            Ok(())
        })
    }

    /// Simulated host: pretend to be another Xen release.
    fn sim_set_release(&self, py: Python<'_>, major: u32, minor: u32, patch: u32) -> PyResult<()> {
        self.sim(py, |h| {
            h.set_release(major, minor, patch);
            Ok(())
        })
    }

    /// Simulated host: set an online vCPU's run state ("running", "blocked", "runnable").
    fn sim_set_vcpu_state(
        &self,
        py: Python<'_>,
        domid: u32,
        vcpu: u32,
        state: &str,
    ) -> PyResult<()> {
        let s = match state {
            "running" => SimVcpuState::Running,
            "blocked" => SimVcpuState::Blocked,
            "runnable" => SimVcpuState::Runnable,
            other => {
                return Err(core_err(
                    py,
                    &Error::new(ErrorKind::Other, format!("unknown vCPU state {other:?}")),
                ))
            }
        };
        self.sim(py, |h| h.set_vcpu_state(domid, vcpu, s))
    }

    /// Simulated host: hypercalls issued so far (a multicall batch counts once).
    fn sim_hypercalls(&self, py: Python<'_>) -> PyResult<u64> {
        self.sim(py, |h| Ok(h.hypercalls()))
    }

    /// Simulated host: domctl/sysctl operations so far (batch entries count one each).
    fn sim_ops(&self, py: Python<'_>) -> PyResult<u64> {
        self.sim(py, |h| Ok(h.ops()))
    }

    fn __repr__(&self) -> String {
        format!("Hypervisor({:?})", self.uri)
    }
}
