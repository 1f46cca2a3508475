//! The one mapping from core errors to the Python classes of `xenvcpu.errors`.
//!
//! Exceptions are defined once, in Python; this module looks a class up by name and
//! raises it with the context the core knows (errno, domain, vCPU).
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyModule};
use xenvcpu_core::cpumap::CpuMapError;

static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// Context carried by every raised error.
#[derive(Default)]
pub struct Context {
    pub errno: Option<i32>,
    pub domain: Option<u32>,
    pub vcpu: Option<u32>,
}

/// Build an instance of `xenvcpu.errors.<class_name>`; an unknown name falls back to the base class.
pub fn make(py: Python<'_>, class_name: &str, message: &str, ctx: &Context) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let module = ERRORS
            .get_or_try_init(py, || {
                PyModule::import(py, "xenvcpu.errors").map(Bound::unbind)
            })?
            .bind(py);
        let class = match module.getattr(class_name) {
            Ok(c) => c,
            Err(_) => module.getattr("XenvcpuError")?,
        };
        let kwargs = PyDict::new(py);
        kwargs.set_item("errno", ctx.errno)?;
        kwargs.set_item("domain", ctx.domain)?;
        kwargs.set_item("vcpu", ctx.vcpu)?;
        let exc = class.call((message,), Some(&kwargs))?;
        Ok(PyErr::from_value(exc))
    };
    build().unwrap_or_else(|e| e)
}

/// A CPU-map error becomes `CpuListError` (a `ValueError`).
pub fn cpumap(py: Python<'_>, e: &CpuMapError) -> PyErr {
    make(py, "CpuListError", &e.to_string(), &Context::default())
}

/// Raise any error class by name from Python (used by the tests of this mapping).
#[pyfunction]
#[pyo3(signature = (class_name, message, errno=None, domain=None, vcpu=None))]
pub fn _raise_error(
    py: Python<'_>,
    class_name: &str,
    message: &str,
    errno: Option<i32>,
    domain: Option<u32>,
    vcpu: Option<u32>,
) -> PyResult<()> {
    Err(make(
        py,
        class_name,
        message,
        &Context {
            errno,
            domain,
            vcpu,
        },
    ))
}
