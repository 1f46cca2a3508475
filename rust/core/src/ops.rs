//! High-level operations over any [`Transport`]: what the PyO3 layer wraps.
//!
//! [`Xen`] owns one transport (and so one reusable hypercall arena), the interface version
//! chosen at open time from the running hypervisor (ref §3.2, §8 item 1), and the host's CPU map
//! width `max_cpu_id + 1` (ref §8 item 5). Bulk reads and writes go through
//! `__HYPERVISOR_multicall` (ref §10) in chunks that fit the arena, each entry with its own
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

/// Size of one domctl/sysctl block slot in the arena (144 and 136 B, ref §3.1, §4.1).
const BLOCK: usize = abi::XenDomctl::SIZE;
/// Target arena size for one multicall chunk: within the hypercall buffer device's default
/// per-file limit of 64 pages (see [`crate::privcmd::BUFDEV_DEFAULT_LIMIT`]).
const CHUNK_BYTES: usize = crate::privcmd::BUFDEV_DEFAULT_LIMIT;
/// Domains per getdomaininfolist page.
const DOMAIN_PAGE: usize = 256;

fn align8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

/// Host facts from sysctl physinfo (ref §4.2): the decoded ABI record itself.
pub use crate::abi::RawPhysinfo as PhysInfo;

/// Topology of one CPU (ref §4.3); `None` fields are Xen's invalid ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTopology {
    /// core id (Xen's numbering)
    pub core: Option<u32>,
    /// socket id
    pub socket: Option<u32>,
    /// NUMA node
    pub node: Option<u32>,
}

/// A NUMA node (ref §4.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumaNode {
    /// node id
    pub id: u32,
    /// bytes (None when the node is offline)
    pub memsize: Option<u64>,
    /// bytes free
    pub memfree: Option<u64>,
    /// distance to every node (None entries: offline)
    pub distances: Vec<Option<u32>>,
}

/// A cpupool (ref §4.5).
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

/// A domain, from getdomaininfo (ref §3.4).
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

/// One vCPU: getvcpuinfo (ref §3.5) + the configured affinity maps (ref §3.6 get semantics).
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

/// What Xen applied for a pin: the *effective* maps it wrote back (ref §3.6 item 4) for the
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
    /// split, ref §8 item 1), and reads physinfo for the map width.
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
            // probe: getdomaininfo(0) — EACCES means "wrong version", nothing changes (ref §8)
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

    /// Width of every CPU map: `max_cpu_id + 1` (ref §8 item 5).
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
            r.put(&mut self.t.arena().1[off + 8..]);
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

    // ----- host ---------------------------------------------------------------------------------

    /// sysctl physinfo (ref §4.2).
    pub fn physinfo(&mut self) -> Result<PhysInfo> {
        self.t.reserve(BLOCK)?;
        let v = self.ver.sysctl;
        abi::sysctl_header(self.t.arena().1, sysctl::PHYSINFO, v);
        self.sysctl_at(0)
            .map_err(|e| self.errno_error(e, "sysctl physinfo"))?;
        let layout = self.ver.physinfo_layout();
        Ok(RawPhysinfo::decode(
            &self.t.arena().1[abi::SYSCTL_U..],
            layout,
        ))
    }

    /// Per-CPU topology (ref §4.3), `width()` entries; `None` for CPUs Xen reports nothing for.
    pub fn topology(&mut self) -> Result<Vec<Option<CpuTopology>>> {
        // first call with a NULL handle: how many entries Xen has
        self.t.reserve(BLOCK)?;
        let v = self.ver.sysctl;
        let u = abi::sysctl_header(self.t.arena().1, sysctl::CPUTOPOINFO, v);
        CpuTopoInfo::default().encode(u);
        self.sysctl_at(0)
            .map_err(|e| self.errno_error(e, "sysctl cputopoinfo"))?;
        let n = CpuTopoInfo::decode(&self.t.arena().1[abi::SYSCTL_U..]).num_cpus as usize;
        let arr = BLOCK;
        self.t.reserve(arr + n * abi::CpuTopo::SIZE)?;
        let base = self.arena_base();
        let u = abi::sysctl_header(self.t.arena().1, sysctl::CPUTOPOINFO, v);
        CpuTopoInfo {
            num_cpus: n as u32,
            pad: 0,
            cputopo: base + arr as u64,
        }
        .encode(u);
        self.sysctl_at(0)
            .map_err(|e| self.errno_error(e, "sysctl cputopoinfo"))?;
        let got =
            (CpuTopoInfo::decode(&self.t.arena().1[abi::SYSCTL_U..]).num_cpus as usize).min(n);
        let inv = |x: u32| (x != abi::XEN_INVALID_TOPO_ID).then_some(x);
        let a = &self.t.arena().1[arr..];
        let mut out: Vec<Option<CpuTopology>> = (0..got)
            .map(|i| {
                let t = abi::CpuTopo::decode(&a[i * abi::CpuTopo::SIZE..]);
                let c = CpuTopology {
                    core: inv(t.core),
                    socket: inv(t.socket),
                    node: inv(t.node),
                };
                (c.core.is_some() || c.socket.is_some() || c.node.is_some()).then_some(c)
            })
            .collect();
        out.resize(self.width().max(got), None);
        Ok(out)
    }

    /// NUMA nodes with memory and distances (ref §4.4).
    pub fn numa(&mut self) -> Result<Vec<NumaNode>> {
        self.t.reserve(BLOCK)?;
        let v = self.ver.sysctl;
        let u = abi::sysctl_header(self.t.arena().1, sysctl::NUMAINFO, v);
        abi::NumaInfo::default().encode(u);
        self.sysctl_at(0)
            .map_err(|e| self.errno_error(e, "sysctl numainfo"))?;
        let n = abi::NumaInfo::decode(&self.t.arena().1[abi::SYSCTL_U..]).num_nodes as usize;
        let mem_off = BLOCK;
        let dist_off = mem_off + n * abi::MemInfo::SIZE;
        self.t.reserve(dist_off + n * n * 4)?;
        let base = self.arena_base();
        let u = abi::sysctl_header(self.t.arena().1, sysctl::NUMAINFO, v);
        abi::NumaInfo {
            num_nodes: n as u32,
            pad: 0,
            meminfo: base + mem_off as u64,
            distance: base + dist_off as u64,
        }
        .encode(u);
        self.sysctl_at(0)
            .map_err(|e| self.errno_error(e, "sysctl numainfo"))?;
        let a = self.t.arena().1;
        let inv64 = |x: u64| (x != abi::XEN_INVALID_MEM_SZ).then_some(x);
        Ok((0..n)
            .map(|i| {
                let m = abi::MemInfo::decode(&a[mem_off + i * abi::MemInfo::SIZE..]);
                NumaNode {
                    id: i as u32,
                    memsize: inv64(m.memsize),
                    memfree: inv64(m.memfree),
                    distances: (0..n)
                        .map(|j| {
                            let d = u32::get(&a[dist_off + (i * n + j) * 4..]);
                            (d != 0xFFFF_FFFF).then_some(d)
                        })
                        .collect(),
                }
            })
            .collect())
    }

    fn cpupool_call(
        &mut self,
        op: u32,
        id: u32,
    ) -> std::result::Result<(CpupoolOp, CpuMap), Errno> {
        let mb = abi::bitmap_bytes(self.width);
        self.t
            .reserve(BLOCK + mb)
            .map_err(|_| Errno(libc::ENOMEM))?;
        let base = self.arena_base();
        let v = self.ver.sysctl;
        let u = abi::sysctl_header(self.t.arena().1, sysctl::CPUPOOL_OP, v);
        CpupoolOp {
            op,
            cpupool_id: id,
            cpumap: XenctlBitmap {
                bitmap: base + BLOCK as u64,
                nr_bits: (mb * 8) as u32,
                pad: 0,
            },
            ..Default::default()
        }
        .encode(u);
        self.t.arena().1[BLOCK..BLOCK + mb].fill(0);
        self.sysctl_at(0)?;
        let a = self.t.arena().1;
        let r = CpupoolOp::decode(&a[abi::SYSCTL_U..]);
        let map = self.map_from_arena(BLOCK);
        Ok((r, map))
    }

    /// Read a `width`-wide map at arena offset `off`, masking bits beyond the width.
    fn map_from_arena(&mut self, off: usize) -> CpuMap {
        let w = self.width as usize;
        let mb = w.div_ceil(8);
        let a = &mut self.t.arena().1[off..off + mb];
        if w % 8 != 0 {
            a[mb - 1] &= (1u8 << (w % 8)) - 1;
        }
        CpuMap::from_bytes(a, Some(w)).expect("masked to width")
    }

    /// Every cpupool (ref §4.5: INFO returns the first pool with id ≥ the asked one).
    pub fn cpupools(&mut self) -> Result<Vec<CpupoolInfo>> {
        let mut out = Vec::new();
        let mut next = 0u32;
        loop {
            match self.cpupool_call(abi::cpupool_op::INFO, next) {
                Ok((r, cpus)) => {
                    out.push(CpupoolInfo {
                        id: r.cpupool_id,
                        sched_id: r.sched_id,
                        n_dom: r.n_dom,
                        cpus,
                    });
                    match r.cpupool_id.checked_add(1) {
                        Some(n) => next = n,
                        None => break,
                    }
                }
                Err(Errno(libc::ENOENT)) => break,
                Err(e) => return Err(self.errno_error(e, "sysctl cpupool_op info")),
            }
        }
        Ok(out)
    }

    /// Online pCPUs: the union of every cpupool's CPUs and the free CPUs (FREEINFO).
    pub fn online_cpus(&mut self) -> Result<CpuMap> {
        let mut m = CpuMap::new(self.width()).map_err(bad_map)?;
        for p in self.cpupools()? {
            m = m.union(&p.cpus).map_err(bad_map)?;
        }
        match self.cpupool_call(abi::cpupool_op::FREEINFO, 0) {
            Ok((_, free)) => m = m.union(&free).map_err(bad_map)?,
            Err(e) => return Err(self.errno_error(e, "sysctl cpupool_op freeinfo")),
        }
        Ok(m)
    }

    // ----- domains ------------------------------------------------------------------------------

    /// Every domain, paged through getdomaininfolist at the version's stride (ref §3.8).
    pub fn domains(&mut self) -> Result<Vec<DomainInfo>> {
        let stride = self.ver.dominfo_size;
        let buf = BLOCK;
        self.t.reserve(buf + DOMAIN_PAGE * stride)?;
        let mut out = Vec::new();
        let mut first: u32 = 0;
        loop {
            let base = self.arena_base();
            let v = self.ver.sysctl;
            let u = abi::sysctl_header(self.t.arena().1, sysctl::GETDOMAININFOLIST, v);
            GetDomainInfoList {
                first_domain: first as u16,
                max_domains: DOMAIN_PAGE as u32,
                buffer: base + buf as u64,
                ..Default::default()
            }
            .encode(u);
            self.sysctl_at(0)
                .map_err(|e| self.errno_error(e, "sysctl getdomaininfolist"))?;
            let a = self.t.arena().1;
            let n = (GetDomainInfoList::decode(&a[abi::SYSCTL_U..]).num_domains as usize)
                .min(DOMAIN_PAGE);
            for i in 0..n {
                out.push(DomainInfo::from_raw(&RawDomainInfo::decode(
                    &a[buf + i * stride..],
                )));
            }
            match out.last() {
                Some(last) if n == DOMAIN_PAGE && last.id + 1 < abi::DOMID_FIRST_RESERVED => {
                    first = last.id + 1
                }
                _ => break,
            }
        }
        Ok(out)
    }

    /// Exact lookup of one domain (ref §3.4: Xen ≤ 4.17 answers with the *next* domain, so
    /// the returned id is checked).
    pub fn domain(&mut self, domid: u32) -> Result<DomainInfo> {
        if domid >= abi::DOMID_FIRST_RESERVED {
            return Err(Self::not_found(domid));
        }
        match self.raw_getdomaininfo(domid as u16) {
            Ok(r) if u32::from(r.domain) == domid => Ok(DomainInfo::from_raw(&r)),
            Ok(_) | Err(Errno(libc::ESRCH)) => Err(Self::not_found(domid)),
            Err(e) => Err(self
                .errno_error(e, "domctl getdomaininfo")
                .with_domain(domid)),
        }
    }

    // ----- vCPUs --------------------------------------------------------------------------------

    /// Every vCPU of a domain (getvcpuinfo + getvcpuaffinity per vCPU, batched).
    pub fn vcpus(&mut self, domid: u32) -> Result<Vec<VcpuInfo>> {
        let d = self.domain(domid)?;
        let mut r = self.batch_vcpus(&[(domid, d.max_vcpus)])?;
        r.pop().expect("one request").1
    }

    /// One vCPU of a domain.
    pub fn vcpu(&mut self, domid: u32, vcpu: u32) -> Result<VcpuInfo> {
        let d = self.domain(domid)?;
        Self::check_vcpu(&d, vcpu)?;
        let mut r = self.batch_vcpu_list(&[(domid, vcpu)])?;
        r.pop().expect("one request")
    }

    /// vCPUs of several domains in as few batches as fit the arena. One failing domain (gone,
    /// dying, …) does not hide the others: each gets its own result.
    pub fn vcpus_all(&mut self, domids: &[u32]) -> Result<Vec<DomainVcpus>> {
        let all = self.domains()?;
        let mut reqs = Vec::with_capacity(domids.len());
        let mut missing = Vec::new();
        for &id in domids {
            match all.iter().find(|d| d.id == id) {
                Some(d) => reqs.push((id, d.max_vcpus)),
                None => missing.push(id),
            }
        }
        let mut got = self.batch_vcpus(&reqs)?;
        let mut out = Vec::with_capacity(domids.len());
        for &id in domids {
            if missing.contains(&id) {
                out.push((id, Err(Self::not_found(id))));
            } else {
                let pos = got.iter().position(|g| g.0 == id).expect("requested");
                out.push(got.swap_remove(pos));
            }
        }
        Ok(out)
    }

    /// Every domain with every vCPU: one paged list, then batched vCPU reads.
    pub fn snapshot(&mut self) -> Result<Vec<(DomainInfo, Result<Vec<VcpuInfo>>)>> {
        let all = self.domains()?;
        let reqs: Vec<(u32, u32)> = all.iter().map(|d| (d.id, d.max_vcpus)).collect();
        let got = self.batch_vcpus(&reqs)?;
        Ok(all.into_iter().zip(got).map(|(d, (_, r))| (d, r)).collect())
    }

    fn batch_vcpus(&mut self, reqs: &[(u32, u32)]) -> Result<Vec<DomainVcpus>> {
        let list: Vec<(u32, u32)> = reqs
            .iter()
            .flat_map(|&(d, n)| (0..n).map(move |v| (d, v)))
            .collect();
        let results = self.batch_vcpu_list(&list)?;
        let mut out: Vec<DomainVcpus> = Vec::with_capacity(reqs.len());
        let mut it = results.into_iter();
        for &(domid, n) in reqs {
            let rs: Vec<Result<VcpuInfo>> = it.by_ref().take(n as usize).collect();
            out.push((domid, Self::collect_domain(domid, rs)));
        }
        Ok(out)
    }

    /// Fold per-vCPU results of one domain: all ESRCH → the domain is gone; a single missing
    /// slot (ESRCH) is skipped; any other error fails the domain with that vCPU's error.
    fn collect_domain(domid: u32, rs: Vec<Result<VcpuInfo>>) -> Result<Vec<VcpuInfo>> {
        let srch = |r: &Result<VcpuInfo>| matches!(r, Err(e) if e.errno == Some(libc::ESRCH));
        if !rs.is_empty() && rs.iter().all(srch) {
            return Err(Self::not_found(domid));
        }
        let mut v = Vec::with_capacity(rs.len());
        for r in rs {
            match r {
                Ok(i) => v.push(i),
                Err(e) if e.errno == Some(libc::ESRCH) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(v)
    }

    /// Read (domid, vcpu) pairs with 2 multicall entries each, chunked to the arena target.
    fn batch_vcpu_list(&mut self, list: &[(u32, u32)]) -> Result<Vec<Result<VcpuInfo>>> {
        let mb = abi::bitmap_bytes(self.width);
        let mb8 = align8(mb);
        let per = 2 * MulticallEntry::SIZE + 2 * BLOCK + 2 * mb8;
        let chunk = (CHUNK_BYTES / per).max(1);
        let mut out = Vec::with_capacity(list.len());
        for part in list.chunks(chunk) {
            let n = part.len();
            let blocks = 2 * n * MulticallEntry::SIZE;
            let maps = blocks + 2 * n * BLOCK;
            self.t.reserve(maps + 2 * n * mb8)?;
            let dv = self.ver.domctl;
            let (base, a) = self.t.arena();
            for (i, &(domid, vcpu)) in part.iter().enumerate() {
                let (bi, ba) = (blocks + 2 * i * BLOCK, blocks + (2 * i + 1) * BLOCK);
                let (mh, ms) = (maps + 2 * i * mb8, maps + (2 * i + 1) * mb8);
                let u = abi::domctl_header(&mut a[bi..], domctl::GETVCPUINFO, dv, domid as u16);
                vcpu.put(u);
                let u = abi::domctl_header(&mut a[ba..], domctl::GETVCPUAFFINITY, dv, domid as u16);
                let bits = (mb * 8) as u32;
                VcpuAffinity {
                    vcpu,
                    flags: abi::VCPUAFFINITY_HARD | abi::VCPUAFFINITY_SOFT,
                    cpumap_hard: XenctlBitmap {
                        bitmap: base + mh as u64,
                        nr_bits: bits,
                        pad: 0,
                    },
                    cpumap_soft: XenctlBitmap {
                        bitmap: base + ms as u64,
                        nr_bits: bits,
                        pad: 0,
                    },
                }
                .encode(u);
                a[mh..mh + 2 * mb8].fill(0);
                for (k, b) in [bi, ba].into_iter().enumerate() {
                    MulticallEntry {
                        op: abi::HYPERVISOR_DOMCTL,
                        result: 0,
                        args: [base + b as u64, 0, 0, 0, 0, 0],
                    }
                    .encode(&mut a[(2 * i + k) * MulticallEntry::SIZE..]);
                }
            }
            self.run_entries(2 * n)?;
            for (i, &(domid, vcpu)) in part.iter().enumerate() {
                let a = self.t.arena().1;
                let r_info = entry_result(u64::get(&a[2 * i * MulticallEntry::SIZE + 8..]));
                let r_aff = entry_result(u64::get(&a[(2 * i + 1) * MulticallEntry::SIZE + 8..]));
                let res = match r_info.and(r_aff) {
                    Err(e) => Err(self.vcpu_error(Errno(e), domid, vcpu, "reading")),
                    Ok(_) => {
                        let gi = GetVcpuInfo::decode(&a[blocks + 2 * i * BLOCK + abi::DOMCTL_U..]);
                        let (mh, ms) = (maps + 2 * i * mb8, maps + (2 * i + 1) * mb8);
                        let hard = self.map_from_arena(mh);
                        let soft = self.map_from_arena(ms);
                        Ok(VcpuInfo {
                            number: gi.vcpu,
                            online: gi.online != 0,
                            blocked: gi.blocked != 0,
                            running: gi.running != 0,
                            cpu_time_ns: gi.cpu_time,
                            cpu: (gi.online != 0).then_some(gi.cpu),
                            hard,
                            soft,
                        })
                    }
                };
                out.push(res);
            }
        }
        Ok(out)
    }

    fn vcpu_error(&self, e: Errno, domid: u32, vcpu: u32, doing: &str) -> Error {
        match e.0 {
            libc::ESRCH => Error::new(
                ErrorKind::VcpuNotFound,
                format!("domain {domid} has no vCPU {vcpu} (ESRCH while {doing} it), or the domain is gone"),
            )
            .with_errno(e.0)
            .with_domain(domid)
            .with_vcpu(vcpu),
            libc::EBUSY => Error::new(
                ErrorKind::AffinityBusy,
                format!(
                    "domain {domid} vCPU {vcpu}: Xen refused the affinity change (EBUSY): a \
                     temporary pin override is active; retry with force=True to clear it"
                ),
            )
            .with_errno(e.0)
            .with_domain(domid)
            .with_vcpu(vcpu),
            _ => self
                .errno_error(e, &format!("{doing} domain {domid} vCPU {vcpu}"))
                .with_domain(domid)
                .with_vcpu(vcpu),
        }
    }

    fn check_vcpu(d: &DomainInfo, vcpu: u32) -> Result<()> {
        if vcpu >= d.max_vcpus {
            return Err(Error::new(
                ErrorKind::VcpuNotFound,
                format!(
                    "domain {} has no vCPU {vcpu}: valid vCPUs are {}",
                    d.id,
                    crate::cpumap::valid_range(d.max_vcpus as usize)
                ),
            )
            .with_domain(d.id)
            .with_vcpu(vcpu));
        }
        Ok(())
    }

    // ----- pinning ------------------------------------------------------------------------------

    /// Validate a requested map against the host width: no CPU at or above `width()`; hard must
    /// not be empty. Returns the map at exactly the host width.
    fn check_map(&self, m: &CpuMap, kind: &str, domid: u32, vcpu: Option<u32>) -> Result<CpuMap> {
        let w = self.width();
        let ctx = |e: Error| {
            let e = e.with_domain(domid);
            match vcpu {
                Some(v) => e.with_vcpu(v),
                None => e,
            }
        };
        if let Some(h) = m.highest() {
            if h >= w {
                return Err(ctx(Error::new(
                    ErrorKind::InvalidAffinity,
                    format!(
                        "{kind} affinity {} names CPU {h}, but this host has CPUs 0-{} \
                         (domain {domid}{})",
                        m.to_cpulist(),
                        w - 1,
                        vcpu.map_or(String::new(), |v| format!(", vCPU {v}"))
                    ),
                )));
            }
        } else if kind == "hard" {
            return Err(ctx(Error::new(
                ErrorKind::InvalidAffinity,
                format!(
                    "hard affinity is empty (domain {domid}{}): a vCPU needs at least one CPU",
                    vcpu.map_or(String::new(), |v| format!(", vCPU {v}"))
                ),
            )));
        }
        if m.width() == w {
            Ok(m.clone())
        } else {
            m.resized(w).map_err(bad_map)
        }
    }

    fn pin_prepare(
        &mut self,
        domid: u32,
        vcpu: Option<u32>,
        hard: Option<&CpuMap>,
        soft: Option<&CpuMap>,
        force: bool,
    ) -> Result<(DomainInfo, Option<CpuMap>, Option<CpuMap>, u32)> {
        if hard.is_none() && soft.is_none() {
            let e = Error::new(
                ErrorKind::InvalidAffinity,
                format!("nothing to pin for domain {domid}: give a hard and/or a soft affinity"),
            )
            .with_domain(domid);
            return Err(match vcpu {
                Some(v) => e.with_vcpu(v),
                None => e,
            });
        }
        if force && !self.ver.has_force_flag() {
            return Err(Error::new(
                ErrorKind::NotSupported,
                format!(
                    "force needs Xen 4.7 or later (this is Xen {}.{})",
                    self.ver.major, self.ver.minor
                ),
            )
            .with_domain(domid));
        }
        let h = hard
            .map(|m| self.check_map(m, "hard", domid, vcpu))
            .transpose()?;
        let s = soft
            .map(|m| self.check_map(m, "soft", domid, vcpu))
            .transpose()?;
        let d = self.domain(domid)?;
        if d.dying {
            return Err(Error::new(
                ErrorKind::DomainDying,
                format!("domain {domid} is being destroyed; its vCPUs cannot be pinned"),
            )
            .with_domain(domid));
        }
        if let Some(v) = vcpu {
            Self::check_vcpu(&d, v)?;
        }
        let mut flags = 0;
        if h.is_some() {
            flags |= abi::VCPUAFFINITY_HARD;
        }
        if s.is_some() {
            flags |= abi::VCPUAFFINITY_SOFT;
        }
        if force {
            flags |= abi::VCPUAFFINITY_FORCE;
        }
        Ok((d, h, s, flags))
    }

    /// Set hard and/or soft affinity of one vCPU; returns the effective maps Xen applied.
    /// `force` clears a stuck pin override first (Xen ≥ 4.7).
    pub fn pin(
        &mut self,
        domid: u32,
        vcpu: u32,
        hard: Option<&CpuMap>,
        soft: Option<&CpuMap>,
        force: bool,
    ) -> Result<Pinning> {
        let (d, h, s, flags) = self.pin_prepare(domid, Some(vcpu), hard, soft, force)?;
        let mut r = self.batch_pin(&d, &[vcpu], h.as_ref(), s.as_ref(), flags)?;
        r.pop().expect("one").1
    }

    /// Pin every vCPU of a domain (offline ones too, like `xl vcpu-pin D all`). Everything is
    /// validated first; the sets are then batched and each vCPU gets its own result.
    pub fn pin_all(
        &mut self,
        domid: u32,
        hard: Option<&CpuMap>,
        soft: Option<&CpuMap>,
        force: bool,
    ) -> Result<Vec<(u32, Result<Pinning>)>> {
        let (d, h, s, flags) = self.pin_prepare(domid, None, hard, soft, force)?;
        let vcpus: Vec<u32> = (0..d.max_vcpus).collect();
        self.batch_pin(&d, &vcpus, h.as_ref(), s.as_ref(), flags)
    }

    fn batch_pin(
        &mut self,
        d: &DomainInfo,
        vcpus: &[u32],
        hard: Option<&CpuMap>,
        soft: Option<&CpuMap>,
        flags: u32,
    ) -> Result<Vec<(u32, Result<Pinning>)>> {
        let domid = d.id;
        let mb = abi::bitmap_bytes(self.width);
        let mb8 = align8(mb);
        let per = MulticallEntry::SIZE + BLOCK + 2 * mb8;
        let chunk = (CHUNK_BYTES / per).max(1);
        let mut out = Vec::with_capacity(vcpus.len());
        let mut pool_cpus: Option<String> = None;
        for part in vcpus.chunks(chunk) {
            let n = part.len();
            let blocks = n * MulticallEntry::SIZE;
            let maps = blocks + n * BLOCK;
            self.t.reserve(maps + 2 * n * mb8)?;
            let (base, a) = self.t.arena();
            let dv = self.ver.domctl;
            let bits = (mb * 8) as u32;
            for (i, &vcpu) in part.iter().enumerate() {
                let b = blocks + i * BLOCK;
                let (mh, ms) = (maps + 2 * i * mb8, maps + (2 * i + 1) * mb8);
                // separate input maps per entry: Xen writes the effective maps back into them
                a[mh..mh + 2 * mb8].fill(0);
                if let Some(m) = hard {
                    m.write_bytes(&mut a[mh..mh + mb]).map_err(bad_map)?;
                }
                if let Some(m) = soft {
                    m.write_bytes(&mut a[ms..ms + mb]).map_err(bad_map)?;
                }
                let bm = |off: usize, on: bool| XenctlBitmap {
                    bitmap: if on { base + off as u64 } else { 0 },
                    nr_bits: if on { bits } else { 0 },
                    pad: 0,
                };
                let u = abi::domctl_header(&mut a[b..], domctl::SETVCPUAFFINITY, dv, domid as u16);
                VcpuAffinity {
                    vcpu,
                    flags,
                    cpumap_hard: bm(mh, hard.is_some()),
                    cpumap_soft: bm(ms, soft.is_some()),
                }
                .encode(u);
                MulticallEntry {
                    op: abi::HYPERVISOR_DOMCTL,
                    result: 0,
                    args: [base + b as u64, 0, 0, 0, 0, 0],
                }
                .encode(&mut a[i * MulticallEntry::SIZE..]);
            }
            self.run_entries(n)?;
            // First read every entry's own result and maps, then build errors: the error path
            // may issue lookups that reuse the arena.
            let raw: Vec<(u32, std::result::Result<Pinning, i32>)> = part
                .iter()
                .enumerate()
                .map(|(i, &vcpu)| {
                    let r =
                        entry_result(u64::get(&self.t.arena().1[i * MulticallEntry::SIZE + 8..]));
                    let (mh, ms) = (maps + 2 * i * mb8, maps + (2 * i + 1) * mb8);
                    let res = r.map(|_| Pinning {
                        hard: hard.is_some().then(|| self.map_from_arena(mh)),
                        soft: soft.is_some().then(|| self.map_from_arena(ms)),
                    });
                    (vcpu, res)
                })
                .collect();
            for (vcpu, r) in raw {
                let res = match r {
                    Ok(p) => Ok(p),
                    Err(libc::EINVAL) => {
                        if pool_cpus.is_none() {
                            pool_cpus = Some(self.pool_cpulist(d.cpupool));
                        }
                        Err(Error::new(
                            ErrorKind::InvalidAffinity,
                            format!(
                                "domain {domid} vCPU {vcpu}: Xen refused {} (EINVAL): the hard \
                                 affinity must contain an online CPU of the domain's cpupool {}, \
                                 whose CPUs are {}",
                                hard.map_or("the affinity".to_string(), |h| format!(
                                    "hard affinity {}",
                                    h.to_cpulist()
                                )),
                                d.cpupool,
                                pool_cpus.as_deref().unwrap_or("?")
                            ),
                        )
                        .with_errno(libc::EINVAL)
                        .with_domain(domid)
                        .with_vcpu(vcpu))
                    }
                    Err(e) => Err(self.vcpu_error(Errno(e), domid, vcpu, "pinning")),
                };
                out.push((vcpu, res));
            }
        }
        Ok(out)
    }

    fn pool_cpulist(&mut self, pool: u32) -> String {
        match self.cpupool_call(abi::cpupool_op::INFO, pool) {
            Ok((r, m)) if r.cpupool_id == pool && m.is_empty() => "(none)".to_string(),
            Ok((r, m)) if r.cpupool_id == pool => m.to_cpulist(),
            _ => "unknown".to_string(),
        }
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
