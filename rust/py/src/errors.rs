//! The one mapping from core errors to the Python classes of `xenvcpu.errors`.
//!
//! Exceptions are defined once, in Python; this module looks a class up by name and
//! raises it with the context the core knows (errno, domain, vCPU), plus the structured
//! fields of a CPU-map error (`kind`, `token`, `column`, ...), so that callers and tests
//! can read them without parsing the message.
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyModule};
use pyo3::IntoPyObjectExt;
use xenvcpu_core::cpumap::CpuMapError;
use xenvcpu_core::error::Error;

static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// Context carried by every raised error.
#[derive(Default)]
pub struct Context {
    pub errno: Option<i32>,
    pub domain: Option<u32>,
    pub vcpu: Option<u32>,
}

/// Build an instance of `xenvcpu.errors.<class_name>` with `extra` attributes set on it;
/// an unknown name falls back to the base class.
fn build(
    py: Python<'_>,
    class_name: &str,
    message: &str,
    ctx: &Context,
    extra: &[(&str, Py<PyAny>)],
) -> PyErr {
    let attempt = || -> PyResult<PyErr> {
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
        for (name, value) in extra {
            exc.setattr(*name, value)?;
        }
        Ok(PyErr::from_value(exc))
    };
    attempt().unwrap_or_else(|e| e)
}

/// Build an instance of `xenvcpu.errors.<class_name>`.
pub fn make(py: Python<'_>, class_name: &str, message: &str, ctx: &Context) -> PyErr {
    build(py, class_name, message, ctx, &[])
}

/// A core error as an instance of its `xenvcpu.errors` class.
pub fn core_err(py: Python<'_>, e: &Error) -> PyErr {
    let ctx = Context {
        errno: e.errno,
        domain: e.domain,
        vcpu: e.vcpu,
    };
    make(py, e.kind.class_name(), &e.message, &ctx)
}

/// A core error as an exception object (for results that carry one error per item).
pub fn exc_object(py: Python<'_>, e: &Error) -> Py<PyAny> {
    core_err(py, e).into_value(py).into_any()
}

/// A value as a Python object (None if it cannot be converted).
pub fn obj<'py, T: IntoPyObjectExt<'py>>(py: Python<'py>, v: T) -> Py<PyAny> {
    v.into_py_any(py).unwrap_or_else(|_| py.None())
}

/// A CPU-map error becomes `CpuListError` (a `ValueError`) with its fields as attributes:
/// `kind` names the case (`bad_width`, `cpu_out_of_range`, `negative_cpu`, `parse`,
/// `maplen_too_short`, `width_mismatch`) and the others hold what that case knows.
pub fn cpumap(py: Python<'_>, e: &CpuMapError) -> PyErr {
    let extra: Vec<(&str, Py<PyAny>)> = match e {
        CpuMapError::BadWidth { width } => {
            vec![("kind", obj(py, "bad_width")), ("width", obj(py, *width))]
        }
        CpuMapError::CpuOutOfRange { cpu, width } => vec![
            ("kind", obj(py, "cpu_out_of_range")),
            ("cpu", obj(py, *cpu)),
            ("width", obj(py, *width)),
        ],
        CpuMapError::NegativeCpu { cpu, width } => vec![
            ("kind", obj(py, "negative_cpu")),
            ("cpu", obj(py, *cpu)),
            ("width", obj(py, *width)),
        ],
        CpuMapError::Parse {
            text,
            token,
            column,
            reason,
            width,
        } => vec![
            ("kind", obj(py, "parse")),
            ("text", obj(py, text.as_str())),
            ("token", obj(py, token.as_str())),
            ("column", obj(py, *column)),
            ("reason", obj(py, reason.as_str())),
            ("width", obj(py, *width)),
        ],
        CpuMapError::MaplenTooLong { maplen } => vec![
            ("kind", obj(py, "maplen_too_long")),
            ("maplen", obj(py, *maplen)),
        ],
        CpuMapError::MaplenTooShort {
            maplen,
            needed,
            cpu,
        } => vec![
            ("kind", obj(py, "maplen_too_short")),
            ("maplen", obj(py, *maplen)),
            ("needed", obj(py, *needed)),
            ("cpu", obj(py, *cpu)),
        ],
        CpuMapError::WidthMismatch { left, right } => vec![
            ("kind", obj(py, "width_mismatch")),
            ("width", obj(py, *left)),
            ("other_width", obj(py, *right)),
        ],
    };
    build(
        py,
        "CpuListError",
        &e.to_string(),
        &Context::default(),
        &extra,
    )
}

/// A `CpuListError` for an argument the core never sees (a negative width or maplen).
pub fn cpulist_error(
    py: Python<'_>,
    message: &str,
    kind: &str,
    mut fields: Vec<(&str, Py<PyAny>)>,
) -> PyErr {
    fields.push(("kind", obj(py, kind)));
    build(py, "CpuListError", message, &Context::default(), &fields)
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
