//! `xenvcpu._native.Hypervisor`: one connection to a hypervisor.
//!
//! One `Hypervisor` owns one connection (privcmd fd + hypercall buffers, or a simulated
//! host). Every call releases the GIL for its whole duration, bulk calls included, so other
//! Python threads run while Xen works. What is fixed when the connection opens (transport,
//! interface version, map width, the simulated host's handle) is kept in plain fields; only
//! calls that release the GIL take the connection's lock, so a thread holding the GIL never
//! waits for a thread that needs the GIL back.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple, PyType};
use xenvcpu_core::cpumap::CpuMap;
use xenvcpu_core::error::{Error, ErrorKind, Result as CoreResult};
use xenvcpu_core::ops::{self, PinRequest, Pinning, Xen};
use xenvcpu_core::sim::{HostSpec, SimBase, SimHandle};

use crate::cpumap::PyCpuMap;
use crate::errors::{core_err, exc_object};
use crate::records::{vcpu_list, MapObjects, PyDomainInfo, PyVcpuInfo};
use crate::sim::PySimControl;

/// (hard, soft) as Xen applied them. A map Xen applied unchanged comes back as the very
/// object that was asked for, and equal maps as one object (see [`MapObjects`]).
fn pinning_tuple<'py>(
    py: Python<'py>,
    p: Pinning,
    maps: &mut MapObjects,
) -> PyResult<Bound<'py, PyTuple>> {
    let mut obj = |m: Option<CpuMap>| m.map(|m| maps.get(py, &m)).transpose();
    (obj(p.hard)?, obj(p.soft)?).into_pyobject(py)
}

fn map_arg(m: &Option<Bound<'_, PyCpuMap>>) -> Option<CpuMap> {
    m.as_ref().map(|m| m.get().inner.clone())
}

/// The map objects of a pin's results, starting with the requested ones: the core shares
/// an unchanged effective map's storage with the request, so the request's object is
/// found for it.
fn pin_objects(py: Python<'_>, requested: [&Option<Bound<'_, PyCpuMap>>; 2]) -> MapObjects {
    let mut maps = MapObjects::default();
    for m in requested.into_iter().flatten() {
        maps.seed(py, m);
    }
    maps
}

/// A connection to a hypervisor: the real one (privcmd) or a simulated host.
#[pyclass(module = "xenvcpu._native", name = "Hypervisor", frozen)]
pub struct PyHypervisor {
    xen: Mutex<Xen>,
    transport: &'static str,
    version: (u32, u32, u32, u32),
    width: usize,
    sim: Option<SimHandle>,
}

impl PyHypervisor {
    fn open(py: Python<'_>, open: impl FnOnce() -> CoreResult<Xen> + Send) -> PyResult<Self> {
        let xen = py.detach(open).map_err(|e| core_err(py, &e))?;
        let v = xen.version();
        Ok(PyHypervisor {
            transport: xen.transport_name(),
            version: (v.major, v.minor, v.domctl, v.sysctl),
            width: xen.width(),
            sim: xen.sim().cloned(),
            xen: Mutex::new(xen),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Xen> {
        // A panic while holding the lock cannot leave the connection half-updated in a way
        // later calls depend on (each call lays out its buffers afresh), so recover it.
        self.xen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` on the connection with the GIL released (the only way to the lock).
    fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut Xen) -> CoreResult<T> + Send,
    ) -> PyResult<T> {
        py.detach(|| {
            let mut x = self.lock();
            let r = f(&mut x);
            // a lasting simulated host's state file failing is its own typed error
            match x.take_transport_error() {
                Some(e) => Err(e),
                None => r,
            }
        })
        .map_err(|e| core_err(py, &e))
    }
}

/// One request of `Hypervisor.pin_many`: (domid, vcpu, hard or None, soft or None).
type PinArg<'a> = (
    u32,
    u32,
    Option<Bound<'a, PyCpuMap>>,
    Option<Bound<'a, PyCpuMap>>,
);

#[pymethods]
impl PyHypervisor {
    /// The local Xen hypervisor through `/dev/xen/privcmd` (root in the control domain).
    #[staticmethod]
    fn privcmd(py: Python<'_>) -> PyResult<Self> {
        Self::open(py, Xen::open_privcmd)
    }

    /// A simulated host: `base` is "default" (the built-in host), "scale" (a host built
    /// from `params` such as cpus= and domains=) or "toml" (the file at `path`); `params`
    /// are the host's parameters (version=, offline=, delay_ms=, follow=, ...). With
    /// `state` (an absolute path) the host lasts in that state file: every process that
    /// opens it sees one host.
    #[staticmethod]
    #[pyo3(signature = (base, params, path=None, state=None))]
    fn simulated(
        py: Python<'_>,
        base: &str,
        params: BTreeMap<String, String>,
        path: Option<PathBuf>,
        state: Option<PathBuf>,
    ) -> PyResult<Self> {
        let base = match (base, path) {
            ("default", None) => SimBase::Default,
            ("scale", None) => SimBase::Scale,
            ("toml", Some(p)) => SimBase::Toml(p),
            (other, p) => {
                let e = Error::new(
                    ErrorKind::Other,
                    format!(
                        "simulated host base {other:?} (path {p:?}): expected \"default\", \
                         \"scale\" or \"toml\" with a path"
                    ),
                );
                return Err(core_err(py, &e));
            }
        };
        Self::open(py, move || {
            let spec = HostSpec::build(&base, &params)?;
            match &state {
                Some(path) => Xen::open_sim_state(&spec, path),
                None => Xen::open_sim(&spec),
            }
        })
    }

    /// "privcmd" or "sim".
    #[getter]
    fn transport(&self) -> &'static str {
        self.transport
    }

    /// (major, minor, domctl interface version, sysctl interface version).
    #[getter]
    fn version(&self) -> (u32, u32, u32, u32) {
        self.version
    }

    /// Width of every CPU map of this host: max_cpu_id + 1.
    #[getter]
    fn width(&self) -> usize {
        self.width
    }

    /// The simulated host's control, or None on a real hypervisor.
    fn sim_control(&self) -> Option<PySimControl> {
        self.sim.clone().map(PySimControl::new)
    }

    /// Whether bulk operations go through multicall batches.
    #[getter]
    fn multicall(&self, py: Python<'_>) -> PyResult<bool> {
        self.with(py, |x| Ok(x.multicall_enabled()))
    }

    /// Turn multicall batching off (one hypercall per domctl, as libxenctrl does) or on.
    #[setter]
    fn set_multicall(&self, py: Python<'_>, on: bool) -> PyResult<()> {
        self.with(py, |x| {
            x.set_batching(on);
            Ok(())
        })
    }

    /// physinfo as a dict of its fields.
    fn physinfo<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let p = self.with(py, |x| x.physinfo())?;
        let d = PyDict::new(py);
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
        PyVcpuInfo::from_core(py, domid, &v, &mut MapObjects::default())
    }

    /// Every vCPU of every domain in one batched pass, kept columnar (see `Snapshot`).
    fn snapshot(&self, py: Python<'_>) -> PyResult<crate::snapshot::PySnapshot> {
        let all = self.with(py, |x| x.snapshot())?;
        Ok(crate::snapshot::PySnapshot::new(self.width, all))
    }

    /// Pin one vCPU; returns the effective (hard, soft) maps Xen applied (None: not set).
    #[pyo3(signature = (domid, vcpu, hard=None, soft=None, force=false))]
    fn pin<'py>(
        &self,
        py: Python<'py>,
        domid: u32,
        vcpu: u32,
        hard: Option<Bound<'_, PyCpuMap>>,
        soft: Option<Bound<'_, PyCpuMap>>,
        force: bool,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let (h, s) = (map_arg(&hard), map_arg(&soft));
        let p = self.with(py, |x| x.pin(domid, vcpu, h.as_ref(), s.as_ref(), force))?;
        pinning_tuple(py, p, &mut pin_objects(py, [&hard, &soft]))
    }

    /// Pin every vCPU of a domain (validated first, then batched):
    /// [(vcpu, (hard, soft) or the exception for that vCPU)].
    #[pyo3(signature = (domid, hard=None, soft=None, force=false))]
    fn pin_all<'py>(
        &self,
        py: Python<'py>,
        domid: u32,
        hard: Option<Bound<'_, PyCpuMap>>,
        soft: Option<Bound<'_, PyCpuMap>>,
        force: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let (h, s) = (map_arg(&hard), map_arg(&soft));
        let all = self.with(py, |x| x.pin_all(domid, h.as_ref(), s.as_ref(), force))?;
        let mut maps = pin_objects(py, [&hard, &soft]);
        let mut out = Vec::with_capacity(all.len());
        for (v, r) in all {
            let item: Py<PyAny> = match r {
                Ok(p) => pinning_tuple(py, p, &mut maps)?.into_any().unbind(),
                Err(e) => exc_object(py, &e),
            };
            out.push((v, item).into_pyobject(py)?);
        }
        PyList::new(py, out)
    }

    /// `pin_all` with the results as records, for `Domain.pin_all`: returns (records,
    /// failures, narrowed). Each vCPU Xen pinned becomes `record(domid, vcpu, hard, soft,
    /// effective hard, effective soft)`, built as `tuple.__new__(record, fields)` (record is
    /// a NamedTuple class); failures are (vcpu, exception); narrowed lists the indices of the
    /// records whose effective maps differ from the requested ones. Everything a Python loop
    /// over the results did, without one. With `known` (the domain's DomainInfo as read
    /// before), the domain is read again in the pins' own batch instead of by a hypercall
    /// first (core `pin_all_known`).
    #[pyo3(signature = (domid, hard, soft, force, record, known=None))]
    #[allow(clippy::too_many_arguments)]
    fn _pin_all_records<'py>(
        &self,
        py: Python<'py>,
        domid: u32,
        hard: Option<Bound<'py, PyCpuMap>>,
        soft: Option<Bound<'py, PyCpuMap>>,
        force: bool,
        record: Bound<'py, PyType>,
        known: Option<PyRef<'py, PyDomainInfo>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let (h, s) = (map_arg(&hard), map_arg(&soft));
        let known = known.map(|k| k.core().clone());
        if let Some(k) = &known {
            if k.id != domid {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "known is domain {}, not {domid}",
                    k.id
                )));
            }
        }
        let all = self.with(py, |x| match &known {
            Some(k) => x.pin_all_known(k, h.as_ref(), s.as_ref(), force),
            None => x.pin_all(domid, h.as_ref(), s.as_ref(), force),
        })?;
        let mut maps = pin_objects(py, [&hard, &soft]);
        let tuple_new = py.get_type::<PyTuple>().getattr("__new__")?;
        let none = || py.None().into_bound(py);
        let asked = |m: &Option<Bound<'py, PyCpuMap>>| m.clone().map_or_else(none, Bound::into_any);
        let (asked_h, asked_s) = (asked(&hard), asked(&soft));
        let mut records = Vec::with_capacity(all.len());
        let mut failed = Vec::new();
        let mut narrowed = Vec::new();
        for (v, r) in all {
            match r {
                Ok(p) => {
                    let changed = |got: &Option<CpuMap>, want: &Option<CpuMap>| {
                        want.is_some() && got.as_ref() != want.as_ref()
                    };
                    if changed(&p.hard, &h) || changed(&p.soft, &s) {
                        narrowed.push(records.len());
                    }
                    let mut obj = |m: Option<CpuMap>| -> PyResult<Bound<'py, PyAny>> {
                        Ok(match m {
                            Some(m) => maps.get(py, &m)?.into_bound(py).into_any(),
                            None => none(),
                        })
                    };
                    let (eh, es) = (obj(p.hard)?, obj(p.soft)?);
                    let fields = (domid, v, &asked_h, &asked_s, eh, es).into_pyobject(py)?;
                    records.push(tuple_new.call1((&record, fields))?);
                }
                Err(e) => failed.push((v, exc_object(py, &e))),
            }
        }
        (records, failed, narrowed).into_pyobject(py)
    }

    /// Pin many vCPUs of many domains, batched across domains (validated first, all or
    /// nothing before the first hypercall): `requests` are (domid, vcpu, hard or None, soft
    /// or None); returns, per request in order, (hard, soft) as Xen applied them or the
    /// exception for that pin.
    #[pyo3(signature = (requests, force=false))]
    fn pin_many<'py>(
        &self,
        py: Python<'py>,
        requests: Vec<PinArg<'_>>,
        force: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let mut objects = match requests.first() {
            Some((_, _, h, s)) => pin_objects(py, [h, s]),
            None => MapObjects::default(),
        };
        let maps: Vec<(u32, u32, Option<CpuMap>, Option<CpuMap>)> = requests
            .iter()
            .map(|(d, v, h, s)| (*d, *v, map_arg(h), map_arg(s)))
            .collect();
        let all = self.with(py, |x| {
            let reqs: Vec<PinRequest<'_>> = maps
                .iter()
                .map(|(domid, vcpu, h, s)| PinRequest {
                    domid: *domid,
                    vcpu: *vcpu,
                    hard: h.as_ref(),
                    soft: s.as_ref(),
                })
                .collect();
            x.pin_many(&reqs, force)
        })?;
        let mut out = Vec::with_capacity(all.len());
        for r in all {
            out.push(match r {
                Ok(p) => pinning_tuple(py, p, &mut objects)?.into_any().unbind(),
                Err(e) => exc_object(py, &e),
            });
        }
        PyList::new(py, out)
    }

    /// Benchmark hook: `rounds` snapshots in a pure-Rust loop over this connection;
    /// returns (vCPUs per snapshot, seconds in total).
    fn _bench_snapshot(&self, py: Python<'_>, rounds: u32) -> PyResult<(usize, f64)> {
        let (n, t) = self.with(py, |x| ops::bench_snapshot(x, rounds))?;
        Ok((n, t.as_secs_f64()))
    }

    fn __repr__(&self) -> String {
        let (major, minor, _, _) = self.version;
        format!(
            "Hypervisor({}, Xen {major}.{minor}, width {})",
            self.transport, self.width
        )
    }
}
