//! `xenvcpu._native`: thin PyO3 bindings over `xenvcpu-core`.
use pyo3::prelude::*;

mod cpumap;
mod errors;
mod hv;
mod records;
mod sim;
mod snapshot;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<cpumap::PyCpuMap>()?;
    m.add_class::<hv::PyHypervisor>()?;
    m.add_class::<records::PyVcpuInfo>()?;
    m.add_class::<records::PyDomainInfo>()?;
    m.add_class::<sim::PySimControl>()?;
    m.add_class::<snapshot::PySnapshot>()?;
    m.add_function(wrap_pyfunction!(errors::_raise_error, m)?)?;
    m.add("MAX_WIDTH", xenvcpu_core::cpumap::MAX_WIDTH)?;
    Ok(())
}
