//! `xenvcpu._native.Snapshot`: every vCPU of every domain, kept as the core returned it.
//!
//! Building a Python object per vCPU and per map costs more than reading them from Xen,
//! so a snapshot keeps the Rust results and makes objects only on demand: per domain
//! (`vcpus(i)`), per vCPU (`vcpu(k)`), or whole columns at once (`column(name)` as an
//! `array.array`, `maps(kind)` as one contiguous `bytes` of little-endian maps).
use std::sync::Mutex;

use pyo3::exceptions::{PyIndexError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use xenvcpu_core::cpumap::CpuMap;
use xenvcpu_core::error::Error;
use xenvcpu_core::ops::{DomainInfo, VcpuInfo};

use crate::cpumap::PyCpuMap;
use crate::errors::{core_err, exc_object};
use crate::records::{state_code, MapObjects, PyDomainInfo, PyVcpuInfo};

type Entry = (DomainInfo, Result<Vec<VcpuInfo>, Error>);

/// Every vCPU of every domain at one moment (columnar; objects made on demand).
#[pyclass(module = "xenvcpu._native", name = "Snapshot", frozen)]
pub struct PySnapshot {
    width: usize,
    entries: Vec<Entry>,
    /// Flat vCPU index -> (domain index, vCPU index).
    index: Vec<(u32, u32)>,
    /// The map objects made so far, shared by every record this snapshot makes.
    maps: Mutex<MapObjects>,
}

impl PySnapshot {
    pub fn new(width: usize, entries: Vec<Entry>) -> Self {
        let mut index = Vec::new();
        for (i, (_, r)) in entries.iter().enumerate() {
            if let Ok(v) = r {
                index.extend((0..v.len()).map(|k| (i as u32, k as u32)));
            }
        }
        PySnapshot {
            width,
            entries,
            index,
            maps: Mutex::new(MapObjects::default()),
        }
    }

    /// Records for `vcpus` of domain `domid`, sharing map objects with the records made
    /// before. (Only ever taken with the GIL held; should a finalizer re-enter while it is
    /// held, that call makes its own objects instead of waiting.)
    fn records<'a>(
        &self,
        py: Python<'_>,
        vcpus: impl Iterator<Item = (u32, &'a VcpuInfo)>,
    ) -> PyResult<Vec<PyVcpuInfo>> {
        let mut own = MapObjects::default();
        let mut guard = self.maps.try_lock().ok();
        let maps = guard.as_deref_mut().unwrap_or(&mut own);
        vcpus
            .map(|(d, v)| PyVcpuInfo::from_core(py, d, v, maps))
            .collect()
    }

    fn entry(&self, i: usize) -> PyResult<&Entry> {
        self.entries.get(i).ok_or_else(|| {
            PyIndexError::new_err(format!(
                "domain index {i} out of range (the snapshot has {} domains)",
                self.entries.len()
            ))
        })
    }

    fn flat(&self, k: isize) -> PyResult<(&DomainInfo, &VcpuInfo)> {
        let n = self.index.len() as isize;
        let k2 = if k < 0 { k + n } else { k };
        if k2 < 0 || k2 >= n {
            return Err(PyIndexError::new_err(format!(
                "vCPU index {k} out of range (the snapshot has {n} vCPUs)"
            )));
        }
        let (d, v) = self.index[k2 as usize];
        let (info, r) = &self.entries[d as usize];
        let vcpus = r.as_ref().expect("index only covers domains that answered");
        Ok((info, &vcpus[v as usize]))
    }

    fn all_vcpus(&self) -> impl Iterator<Item = &VcpuInfo> {
        self.entries
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .flatten()
    }
}

fn array<'py>(py: Python<'py>, code: &str, data: Vec<u8>) -> PyResult<Bound<'py, PyAny>> {
    let bytes = PyBytes::new(py, &data);
    PyModule::import(py, "array")?
        .getattr("array")?
        .call1((code, bytes))
}

#[pymethods]
impl PySnapshot {
    /// Width of every map (the host's max_cpu_id + 1).
    #[getter]
    fn width(&self) -> usize {
        self.width
    }

    /// Bytes of one packed map: ceil(width / 8).
    #[getter]
    fn maplen(&self) -> usize {
        self.width.div_ceil(8)
    }

    /// Where each domain's vCPUs start in the flat columns (`column`, `maps`), and one more
    /// entry for the end: domain i's vCPUs are `offsets[i]..offsets[i + 1]` (empty for a
    /// domain whose vCPUs could not be read).
    fn offsets(&self) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.entries.len() + 1);
        let mut at = 0usize;
        for (_, r) in &self.entries {
            out.push(at);
            at += r.as_ref().map_or(0, Vec::len);
        }
        out.push(at);
        out
    }

    /// Number of vCPUs (of the domains that answered).
    fn __len__(&self) -> usize {
        self.index.len()
    }

    /// Number of domains (including any whose vCPUs could not be read).
    #[getter]
    fn domain_count(&self) -> usize {
        self.entries.len()
    }

    /// getdomaininfo of every domain, in id order.
    fn domains(&self) -> Vec<PyDomainInfo> {
        self.entries
            .iter()
            .map(|(d, _)| PyDomainInfo::new(d))
            .collect()
    }

    /// getdomaininfo of the i-th domain.
    fn domain(&self, i: usize) -> PyResult<PyDomainInfo> {
        Ok(PyDomainInfo::new(&self.entry(i)?.0))
    }

    /// The vCPUs of the i-th domain (raises that domain's error if its read failed).
    fn vcpus<'py>(&self, py: Python<'py>, i: usize) -> PyResult<Bound<'py, PyList>> {
        let (d, r) = self.entry(i)?;
        match r {
            Ok(v) => {
                let records = self.records(py, v.iter().map(|v| (d.id, v)))?;
                let items: Vec<Bound<'py, PyVcpuInfo>> = records
                    .into_iter()
                    .map(|r| Bound::new(py, r))
                    .collect::<PyResult<_>>()?;
                PyList::new(py, items)
            }
            Err(e) => Err(core_err(py, e)),
        }
    }

    /// The error reading the i-th domain's vCPUs (an exception instance), or None.
    fn error(&self, py: Python<'_>, i: usize) -> PyResult<Option<Py<PyAny>>> {
        Ok(self.entry(i)?.1.as_ref().err().map(|e| exc_object(py, e)))
    }

    /// The k-th vCPU of the whole snapshot (negative k counts from the end).
    fn vcpu(&self, py: Python<'_>, k: isize) -> PyResult<PyVcpuInfo> {
        let (d, v) = self.flat(k)?;
        let mut r = self.records(py, std::iter::once((d.id, v)))?;
        Ok(r.pop().expect("one record"))
    }

    /// The hard (kind="hard") or soft affinity of the k-th vCPU.
    fn affinity(&self, py: Python<'_>, k: isize, kind: &str) -> PyResult<Py<PyCpuMap>> {
        let (_, v) = self.flat(k)?;
        let m = match kind {
            "hard" => &v.hard,
            "soft" => &v.soft,
            other => {
                return Err(PyValueError::new_err(format!(
                    "affinity kind {other:?}: expected 'hard' or 'soft'"
                )))
            }
        };
        let mut own = MapObjects::default();
        let mut guard = self.maps.try_lock().ok();
        guard.as_deref_mut().unwrap_or(&mut own).get(py, m)
    }

    /// One field of every vCPU as an `array.array`: "domain" and "number" ('I'), "state"
    /// ('B': 0 offline, 1 running, 2 blocked, 3 runnable), "cpu" ('i', -1 when offline),
    /// "cpu_time_ns" ('Q').
    fn column<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        let n = self.index.len();
        match name {
            "domain" => {
                let mut out = Vec::with_capacity(n * 4);
                for (d, r) in &self.entries {
                    if let Ok(v) = r {
                        for _ in v {
                            out.extend_from_slice(&d.id.to_ne_bytes());
                        }
                    }
                }
                array(py, "I", out)
            }
            "number" => {
                let out: Vec<u8> = self
                    .all_vcpus()
                    .flat_map(|v| v.number.to_ne_bytes())
                    .collect();
                array(py, "I", out)
            }
            "state" => {
                let out: Vec<u8> = self.all_vcpus().map(|v| state_code(v.state())).collect();
                array(py, "B", out)
            }
            "cpu" => {
                let out: Vec<u8> = self
                    .all_vcpus()
                    .flat_map(|v| v.cpu.map_or(-1i32, |c| c as i32).to_ne_bytes())
                    .collect();
                array(py, "i", out)
            }
            "cpu_time_ns" => {
                let out: Vec<u8> = self
                    .all_vcpus()
                    .flat_map(|v| v.cpu_time_ns.to_ne_bytes())
                    .collect();
                array(py, "Q", out)
            }
            other => Err(PyValueError::new_err(format!(
                "unknown column {other:?}: expected domain, number, state, cpu or cpu_time_ns"
            ))),
        }
    }

    /// Every vCPU's hard or soft map packed back to back (maplen bytes each, little-endian
    /// as Xen's bitmaps): vCPU k's map is `data[k * maplen:(k + 1) * maplen]`. With `start`
    /// and `stop`, only the flat vCPUs `start..stop` (clamped as a slice is).
    #[pyo3(signature = (kind, start=0, stop=None))]
    fn maps<'py>(
        &self,
        py: Python<'py>,
        kind: &str,
        start: usize,
        stop: Option<usize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let hard = map_kind(kind)?;
        let maplen = self.width.div_ceil(8);
        let n = self.index.len();
        let stop = stop.unwrap_or(n).min(n);
        let start = start.min(stop);
        let vcpus: Vec<&VcpuInfo> = self.index[start..stop]
            .iter()
            .filter_map(|&(d, v)| {
                let vs = self.entries.get(d as usize)?.1.as_ref().ok()?;
                vs.get(v as usize)
            })
            .collect();
        let total = maplen.checked_mul(vcpus.len()).ok_or_else(|| {
            PyValueError::new_err("the snapshot's maps are larger than memory can hold")
        })?;
        PyBytes::new_with(py, total, |buf| {
            // vCPUs next to each other mostly share a map (a domain pinned as a whole): a
            // map equal to the previous one is a copy of its bytes, not a new encoding.
            let mut prev: Option<(&CpuMap, usize)> = None;
            for (chunk_at, v) in (0..total).step_by(maplen.max(1)).zip(&vcpus) {
                let m = if hard { &v.hard } else { &v.soft };
                let end = chunk_at + maplen;
                match prev {
                    Some((p, at)) if p == m => buf.copy_within(at..at + maplen, chunk_at),
                    _ => {
                        // Maps are host-wide, so they always fit maplen bytes.
                        let _ = m.write_bytes(&mut buf[chunk_at..end]);
                        prev = Some((m, chunk_at));
                    }
                }
            }
            Ok(())
        })
    }

    /// Per domain, in order: (ids, max_vcpus, cpupools, shapes), where a shape is the
    /// number of vCPUs read when they are numbered 0..n-1 (as Xen numbers them), -1 when the
    /// domain's vCPUs could not be read, -2 when their numbers have gaps. One call instead
    /// of a record per domain, for a plan over thousands of domains.
    #[allow(clippy::type_complexity)]
    fn domain_columns(&self) -> (Vec<u32>, Vec<u32>, Vec<u32>, Vec<i64>) {
        let n = self.entries.len();
        let (mut ids, mut maxv, mut pools, mut shapes) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for (d, r) in &self.entries {
            ids.push(d.id);
            maxv.push(d.max_vcpus);
            pools.push(d.cpupool);
            shapes.push(match r {
                Err(_) => -1,
                Ok(v) if v.iter().zip(0u32..).all(|(x, k)| x.number == k) => {
                    i64::try_from(v.len()).unwrap_or(-2)
                }
                Ok(_) => -2,
            });
        }
        (ids, maxv, pools, shapes)
    }

    /// Which of `domains` (indexes) differ from what is wanted, as (position in `domains`,
    /// hard maps that differ, soft maps that differ, whether the online set differs), for
    /// those that do, in order.
    /// `hard` and `soft` give one map per vCPU of each domain, in its order (None: that
    /// vCPU is not compared); `online`, the vCPU numbers wanted online. Maps are compared
    /// in place: no bytes, no objects per vCPU (a plan's steady state is all equal).
    #[pyo3(signature = (domains, hard=None, soft=None, online=None))]
    #[allow(clippy::type_complexity)]
    fn differences(
        &self,
        domains: Vec<usize>,
        hard: Option<Vec<Option<PyRef<'_, PyCpuMap>>>>,
        soft: Option<Vec<Option<PyRef<'_, PyCpuMap>>>>,
        online: Option<Vec<u32>>,
    ) -> PyResult<Vec<(usize, usize, usize, bool)>> {
        let hard: Option<Vec<Option<&CpuMap>>> = hard
            .as_ref()
            .map(|v| v.iter().map(|m| m.as_ref().map(|m| &m.inner)).collect());
        let soft: Option<Vec<Option<&CpuMap>>> = soft
            .as_ref()
            .map(|v| v.iter().map(|m| m.as_ref().map(|m| &m.inner)).collect());
        let mut online = online;
        if let Some(o) = online.as_mut() {
            o.sort_unstable();
            o.dedup();
        }
        let mut hard_memo = Memo::default();
        let mut soft_memo = Memo::default();
        let mut out = Vec::new();
        for (k, i) in domains.into_iter().enumerate() {
            let (d, r) = self.entry(i)?;
            let vcpus = r.as_ref().map_err(|_| {
                PyValueError::new_err(format!(
                    "domain index {i} (id {}): its vCPUs could not be read",
                    d.id
                ))
            })?;
            let h = count_differing(vcpus, hard.as_deref(), true, &mut hard_memo, d.id)?;
            let s = count_differing(vcpus, soft.as_deref(), false, &mut soft_memo, d.id)?;
            let o = online
                .as_deref()
                .is_some_and(|want| online_differs(vcpus, want));
            if h > 0 || s > 0 || o {
                out.push((k, h, s, o));
            }
        }
        Ok(out)
    }

    fn __repr__(&self) -> String {
        format!(
            "Snapshot({} domains, {} vCPUs, width {})",
            self.entries.len(),
            self.index.len(),
            self.width
        )
    }
}

fn map_kind(kind: &str) -> PyResult<bool> {
    match kind {
        "hard" => Ok(true),
        "soft" => Ok(false),
        other => Err(PyValueError::new_err(format!(
            "map kind {other:?}: expected 'hard' or 'soft'"
        ))),
    }
}

/// The last snapshot map found equal to, and the last found different from, each wanted
/// map (by storage: a snapshot shares one map among every vCPU that has it), so comparing
/// thousands of vCPUs against a few wanted maps compares each distinct pair once.
#[derive(Default)]
struct Memo {
    equal: Vec<Option<(CpuMap, CpuMap)>>,
    differ: Vec<Option<(CpuMap, CpuMap)>>,
}

impl Memo {
    fn same(&mut self, k: usize, now: &CpuMap, want: &CpuMap) -> bool {
        if self.equal.len() <= k {
            self.equal.resize(k + 1, None);
            self.differ.resize(k + 1, None);
        }
        let hit = |slot: &Option<(CpuMap, CpuMap)>| {
            slot.as_ref()
                .is_some_and(|(n, w)| n.shares_words(now) && w.shares_words(want))
        };
        if hit(&self.equal[k]) {
            return true;
        }
        if hit(&self.differ[k]) {
            return false;
        }
        let same = now == want;
        let slot = if same {
            &mut self.equal[k]
        } else {
            &mut self.differ[k]
        };
        *slot = Some((now.clone(), want.clone()));
        same
    }
}

fn count_differing(
    vcpus: &[VcpuInfo],
    want: Option<&[Option<&CpuMap>]>,
    hard: bool,
    memo: &mut Memo,
    domid: u32,
) -> PyResult<usize> {
    let Some(want) = want else { return Ok(0) };
    if want.len() != vcpus.len() {
        return Err(PyValueError::new_err(format!(
            "domain {domid} has {} vCPUs, {} {} maps were given",
            vcpus.len(),
            want.len(),
            if hard { "hard" } else { "soft" }
        )));
    }
    // One memo slot per vCPU position: the domains of a plan group share the wanted list,
    // and their vCPUs mostly share the map they have, so each slot compares once.
    let mut n = 0;
    for (k, (v, w)) in vcpus.iter().zip(want).enumerate() {
        let Some(w) = w else { continue };
        let now = if hard { &v.hard } else { &v.soft };
        if !memo.same(k, now, w) {
            n += 1;
        }
    }
    Ok(n)
}

/// Whether the online vCPUs differ from `want` (sorted, no repeats).
fn online_differs(vcpus: &[VcpuInfo], want: &[u32]) -> bool {
    let mut found = 0usize;
    for v in vcpus {
        let wanted = want.binary_search(&v.number).is_ok();
        if v.online != wanted {
            return true;
        }
        found += usize::from(wanted);
    }
    // a vCPU wanted online that the domain does not have
    found != want.len()
}
