//! The one error type of the core.
//!
//! Every [`ErrorKind`] maps 1:1 to an exception class of `python/xenvcpu/errors.py`
//! ([`Error::kind_name`] returns the class name), so the PyO3 layer needs a single table.
//! Each error carries the context it knows: the errno Xen or the kernel returned, the domain
//! id, the vCPU number, and a message a user can act on.

use std::fmt;

/// Which Python exception class an [`Error`] becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Anything not covered below (base class `XenvcpuError`).
    Other,
    /// No privcmd device: not running on Xen, or not a privcmd node.
    NoHypervisor,
    /// EACCES on open / EPERM from Xen: needs root in the control domain.
    PermissionDenied,
    /// The running Xen speaks a domctl/sysctl version we do not know (or refused ours).
    InterfaceMismatch,
    /// No domain has that id.
    DomainNotFound,
    /// The domain is being destroyed.
    DomainDying,
    /// The domain has no vCPU with that number.
    VcpuNotFound,
    /// Empty / too wide affinity, or no CPU of it in the domain's cpupool.
    InvalidAffinity,
    /// Xen answered EBUSY: a temporary pin override is active (retry with force).
    AffinityBusy,
    /// A CPU map or cpulist is malformed.
    CpuListError,
    /// Not supported by this hypervisor / backend.
    NotSupported,
    /// A requested online vCPU count / set is outside what the domain allows.
    VcpuCountError,
}

impl ErrorKind {
    /// Every kind, for tests of the mapping.
    pub const ALL: [ErrorKind; 12] = [
        ErrorKind::Other,
        ErrorKind::NoHypervisor,
        ErrorKind::PermissionDenied,
        ErrorKind::InterfaceMismatch,
        ErrorKind::DomainNotFound,
        ErrorKind::DomainDying,
        ErrorKind::VcpuNotFound,
        ErrorKind::InvalidAffinity,
        ErrorKind::AffinityBusy,
        ErrorKind::CpuListError,
        ErrorKind::NotSupported,
        ErrorKind::VcpuCountError,
    ];

    /// The class name in `xenvcpu.errors`.
    pub fn class_name(self) -> &'static str {
        match self {
            ErrorKind::Other => "XenvcpuError",
            ErrorKind::NoHypervisor => "NoHypervisor",
            ErrorKind::PermissionDenied => "PermissionDenied",
            ErrorKind::InterfaceMismatch => "InterfaceMismatch",
            ErrorKind::DomainNotFound => "DomainNotFound",
            ErrorKind::DomainDying => "DomainDying",
            ErrorKind::VcpuNotFound => "VcpuNotFound",
            ErrorKind::InvalidAffinity => "InvalidAffinity",
            ErrorKind::AffinityBusy => "AffinityBusy",
            ErrorKind::CpuListError => "CpuListError",
            ErrorKind::NotSupported => "NotSupported",
            ErrorKind::VcpuCountError => "VcpuCountError",
        }
    }
}

/// A raw errno from the kernel or from Xen (Xen's numbers equal Linux/x86's, xen-interfaces.md §1.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    /// Symbolic name of the errnos this project meets (xen-interfaces.md §1.4, §7), else `E<n>`.
    pub fn name(self) -> String {
        let s = match self.0 {
            libc::EPERM => "EPERM",
            libc::ENOENT => "ENOENT",
            libc::ESRCH => "ESRCH",
            libc::ENXIO => "ENXIO",
            libc::EAGAIN => "EAGAIN",
            libc::ENOMEM => "ENOMEM",
            libc::EACCES => "EACCES",
            libc::EFAULT => "EFAULT",
            libc::EBUSY => "EBUSY",
            libc::ENODEV => "ENODEV",
            libc::EINVAL => "EINVAL",
            libc::ENOTTY => "ENOTTY",
            libc::ENOSYS => "ENOSYS",
            libc::ENODATA => "ENODATA",
            libc::EOPNOTSUPP => "EOPNOTSUPP",
            n => return format!("E{n}"),
        };
        s.to_string()
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

/// The core's error: a kind plus context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Which Python class this becomes.
    pub kind: ErrorKind,
    /// errno from Xen or the kernel, if any.
    pub errno: Option<i32>,
    /// Domain id the operation was about, if any.
    pub domain: Option<u32>,
    /// vCPU number the operation was about, if any.
    pub vcpu: Option<u32>,
    /// Human message (complete sentence, names the fix where there is one).
    pub message: String,
}

/// Result alias of the core.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A new error without context.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            errno: None,
            domain: None,
            vcpu: None,
            message: message.into(),
        }
    }

    /// Attach an errno.
    pub fn with_errno(mut self, errno: i32) -> Self {
        self.errno = Some(errno);
        self
    }

    /// Attach a domain id.
    pub fn with_domain(mut self, domid: u32) -> Self {
        self.domain = Some(domid);
        self
    }

    /// Attach a vCPU number.
    pub fn with_vcpu(mut self, vcpu: u32) -> Self {
        self.vcpu = Some(vcpu);
        self
    }

    /// The Python exception class name (`xenvcpu.errors.<name>`).
    pub fn kind_name(&self) -> &'static str {
        self.kind.class_name()
    }

    /// PermissionDenied with the standard fix.
    pub fn permission_denied(what: &str, errno: i32) -> Self {
        Error::new(
            ErrorKind::PermissionDenied,
            format!("{what}: permission denied; run as root in the control domain (dom0)"),
        )
        .with_errno(errno)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<crate::cpumap::CpuMapError> for Error {
    fn from(e: crate::cpumap::CpuMapError) -> Self {
        Error::new(ErrorKind::CpuListError, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_match_python_errors_module() {
        let src = include_str!("../../../python/xenvcpu/errors.py");
        for k in ErrorKind::ALL {
            let needle = format!("class {}(", k.class_name());
            assert!(
                src.contains(&needle),
                "{} missing from errors.py",
                k.class_name()
            );
        }
        // names are distinct
        let mut names: Vec<_> = ErrorKind::ALL.iter().map(|k| k.class_name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ErrorKind::ALL.len());
    }

    #[test]
    fn context_builders() {
        let e = Error::new(ErrorKind::VcpuNotFound, "x")
            .with_errno(3)
            .with_domain(7)
            .with_vcpu(9);
        assert_eq!((e.errno, e.domain, e.vcpu), (Some(3), Some(7), Some(9)));
        assert_eq!(e.kind_name(), "VcpuNotFound");
        let p = Error::permission_denied("open /dev/xen/privcmd", libc::EACCES);
        assert!(p
            .message
            .contains("run as root in the control domain (dom0)"));
        assert_eq!(p.kind_name(), "PermissionDenied");
    }

    #[test]
    fn errno_names() {
        assert_eq!(Errno(libc::EACCES).name(), "EACCES");
        assert_eq!(Errno(13).to_string(), "EACCES (13)");
        assert_eq!(Errno(999).name(), "E999");
    }
}
