//! `xenvcpu._native.Snapshot`: every vCPU of every domain, kept as the core returned it.
//!
//! Building a Python object per vCPU and per map costs more than reading them from Xen,
//! so a snapshot keeps the Rust results and makes objects only on demand: per domain
//! (`vcpus(i)`), per vCPU (`vcpu(k)`), or whole columns at once (`column(name)` as an
//! `array.array`, `maps(kind)` as one contiguous `bytes` of little-endian maps).
use pyo3::exceptions::{PyIndexError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use xenvcpu_core::error::Error;
use xenvcpu_core::ops::{DomainInfo, VcpuInfo};

use crate::cpumap::PyCpuMap;
use crate::errors::{core_err, exc_object};
use crate::records::{state_code, PyDomainInfo, PyVcpuInfo};

type Entry = (DomainInfo, Result<Vec<VcpuInfo>, Error>);

/// Every vCPU of every domain at one moment (columnar; objects made on demand).
#[pyclass(module = "xenvcpu._native", name = "Snapshot", frozen)]
pub struct PySnapshot {
    width: usize,
    entries: Vec<Entry>,
    /// Flat vCPU index -> (domain index, vCPU index).
    index: Vec<(u32, u32)>,
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
        }
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
                let items: Vec<Bound<'py, PyVcpuInfo>> = v
                    .iter()
                    .map(|v| {
                        Bound::new(
                            py,
                            PyVcpuInfo {
                                domain: d.id,
                                v: v.clone(),
                            },
                        )
                    })
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
    fn vcpu(&self, k: isize) -> PyResult<PyVcpuInfo> {
        let (d, v) = self.flat(k)?;
        Ok(PyVcpuInfo {
            domain: d.id,
            v: v.clone(),
        })
    }

    /// The hard (kind="hard") or soft affinity of the k-th vCPU.
    fn affinity(&self, k: isize, kind: &str) -> PyResult<PyCpuMap> {
        let (_, v) = self.flat(k)?;
        match kind {
            "hard" => Ok(PyCpuMap::wrap(v.hard.clone())),
            "soft" => Ok(PyCpuMap::wrap(v.soft.clone())),
            other => Err(PyValueError::new_err(format!(
                "affinity kind {other:?}: expected 'hard' or 'soft'"
            ))),
        }
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
        let total = maplen * self.index.len();
        let vcpus: Vec<&VcpuInfo> = self.all_vcpus().collect();
        PyBytes::new_with(py, total, |buf| {
            for (chunk, v) in buf.chunks_mut(maplen.max(1)).zip(&vcpus) {
                let m = if hard { &v.hard } else { &v.soft };
                // Maps are host-wide, so they always fit maplen bytes.
                let _ = m.write_bytes(chunk);
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
