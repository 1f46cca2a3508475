//! The record classes the hypervisor returns: `VcpuInfo` and `DomainInfo`.
//!
//! Both are frozen snapshots of what Xen reported; they can also be built from Python
//! (the pure-Python backends and tests make them by hand).
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyList;
use xenvcpu_core::cpumap::CpuMap;
use xenvcpu_core::ops::{self, DomainInfo, VcpuInfo};

use crate::cpumap::PyCpuMap;

static VCPU_STATES: PyOnceLock<[Py<PyAny>; 4]> = PyOnceLock::new();

/// The `xenvcpu.types.VcpuState` member for a state (members looked up once).
pub fn vcpu_state(py: Python<'_>, state: ops::VcpuRunState) -> PyResult<Py<PyAny>> {
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
    Ok(members[usize::from(state_code(state))].clone_ref(py))
}

/// The number of a state, as `VcpuState` and the snapshot's "state" column use it.
pub fn state_code(state: ops::VcpuRunState) -> u8 {
    match state {
        ops::VcpuRunState::Offline => 0,
        ops::VcpuRunState::Running => 1,
        ops::VcpuRunState::Blocked => 2,
        ops::VcpuRunState::Runnable => 3,
    }
}

/// Python `CpuMap` objects for the maps of a bulk result, one per distinct map: the core
/// shares the storage of equal maps, and vCPUs whose maps share storage get the same
/// (immutable) object, so a snapshot of thousands of vCPUs makes a handful of map objects.
#[derive(Default)]
pub struct MapObjects {
    recent: Vec<(CpuMap, Py<PyCpuMap>)>,
}

impl MapObjects {
    /// How many distinct maps are remembered.
    const KEEP: usize = 8;

    /// Start with an object a caller already holds: maps sharing its storage get it back.
    pub fn seed(&mut self, py: Python<'_>, obj: &Bound<'_, PyCpuMap>) {
        let m = obj.get().inner.clone();
        if !self.recent.iter().any(|(k, _)| k.shares_words(&m)) {
            if self.recent.len() == Self::KEEP {
                self.recent.pop();
            }
            self.recent.insert(0, (m, obj.clone().unbind()));
        }
        let _ = py;
    }

    /// The Python object for `m`: an existing one if `m` shares its storage, else a new one.
    pub fn get(&mut self, py: Python<'_>, m: &CpuMap) -> PyResult<Py<PyCpuMap>> {
        if let Some(i) = self.recent.iter().position(|(k, _)| k.shares_words(m)) {
            let obj = self.recent[i].1.clone_ref(py);
            if i != 0 {
                self.recent[..=i].rotate_right(1);
            }
            return Ok(obj);
        }
        let obj = Py::new(py, PyCpuMap::wrap(m.clone()))?;
        if self.recent.len() == Self::KEEP {
            self.recent.pop();
        }
        self.recent.insert(0, (m.clone(), obj.clone_ref(py)));
        Ok(obj)
    }
}

/// One vCPU as Xen reported it: getvcpuinfo plus the configured hard and soft affinity.
///
/// The maps are held as Python objects, made when the record is made and shared with
/// every other record of the same result whose map is the same (see [`MapObjects`]);
/// reading one is a plain struct-member read.
#[pyclass(module = "xenvcpu._native", name = "VcpuInfo", frozen)]
pub struct PyVcpuInfo {
    domain: u32,
    number: u32,
    online: bool,
    blocked: bool,
    running: bool,
    cpu_time_ns: u64,
    cpu: Option<u32>,
    /// Hard affinity as configured (the CPUs it may run on).
    #[pyo3(get, name = "hard_affinity")]
    hard: Py<PyCpuMap>,
    /// Soft affinity as configured (the CPUs it prefers).
    #[pyo3(get, name = "soft_affinity")]
    soft: Py<PyCpuMap>,
}

impl PyVcpuInfo {
    /// The record of a core result, its maps taken from (or added to) `maps`.
    pub fn from_core(
        py: Python<'_>,
        domain: u32,
        v: &VcpuInfo,
        maps: &mut MapObjects,
    ) -> PyResult<Self> {
        Ok(PyVcpuInfo {
            domain,
            number: v.number,
            online: v.online,
            blocked: v.blocked,
            running: v.running,
            cpu_time_ns: v.cpu_time_ns,
            cpu: v.cpu,
            hard: maps.get(py, &v.hard)?,
            soft: maps.get(py, &v.soft)?,
        })
    }

    fn run_state(&self) -> ops::VcpuRunState {
        ops::VcpuRunState::from_flags(self.online, self.running, self.blocked)
    }
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
        hard_affinity: Bound<'_, PyCpuMap>,
        soft_affinity: Bound<'_, PyCpuMap>,
    ) -> Self {
        // CpuMap objects are immutable, so the ones given are kept as they are.
        PyVcpuInfo {
            domain,
            number,
            online,
            blocked,
            running,
            cpu_time_ns,
            cpu: if online { cpu } else { None },
            hard: hard_affinity.unbind(),
            soft: soft_affinity.unbind(),
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
        self.number
    }
    /// OFFLINE, RUNNING, BLOCKED or RUNNABLE (online, waiting for a pCPU).
    #[getter]
    fn state(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        vcpu_state(py, self.run_state())
    }
    #[getter]
    fn online(&self) -> bool {
        self.online
    }
    #[getter]
    fn blocked(&self) -> bool {
        self.blocked
    }
    #[getter]
    fn running(&self) -> bool {
        self.running
    }
    /// Nanoseconds this vCPU has run.
    #[getter]
    fn cpu_time_ns(&self) -> u64 {
        self.cpu_time_ns
    }
    /// The physical CPU it runs or last ran on; None when offline.
    #[getter]
    fn cpu(&self) -> Option<u32> {
        self.cpu
    }
    fn __repr__(&self) -> String {
        format!(
            "VcpuInfo(domain={}, number={}, state={}, cpu={}, cpu_time_ns={}, hard_affinity='{}', soft_affinity='{}')",
            self.domain,
            self.number,
            self.run_state().name(),
            self.cpu.map_or("None".to_string(), |c| c.to_string()),
            self.cpu_time_ns,
            self.hard.get().inner,
            self.soft.get().inner
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

    /// The core's record.
    pub fn core(&self) -> &DomainInfo {
        &self.d
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

pub fn vcpu_list<'py>(
    py: Python<'py>,
    domain: u32,
    v: Vec<VcpuInfo>,
) -> PyResult<Bound<'py, PyList>> {
    let mut maps = MapObjects::default();
    let items: Vec<Bound<'py, PyVcpuInfo>> = v
        .iter()
        .map(|v| Bound::new(py, PyVcpuInfo::from_core(py, domain, v, &mut maps)?))
        .collect::<PyResult<_>>()?;
    PyList::new(py, items)
}
