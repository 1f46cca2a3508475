//! High-level operations over any [`Transport`]: what the PyO3 layer wraps.
//!
//! [`Xen`] owns one transport (and so one reusable hypercall arena), the interface version
//! chosen at open time from the running hypervisor (xen-interfaces.md §3.2, §8 item 1), and the host's CPU map
//! width `max_cpu_id + 1` (xen-interfaces.md §8 item 5). Bulk reads and writes go through
//! `__HYPERVISOR_multicall` (xen-interfaces.md §10) in chunks that fit the arena, each entry with its own
//! result; when the hypervisor refuses a batch the same entries are issued one by one.
//!
//! Every public method validates its input before the first state-changing hypercall, so a
//! typed error means nothing was changed.
//!
//! ```
//! use xenvcpu_core::cpumap::CpuMap;
//! use xenvcpu_core::ops::{VcpuRunState, Xen};
//!
//! use xenvcpu_core::sim::HostSpec;
//!
//! let mut xen = Xen::open_sim(&HostSpec::default_host())?; // or Xen::open_privcmd() in dom0
//! assert_eq!(xen.width(), 64);
//! let db = xen.vcpus(2)?;
//! assert_eq!(db[7].state(), VcpuRunState::Offline);
//! // effective hard = requested ∩ the domain's cpupool (CPUs 0-47 on this host)
//! let hard = CpuMap::parse("40-50", xen.width(), None)?;
//! let p = xen.pin(2, 0, Some(&hard), None, false)?;
//! assert_eq!(p.hard.unwrap().to_cpulist(), "40-47");
//! let e = xen.pin(2, 99, Some(&hard), None, false).unwrap_err();
//! assert_eq!(e.kind_name(), "VcpuNotFound");
//! # Ok::<(), xenvcpu_core::error::Error>(())
//! ```

use crate::abi::{
    self, domctl, dominf, sysctl, CpuTopoInfo, CpupoolOp, Field, GetDomainInfoList, GetVcpuInfo,
    InterfaceVersion, MulticallEntry, RawDomainInfo, RawPhysinfo, VcpuAffinity, XenctlBitmap,
};
use crate::cpumap::CpuMap;
use crate::error::{Errno, Error, ErrorKind, Result};
use crate::privcmd::Privcmd;
use crate::sim::{HostSpec, SimHandle, SimHost, SimTransport};
use crate::transport::Transport;
use std::time::{Duration, Instant};

mod domains;
mod host;
mod layout;
mod pin;
mod vcpus;

pub use pin::PinRequest;

/// Size of one domctl/sysctl block slot in the arena (144 and 136 B, xen-interfaces.md §3.1, §4.1).
const BLOCK: usize = abi::XenDomctl::SIZE;
/// Target arena size for one multicall chunk: within the hypercall buffer device's default
/// per-file limit of 64 pages (see [`crate::privcmd::BUFDEV_DEFAULT_LIMIT`]).
const CHUNK_BYTES: usize = crate::privcmd::BUFDEV_DEFAULT_LIMIT;
/// Domains per getdomaininfolist page.
const DOMAIN_PAGE: usize = 256;

fn align8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

/// Host facts from sysctl physinfo (xen-interfaces.md §4.2): the decoded ABI record itself.
pub use crate::abi::RawPhysinfo as PhysInfo;

/// Topology of one CPU (xen-interfaces.md §4.3); `None` fields are Xen's invalid ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTopology {
    /// core id (Xen's numbering)
    pub core: Option<u32>,
    /// socket id
    pub socket: Option<u32>,
    /// NUMA node
    pub node: Option<u32>,
}

/// A cpupool (xen-interfaces.md §4.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpupoolInfo {
    /// pool id
    pub id: u32,
    /// scheduler id (credit 5, credit2 6, arinc653 7)
    pub sched_id: u32,
    /// number of domains in the pool
    pub n_dom: u32,
    /// the pool's CPUs
    pub cpus: CpuMap,
}

/// A domain, from getdomaininfo (xen-interfaces.md §3.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainInfo {
    /// domid
    pub id: u32,
    /// UUID bytes
    pub uuid: [u8; 16],
    /// raw XEN_DOMINF_* flags
    pub flags: u32,
    /// being destroyed
    pub dying: bool,
    /// HVM guest
    pub hvm: bool,
    /// shut down
    pub shutdown: bool,
    /// shutdown code (SHUTDOWN_poweroff 0, reboot 1, suspend 2, crash 3, watchdog 4, soft_reset 5)
    pub shutdown_code: Option<u8>,
    /// paused by the toolstack
    pub paused: bool,
    /// some online vCPU is running
    pub running: bool,
    /// all online vCPUs are blocked
    pub blocked: bool,
    /// number of vCPUs (max_vcpu_id + 1; 0 if none)
    pub max_vcpus: u32,
    /// online vCPUs
    pub nr_online_vcpus: u32,
    /// ns, all vCPUs
    pub cpu_time_ns: u64,
    /// cpupool id
    pub cpupool: u32,
    /// pages in use
    pub tot_pages: u64,
    /// page limit
    pub max_pages: u64,
}

impl DomainInfo {
    fn from_raw(r: &RawDomainInfo) -> Self {
        let f = r.flags;
        let shutdown = f & dominf::SHUTDOWN != 0;
        DomainInfo {
            id: u32::from(r.domain),
            uuid: r.handle,
            flags: f,
            dying: f & dominf::DYING != 0,
            hvm: f & dominf::HVM_GUEST != 0,
            shutdown,
            shutdown_code: shutdown
                .then_some(((f >> dominf::SHUTDOWNSHIFT) & dominf::SHUTDOWNMASK) as u8),
            paused: f & dominf::PAUSED != 0,
            running: f & dominf::RUNNING != 0,
            blocked: f & dominf::BLOCKED != 0,
            max_vcpus: r.max_vcpu_id.wrapping_add(1),
            nr_online_vcpus: r.nr_online_vcpus,
            cpu_time_ns: r.cpu_time,
            cpupool: r.cpupool,
            tot_pages: r.tot_pages,
            max_pages: r.max_pages,
        }
    }

    /// UUID in the canonical 8-4-4-4-12 form.
    pub fn uuid_string(&self) -> String {
        let h: String = self.uuid.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

/// State of a vCPU as users see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VcpuRunState {
    /// not online
    Offline,
    /// on a pCPU now
    Running,
    /// waiting for an event
    Blocked,
    /// online, neither running nor blocked (waiting for a pCPU)
    Runnable,
}

impl VcpuRunState {
    /// Upper-case name, as the Python enum member.
    pub fn name(self) -> &'static str {
        match self {
            VcpuRunState::Offline => "OFFLINE",
            VcpuRunState::Running => "RUNNING",
            VcpuRunState::Blocked => "BLOCKED",
            VcpuRunState::Runnable => "RUNNABLE",
        }
    }
}

/// One vCPU: getvcpuinfo (xen-interfaces.md §3.5) + the configured affinity maps (xen-interfaces.md §3.6 get semantics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VcpuInfo {
    /// vCPU number
    pub number: u32,
    /// online
    pub online: bool,
    /// blocked
    pub blocked: bool,
    /// running
    pub running: bool,
    /// ns spent running
    pub cpu_time_ns: u64,
    /// pCPU it runs / last ran on; None when offline
    pub cpu: Option<u32>,
    /// configured hard affinity
    pub hard: CpuMap,
    /// configured soft affinity
    pub soft: CpuMap,
}

impl VcpuInfo {
    /// OFFLINE / RUNNING / BLOCKED / RUNNABLE.
    pub fn state(&self) -> VcpuRunState {
        match (self.online, self.running, self.blocked) {
            (false, _, _) => VcpuRunState::Offline,
            (true, true, _) => VcpuRunState::Running,
            (true, false, true) => VcpuRunState::Blocked,
            (true, false, false) => VcpuRunState::Runnable,
        }
    }
}

/// What Xen applied for a pin: the *effective* maps it wrote back (xen-interfaces.md §3.6 item 4) for the
/// kinds that were set (`None` for a kind not requested).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinning {
    /// effective hard affinity: requested ∩ cpupool's online CPUs
    pub hard: Option<CpuMap>,
    /// effective soft affinity: soft ∩ pool online ∩ hard (may be empty)
    pub soft: Option<CpuMap>,
}

/// Result per domain of a bulk vCPU read.
pub type DomainVcpus = (u32, Result<Vec<VcpuInfo>>);

/// A connection to a hypervisor (real or simulated).
pub struct Xen {
    t: Box<dyn Transport>,
    ver: InterfaceVersion,
    width: u32,
    sim: Option<SimHandle>,
    multicall_ok: bool,
}

impl std::fmt::Debug for Xen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Xen")
            .field("transport", &self.t.name())
            .field("version", &self.ver)
            .field("width", &self.width)
            .finish()
    }
}

fn entry_result(r: u64) -> std::result::Result<u64, i32> {
    let s = r as i64;
    if (-4095..0).contains(&s) {
        Err(-s as i32)
    } else {
        Ok(r)
    }
}

fn bad_map(e: crate::cpumap::CpuMapError) -> Error {
    Error::from(e)
}

impl Xen {
    /// Open the real hypervisor through privcmd.
    pub fn open_privcmd() -> Result<Self> {
        Self::with_transport(Box::new(Privcmd::open()?), None)
    }

    /// Open a simulated host (see [`crate::sim`]).
    pub fn open_sim(spec: &HostSpec) -> Result<Self> {
        let t = SimTransport::new(SimHost::new(spec)?);
        let h = t.handle();
        Self::with_transport(Box::new(t), Some(h))
    }

    /// Open over any transport: reads the Xen release, picks the interface (probing the 4.10
    /// split, xen-interfaces.md §8 item 1), and reads physinfo for the map width.
    pub fn with_transport(t: Box<dyn Transport>, sim: Option<SimHandle>) -> Result<Self> {
        let mut x = Xen {
            t,
            ver: InterfaceVersion {
                major: 0,
                minor: 0,
                domctl: 0,
                sysctl: 0,
                dominfo_size: 0,
            },
            width: 0,
            sim,
            multicall_ok: true,
        };
        x.t.reserve(crate::transport::PAGE)?;
        let v =
            x.t.hypercall(
                abi::HYPERVISOR_XEN_VERSION,
                [abi::XENVER_VERSION, 0, 0, 0, 0],
            )
            .map_err(|e| x.errno_error(e, "xen_version"))?;
        let (major, minor) = ((v >> 16) as u32, (v & 0xffff) as u32);
        let cands = InterfaceVersion::candidates(major, minor)?;
        let mut chosen = None;
        for c in &cands {
            x.ver = *c;
            if cands.len() == 1 {
                chosen = Some(*c);
                break;
            }
            // probe: getdomaininfo(0) — EACCES means "wrong version", nothing changes (xen-interfaces.md §8)
            match x.raw_getdomaininfo(0) {
                Err(Errno(libc::EACCES)) => continue,
                Ok(_) | Err(Errno(libc::ESRCH)) => {
                    chosen = Some(*c);
                    break;
                }
                Err(e) => return Err(x.errno_error(e, "getdomaininfo")),
            }
        }
        let Some(ver) = chosen else {
            let tried: Vec<String> = cands.iter().map(|c| format!("{:#04x}", c.domctl)).collect();
            return Err(Error::new(
                ErrorKind::InterfaceMismatch,
                format!(
                    "Xen {major}.{minor} refused every domctl interface version xenvcpu knows for \
                     it ({}) with EACCES",
                    tried.join(", ")
                ),
            )
            .with_errno(libc::EACCES));
        };
        x.ver = ver;
        let p = x.physinfo()?;
        x.width = p.max_cpu_id + 1;
        Ok(x)
    }

    /// The interface in use (Xen release, domctl/sysctl versions, getdomaininfo stride).
    pub fn version(&self) -> InterfaceVersion {
        self.ver
    }

    /// Width of every CPU map: `max_cpu_id + 1` (xen-interfaces.md §8 item 5).
    pub fn width(&self) -> usize {
        self.width as usize
    }

    /// The simulated host behind this connection, if it is one (toolstack side API).
    pub fn sim(&self) -> Option<&SimHandle> {
        self.sim.as_ref()
    }

    /// Transport name ("privcmd" or "sim").
    pub fn transport_name(&self) -> &'static str {
        self.t.name()
    }

    // ----- errors -------------------------------------------------------------------------

    /// Map a hypercall errno to a typed error (context added by callers).
    pub fn errno_error(&self, e: Errno, what: &str) -> Error {
        let Errno(n) = e;
        let msg = match n {
            libc::EACCES => {
                return Error::new(
                    ErrorKind::InterfaceMismatch,
                    format!(
                        "Xen {}.{} refused {what} with EACCES: interface version mismatch \
                         (xenvcpu used domctl {:#04x}, sysctl {:#04x})",
                        self.ver.major, self.ver.minor, self.ver.domctl, self.ver.sysctl
                    ),
                )
                .with_errno(n)
            }
            libc::EPERM => return Error::permission_denied(what, n),
            libc::ENOTTY => {
                return Error::new(
                    ErrorKind::NoHypervisor,
                    format!(
                        "{what}: the {} device does not accept IOCTL_PRIVCMD_HYPERCALL (ENOTTY): \
                         not a Xen privcmd device",
                        self.t.name()
                    ),
                )
                .with_errno(n)
            }
            libc::ENOSYS | libc::EOPNOTSUPP => {
                return Error::new(
                    ErrorKind::NotSupported,
                    format!("{what} is not supported by this hypervisor ({})", Errno(n)),
                )
                .with_errno(n)
            }
            libc::ESRCH => {
                return Error::new(ErrorKind::DomainNotFound, format!("{what}: no such domain"))
                    .with_errno(n)
            }
            _ => format!("{what} failed: {}", Errno(n)),
        };
        Error::new(ErrorKind::Other, msg).with_errno(n)
    }

    fn not_found(domid: u32) -> Error {
        Error::new(
            ErrorKind::DomainNotFound,
            format!("no domain with id {domid}"),
        )
        .with_domain(domid)
        .with_errno(libc::ESRCH)
    }

    // ----- raw calls --------------------------------------------------------------------------

    fn arena_base(&mut self) -> u64 {
        self.t.arena().0
    }

    fn domctl_at(&mut self, off: usize) -> std::result::Result<u64, Errno> {
        let base = self.arena_base();
        self.t
            .hypercall(abi::HYPERVISOR_DOMCTL, [base + off as u64, 0, 0, 0, 0])
    }

    fn sysctl_at(&mut self, off: usize) -> std::result::Result<u64, Errno> {
        let base = self.arena_base();
        self.t
            .hypercall(abi::HYPERVISOR_SYSCTL, [base + off as u64, 0, 0, 0, 0])
    }

    fn raw_getdomaininfo(&mut self, domid: u16) -> std::result::Result<RawDomainInfo, Errno> {
        self.t
            .reserve(BLOCK)
            .map_err(|e| Errno(e.errno.unwrap_or(libc::ENOMEM)))?;
        let v = self.ver.domctl;
        abi::domctl_header(self.t.arena().1, domctl::GETDOMAININFO, v, domid);
        self.domctl_at(0)?;
        Ok(RawDomainInfo::decode(&self.t.arena().1[abi::DOMCTL_U..]))
    }

    /// Issue `n` multicall entries laid out at arena offset 0: one batch, or — where the
    /// hypervisor refuses batches — one hypercall per entry, results written back the same way.
    fn run_entries(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        if self.multicall_ok {
            let base = self.arena_base();
            match self
                .t
                .hypercall(abi::HYPERVISOR_MULTICALL, [base, n as u64, 0, 0, 0])
            {
                Ok(_) => return Ok(()),
                Err(Errno(libc::ENOTTY)) => {
                    return Err(self.errno_error(Errno(libc::ENOTTY), "multicall"))
                }
                Err(Errno(e)) => {
                    if matches!(e, libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP) {
                        self.multicall_ok = false; // permanent refusal: stop trying
                    }
                }
            }
        }
        for i in 0..n {
            let off = i * MulticallEntry::SIZE;
            let e = MulticallEntry::decode(&self.t.arena().1[off..]);
            let a = e.args;
            let r = match self.t.hypercall(e.op, [a[0], a[1], a[2], a[3], a[4]]) {
                Ok(v) => v,
                Err(Errno(x)) => (-i64::from(x)) as u64,
            };
            r.put(&mut self.t.arena().1[off + abi::MULTICALL_RESULT..]);
        }
        Ok(())
    }

    /// Whether batches currently go through multicall (false after a permanent refusal).
    pub fn multicall_enabled(&self) -> bool {
        self.multicall_ok
    }

    /// Turn multicall batching on or off (off: one hypercall per domctl, as libxc does) — for
    /// benchmarks and for comparing both paths on a real hypervisor.
    pub fn set_batching(&mut self, on: bool) {
        self.multicall_ok = on;
    }
}

/// Benchmark helper: `rounds` full snapshots (every vCPU of every domain) over the same
/// connection; returns (vCPUs per snapshot, total time).
pub fn bench_snapshot(xen: &mut Xen, rounds: u32) -> Result<(usize, Duration)> {
    let mut n = 0;
    let t0 = Instant::now();
    for _ in 0..rounds {
        n = 0;
        for (_, r) in xen.snapshot()? {
            n += r.map_or(0, |v| v.len());
        }
    }
    Ok((n, t0.elapsed()))
}

#[cfg(test)]
mod tests;
