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
    /// as Xen's bitmaps): vCPU k's map is `data[k * maplen:(k + 1) * maplen]`.
    fn maps<'py>(&self, py: Python<'py>, kind: &str) -> PyResult<Bound<'py, PyBytes>> {
        let hard = match kind {
            "hard" => true,
            "soft" => false,
            other => {
                return Err(PyValueError::new_err(format!(
                    "map kind {other:?}: expected 'hard' or 'soft'"
                )))
            }
        };
        let maplen = self.width.div_ceil(8);
        let vcpus: Vec<&VcpuInfo> = self.all_vcpus().collect();
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

    fn __repr__(&self) -> String {
        format!(
            "Snapshot({} domains, {} vCPUs, width {})",
            self.entries.len(),
            self.index.len(),
            self.width
        )
    }
}
