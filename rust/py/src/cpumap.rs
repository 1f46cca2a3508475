//! `xenvcpu.CpuMap`: the Python face of `xenvcpu_core::cpumap::CpuMap`.
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use pyo3::basic::CompareOp;
use pyo3::exceptions::{PyOverflowError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyIterator, PyList, PyString, PyTuple, PyType,
};
use xenvcpu_core::cpumap::{valid_range, CpuMap, CpuMapError, Terms, MAX_MAPLEN, MAX_WIDTH};

use crate::errors;

/// A set of physical CPUs of a fixed width, packed as little-endian bits.
#[pyclass(module = "xenvcpu._native", name = "CpuMap", frozen)]
pub struct PyCpuMap {
    pub inner: CpuMap,
}

impl PyCpuMap {
    pub fn wrap(inner: CpuMap) -> Self {
        PyCpuMap { inner }
    }
}

type CoreResult<T> = Result<T, CpuMapError>;

/// How many CPU numbers `from_cpus` reads at most (duplicates included): an endless
/// iterator must end in an error, not in a hang.
pub const MAX_ITEMS: usize = 4 * MAX_WIDTH;

/// A Python int argument as an i64, or None when it does not fit one (a huge int is a
/// value out of range for every use here, reported as such by the caller).
fn int_arg(value: &Bound<'_, PyAny>) -> PyResult<Option<i64>> {
    match value.extract::<i64>() {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_instance_of::<PyOverflowError>(value.py()) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A Python width argument, any int: values out of range are reported as they were given.
fn width_arg(py: Python<'_>, width: &Bound<'_, PyAny>) -> PyResult<usize> {
    match int_arg(width)?.map(usize::try_from) {
        Some(Ok(w)) if (1..=MAX_WIDTH).contains(&w) => Ok(w),
        _ => Err(errors::cpulist_error(
            py,
            &format!("invalid CPU map width {width}: the width must be between 1 and {MAX_WIDTH}"),
            "bad_width",
            vec![("width", width.clone().unbind())],
        )),
    }
}

/// A cpulist as Rust text: lone surrogates (which Python strings may hold and UTF-8 cannot)
/// are read as U+FFFD, one each, so they are reported like any other character that is
/// not a CPU number, at their column.
fn text_arg(text: &Bound<'_, PyString>) -> PyResult<String> {
    match text.extract::<String>() {
        Ok(s) => Ok(s),
        Err(_) => {
            let fixed = text
                .call_method1("encode", ("utf-16", "surrogatepass"))?
                .call_method1("decode", ("utf-16", "replace"))?;
            fixed.extract()
        }
    }
}

fn map_err<T>(py: Python<'_>, r: CoreResult<T>) -> PyResult<T> {
    r.map_err(|e| errors::cpumap(py, &e))
}

/// Bytes of a `bytes`, `bytearray` or `memoryview` argument.
fn bytes_of(data: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(b) = data.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    if let Ok(b) = data.cast::<PyByteArray>() {
        return Ok(b.to_vec());
    }
    if data.hasattr("tobytes")? {
        let b = data.call_method0("tobytes")?;
        if let Ok(b) = b.cast::<PyBytes>() {
            return Ok(b.as_bytes().to_vec());
        }
    }
    Err(PyTypeError::new_err(format!(
        "expected bytes, bytearray or memoryview, got {}",
        data.get_type().name()?
    )))
}

/// CPU numbers from any iterable of ints, checked against `width`; at most [`MAX_ITEMS`].
pub fn cpus_into(py: Python<'_>, cpus: &Bound<'_, PyAny>, width: usize) -> PyResult<CpuMap> {
    let mut m = map_err(py, CpuMap::new(width))?;
    for (n, item) in cpus.try_iter()?.enumerate() {
        if n == MAX_ITEMS {
            return Err(errors::cpulist_error(
                py,
                &format!("more than {MAX_ITEMS} CPU numbers for a map of width {width}"),
                "too_many_cpus",
                vec![("width", errors::obj(py, width))],
            ));
        }
        let item = item?;
        let r = match int_arg(&item)? {
            Some(cpu) if cpu < 0 => Err(CpuMapError::NegativeCpu { cpu, width }),
            Some(cpu) => m.insert(cpu as u64),
            None => {
                let negative = item.lt(0)?;
                let (kind, what) = if negative {
                    ("negative_cpu", "is negative")
                } else {
                    ("cpu_out_of_range", "is out of range")
                };
                return Err(errors::cpulist_error(
                    py,
                    &format!(
                        "CPU {item} {what}: valid CPUs are {} (width {width})",
                        valid_range(width)
                    ),
                    kind,
                    vec![("cpu", item.unbind()), ("width", errors::obj(py, width))],
                ));
            }
        };
        map_err(py, r)?;
    }
    Ok(m)
}

/// One fact per CPU from a topology argument: its attribute `attr` (`cpu_to_node`,
/// `cpu_to_socket`, `cpu_to_core`) as a mapping CPU -> value or a sequence indexed by CPU
/// (None = not known); for `cpu_to_node`, the argument itself may be that mapping or
/// sequence. None when the argument does not have it.
fn per_cpu(topology: &Bound<'_, PyAny>, attr: &str, width: usize) -> PyResult<Option<Vec<u32>>> {
    let source = if topology.hasattr(attr)? {
        topology.getattr(attr)?
    } else if attr == "cpu_to_node" && !topology.hasattr("pools")? {
        topology.clone()
    } else {
        return Ok(None);
    };
    let mut out = vec![u32::MAX; width];
    if let Ok(d) = source.cast::<PyDict>() {
        for (k, v) in d.iter() {
            let cpu: usize = k.extract()?;
            if cpu < width && !v.is_none() {
                out[cpu] = v.extract()?;
            }
        }
    } else {
        // Only the first `width` entries matter: an endless sequence is not read to its end.
        for (cpu, v) in source.try_iter()?.take(width).enumerate() {
            let v = v?;
            if !v.is_none() {
                out[cpu] = v.extract()?;
            }
        }
    }
    Ok(Some(out))
}

/// The cpupools of a topology argument (`pools`: name -> CpuMap or CPU numbers).
fn pools_of(
    py: Python<'_>,
    topology: &Bound<'_, PyAny>,
    width: usize,
) -> PyResult<Option<Vec<(String, CpuMap)>>> {
    if !topology.hasattr("pools")? {
        return Ok(None);
    }
    let pools = topology.getattr("pools")?;
    let mut out = Vec::new();
    for item in pools.call_method0("items")?.try_iter()? {
        let (name, cpus): (String, Bound<'_, PyAny>) = item?.extract()?;
        let map = match cpus.cast::<PyCpuMap>() {
            Ok(m) => m.get().inner.clone(),
            Err(_) => cpus_into(py, &cpus, width)?,
        };
        out.push((name, map));
    }
    Ok(Some(out))
}

#[pymethods]
impl PyCpuMap {
    /// An empty map of `width` CPUs.
    #[new]
    fn py_new(py: Python<'_>, width: &Bound<'_, PyAny>) -> PyResult<Self> {
        let w = width_arg(py, width)?;
        Ok(Self::wrap(map_err(py, CpuMap::new(w))?))
    }

    /// A map of `width` CPUs with every CPU set.
    #[classmethod]
    fn full(_cls: &Bound<'_, PyType>, py: Python<'_>, width: &Bound<'_, PyAny>) -> PyResult<Self> {
        let w = width_arg(py, width)?;
        Ok(Self::wrap(map_err(py, CpuMap::full(w))?))
    }

    /// A map of `width` CPUs with the given CPU numbers set.
    #[classmethod]
    fn from_cpus(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        cpus: &Bound<'_, PyAny>,
        width: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let w = width_arg(py, width)?;
        Ok(Self::wrap(cpus_into(py, cpus, w)?))
    }

    /// Unpack little-endian bytes (CPU0-7 in byte 0, lowest CPU in the least significant bit).
    #[classmethod]
    #[pyo3(signature = (data, width=None))]
    fn from_bytes(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        width: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let width = width.map(|w| width_arg(py, w)).transpose()?;
        let data = bytes_of(data)?;
        Ok(Self::wrap(map_err(py, CpuMap::from_bytes(&data, width))?))
    }

    /// Parse a cpulist (`0-3,^2`, `all`, `nodes:0-1`, `socket:1`, `siblings:4`,
    /// `pool:NAME`, ...) into a map of `width` CPUs; topology terms read `topology`.
    #[classmethod]
    #[pyo3(signature = (text, width, topology=None))]
    fn parse(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        text: &Bound<'_, PyString>,
        width: &Bound<'_, PyAny>,
        topology: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let w = width_arg(py, width)?;
        let text = text_arg(text)?;
        // Converting a topology costs a Python call per CPU: only the facts the text's
        // terms need are read.
        let (mut nodes, mut sockets, mut cores, mut pools) = (None, None, None, None);
        if let Some(t) = topology {
            if text.contains("node") {
                nodes = per_cpu(t, "cpu_to_node", w)?;
            }
            if text.contains("socket") || text.contains("siblings") {
                sockets = per_cpu(t, "cpu_to_socket", w)?;
            }
            if text.contains("siblings") {
                cores = per_cpu(t, "cpu_to_core", w)?;
            }
            if text.contains("pool") {
                pools = pools_of(py, t, w)?;
            }
        }
        let terms = Terms {
            nodes: nodes.as_deref(),
            sockets: sockets.as_deref(),
            cores: cores.as_deref(),
            pools: pools.as_deref(),
        };
        Ok(Self::wrap(map_err(
            py,
            CpuMap::parse_terms(&text, w, &terms),
        )?))
    }

    /// A map from one truth value per CPU (libvirt-python's tuple-of-bools shape).
    #[classmethod]
    fn from_bools(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        bools: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let t = PyBool::new(py, true);
        let f = PyBool::new(py, false);
        let mut flags = Vec::new();
        for item in bools.try_iter()? {
            let item = item?;
            if flags.len() == MAX_WIDTH {
                // stop reading: an endless iterator must not grow the list without bound
                return Err(errors::cpumap(
                    py,
                    &CpuMapError::BadWidth {
                        width: MAX_WIDTH + 1,
                    },
                ));
            }
            flags.push(if item.is(&*t) {
                true
            } else if item.is(&*f) {
                false
            } else {
                item.is_truthy()?
            });
        }
        Ok(Self::wrap(map_err(py, CpuMap::from_bools(flags))?))
    }

    /// One bool per CPU, `width` of them.
    fn to_bools<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        // Clone two bool objects (a reference-count bump each) rather than converting a
        // Rust bool per CPU.
        let t = PyBool::new(py, true).to_owned().into_any();
        let f = PyBool::new(py, false).to_owned().into_any();
        let words = self.inner.as_words();
        PyTuple::new(
            py,
            (0..self.inner.width()).map(|c| {
                if words[c >> 6] >> (c & 63) & 1 == 1 {
                    t.clone()
                } else {
                    f.clone()
                }
            }),
        )
    }

    /// Pack to little-endian bytes, `maplen` long (default `ceil(width / 8)`).
    #[pyo3(signature = (maplen=None))]
    fn to_bytes<'py>(
        &self,
        py: Python<'py>,
        maplen: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let len = match maplen {
            None => self.inner.byte_len(),
            Some(n) if int_arg(n)?.is_none() && !n.lt(0)? => {
                // beyond an i64: too long, reported with the value as given
                return Err(errors::cpulist_error(
                    py,
                    &format!(
                        "maplen {n} is too long: a map has at most {MAX_MAPLEN} bytes \
                         ({MAX_WIDTH} CPUs)"
                    ),
                    "maplen_too_long",
                    vec![("maplen", n.clone().unbind())],
                ));
            }
            Some(n) => match usize::try_from(int_arg(n)?.unwrap_or(i64::MIN)) {
                Ok(n) if n <= MAX_MAPLEN => n,
                Ok(n) => {
                    return Err(errors::cpumap(
                        py,
                        &CpuMapError::MaplenTooLong { maplen: n },
                    ))
                }
                Err(_) => {
                    return Err(errors::cpulist_error(
                        py,
                        &format!("maplen {n} is negative"),
                        "maplen_too_short",
                        vec![("maplen", n.clone().unbind())],
                    ))
                }
            },
        };
        let inner = &self.inner;
        let mut failure = None;
        let out = PyBytes::new_with(py, len, |buf| {
            if let Err(e) = inner.write_bytes(buf) {
                failure = Some(e);
            }
            Ok(())
        })?;
        match failure {
            Some(e) => Err(errors::cpumap(py, &e)),
            None => Ok(out),
        }
    }

    fn __bytes__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        self.to_bytes(py, None)
    }

    /// Canonical cpulist: ascending, runs of two or more as `a-b`; `""` when empty.
    fn to_cpulist(&self) -> String {
        self.inner.to_cpulist()
    }

    /// The set CPUs as a list, ascending.
    fn to_list(&self) -> Vec<usize> {
        self.inner.iter().collect()
    }

    /// Number of CPUs the map can hold.
    #[getter]
    fn width(&self) -> usize {
        self.inner.width()
    }

    /// The same CPUs in a map of another width.
    fn resized(&self, py: Python<'_>, width: &Bound<'_, PyAny>) -> PyResult<Self> {
        let w = width_arg(py, width)?;
        Ok(Self::wrap(map_err(py, self.inner.resized(w))?))
    }

    /// True when every CPU of this map is also in `other`.
    fn issubset(&self, other: PyRef<'_, PyCpuMap>) -> bool {
        self.inner.is_subset(&other.inner)
    }

    /// True when every CPU of the width is set.
    fn is_full(&self) -> bool {
        self.inner.is_full()
    }

    fn __str__(&self) -> String {
        self.inner.to_cpulist()
    }

    fn __repr__(&self) -> String {
        format!(
            "CpuMap.parse({:?}, {})",
            self.inner.to_cpulist(),
            self.inner.width()
        )
    }

    fn __len__(&self) -> usize {
        self.inner.count()
    }

    fn __bool__(&self) -> bool {
        !self.inner.is_empty()
    }

    fn __contains__(&self, item: &Bound<'_, PyAny>) -> bool {
        match item.extract::<i64>() {
            Ok(cpu) if cpu >= 0 => self.inner.contains(cpu as u64),
            _ => false,
        }
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyIterator>> {
        PyList::new(py, self.inner.iter())?.try_iter()
    }

    fn __and__(&self, py: Python<'_>, other: PyRef<'_, PyCpuMap>) -> PyResult<Self> {
        Ok(Self::wrap(map_err(
            py,
            self.inner.intersection(&other.inner),
        )?))
    }

    fn __or__(&self, py: Python<'_>, other: PyRef<'_, PyCpuMap>) -> PyResult<Self> {
        Ok(Self::wrap(map_err(py, self.inner.union(&other.inner))?))
    }

    fn __sub__(&self, py: Python<'_>, other: PyRef<'_, PyCpuMap>) -> PyResult<Self> {
        Ok(Self::wrap(map_err(
            py,
            self.inner.difference(&other.inner),
        )?))
    }

    fn __xor__(&self, py: Python<'_>, other: PyRef<'_, PyCpuMap>) -> PyResult<Self> {
        Ok(Self::wrap(map_err(
            py,
            self.inner.symmetric_difference(&other.inner),
        )?))
    }

    fn __invert__(&self) -> Self {
        Self::wrap(self.inner.complement())
    }

    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp, py: Python<'_>) -> Py<PyAny> {
        let Ok(other) = other.cast::<PyCpuMap>() else {
            return py.NotImplemented();
        };
        let eq = self.inner == other.get().inner;
        match op {
            CompareOp::Eq => PyBool::new(py, eq).to_owned().into_any().unbind(),
            CompareOp::Ne => PyBool::new(py, !eq).to_owned().into_any().unbind(),
            _ => py.NotImplemented(),
        }
    }

    fn __hash__(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.inner.hash(&mut h);
        h.finish()
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let py = slf.py();
        let ctor = slf.get_type().getattr("from_bytes")?;
        let me = slf.get();
        let data = me.to_bytes(py, None)?;
        (ctor, (data, me.inner.width())).into_pyobject(py)
    }
}
