//! Host descriptions for the simulator: the built-in `sim:///default`, scale hosts built
//! from parameters, and TOML files ([`HostSpec::from_toml`], in `sim/toml.rs`).
//!
//! Every description is input from users, so everything here is checked before anything is
//! allocated by its size: numbers are parsed without wrapping, every size is capped (the
//! caps are the `MAX_*` constants, named in the errors and in docs/limits.md), arithmetic is
//! checked and nothing is indexed unchecked (the lints below enforce it).
#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice
)]

use crate::abi::{sched, DOMID_FIRST_RESERVED};
use crate::error::{Error, ErrorKind, Result};
use std::collections::BTreeMap;
use std::time::Duration;

/// The most CPUs (`nr_cpu_ids`) a simulated host may have.
pub const MAX_CPUS: u32 = 1 << 18;
/// The most vCPUs a simulated domain may have (Xen's own per-domain limit, MAX_VIRT_CPUS).
pub const MAX_VCPUS: u32 = 8192;
/// The most domains a simulated host may have: every id below DOMID_FIRST_RESERVED.
pub const MAX_DOMAINS: u32 = DOMID_FIRST_RESERVED;
/// The most cpupools a simulated host may have.
pub const MAX_POOLS: usize = 1024;
/// The most bytes the affinity maps of all vCPUs may take together (two maps of
/// `nr_cpu_ids / 8` bytes per vCPU): what a snapshot of the host holds.
pub const MAX_MAP_BYTES: u64 = 256 << 20;
/// The most vCPUs all domains of a simulated host may have together.
pub const MAX_TOTAL_VCPUS: u64 = 1 << 20;
/// The longest domain or cpupool name, in characters.
pub const MAX_NAME: usize = 256;
/// The most memory a simulated domain or NUMA node may have, in MiB (4 PiB).
pub const MAX_MEM_MB: u64 = 1 << 32;
/// The longest delay before a simulated guest follows an online-vCPU change (a day).
pub const MAX_DELAY_MS: u64 = 86_400_000;
/// The most ids all the lists of a host description may hold together (offline CPUs,
/// pools' CPUs, domains' online vCPUs and affinities), counted before a range is expanded.
pub const MAX_LIST_IDS: u64 = 1 << 24;

/// What the simulated guest does after the toolstack changes `cpu/<n>/availability`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    /// The guest onlines/offlines vCPUs after this delay (0 = immediately).
    After(Duration),
    /// The guest never reacts (a stuck or hotplug-less guest).
    Never,
}

/// A cpupool of the simulated host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    /// pool id (0 is the default pool, which gets every online CPU no other pool has)
    pub id: u32,
    /// name (toolstack side only)
    pub name: String,
    /// scheduler id (xen-interfaces.md §4.5: credit 5, credit2 6)
    pub sched_id: u32,
    /// CPUs; ignored for pool 0
    pub cpus: Vec<u32>,
}

/// What kind of guest a simulated domain is (xen-interfaces.md §3.4: PVH and HVM guests
/// both carry `XEN_DOMINF_hvm_guest`; the toolstack's record tells them apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GuestKind {
    /// paravirtualised
    #[default]
    Pv,
    /// an HVM container without a device model
    Pvh,
    /// fully virtualised, with a QEMU device model
    Hvm,
}

impl GuestKind {
    /// The name libxl writes to `/libxl/<domid>/type`: "pv", "pvh" or "hvm".
    pub fn name(self) -> &'static str {
        match self {
            GuestKind::Pv => "pv",
            GuestKind::Pvh => "pvh",
            GuestKind::Hvm => "hvm",
        }
    }

    /// The kind of a name ("pv", "pvh", "hvm").
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "pv" => Some(GuestKind::Pv),
            "pvh" => Some(GuestKind::Pvh),
            "hvm" => Some(GuestKind::Hvm),
            _ => None,
        }
    }
}

/// A domain of the simulated host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomSpec {
    /// domid
    pub id: u16,
    /// name (toolstack side: xenstore on real hosts)
    pub name: String,
    /// UUID (None: derived from the id; Domain-0 is all zeroes as on Xen)
    pub uuid: Option<[u8; 16]>,
    /// max vCPUs
    pub vcpus: u32,
    /// online vCPUs (None = all)
    pub online: Option<Vec<u32>>,
    /// cpupool id
    pub pool: u32,
    /// hard affinity for every vCPU (None = all CPUs)
    pub hard: Option<Vec<u32>>,
    /// soft affinity for every vCPU (None = all CPUs)
    pub soft: Option<Vec<u32>>,
    /// per-vCPU hard affinity overrides
    pub pins: Vec<(u32, Vec<u32>)>,
    /// PV, PVH or HVM (the last two are `XEN_DOMINF_hvm_guest` to the hypervisor)
    pub guest: GuestKind,
    /// whether the toolstack recorded the type (`/libxl/<domid>/type`); false: as on a
    /// host whose toolstack is not libxl, so the type must be guessed
    pub type_record: bool,
    /// whether a device model is registered (`/local/domain/0/device-model/<domid>`);
    /// None: as the guest kind implies (HVM guests have one)
    pub device_model: Option<bool>,
    /// paused by the toolstack
    pub paused: bool,
    /// memory in MiB
    pub mem_mb: u64,
}

impl DomSpec {
    /// A domain with defaults: all vCPUs online, pool 0, unpinned.
    pub fn new(id: u16, name: &str, vcpus: u32) -> Self {
        DomSpec {
            id,
            name: name.to_string(),
            uuid: None,
            vcpus,
            online: None,
            pool: 0,
            hard: None,
            soft: None,
            pins: Vec::new(),
            guest: GuestKind::Pv,
            type_record: true,
            device_model: None,
            paused: false,
            mem_mb: 1024,
        }
    }
}

/// Where a simulated host's description starts from. The URI dispatcher of the Python layer
/// (`python/xenvcpu/uri.py`) picks it: `sim:///default`, `sim:///?cpus=…`, `sim:///PATH.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimBase {
    /// The built-in host of [`HostSpec::default_host`].
    Default,
    /// A scale host built from parameters ([`HostSpec::from_query`]).
    Scale,
    /// A host described in a TOML file ([`HostSpec::from_toml`]).
    Toml(std::path::PathBuf),
}

/// The largest host description file that is read, in bytes.
pub const MAX_TOML_BYTES: u64 = 4 << 20;

/// Parameters every host accepts (see [`HostSpec::apply_overrides`]).
const COMMON_PARAMS: [&str; 4] = ["version", "offline", "delay_ms", "follow"];
/// Parameters only a scale host accepts.
const SCALE_PARAMS: [&str; 7] = [
    "cpus", "sockets", "threads", "nodes", "max_cpus", "domains", "vcpus",
];

/// A whole simulated host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    /// Xen release (major, minor, patch) the simulator pretends to be.
    pub release: (u32, u32, u32),
    /// sockets
    pub sockets: u32,
    /// cores per socket
    pub cores_per_socket: u32,
    /// threads per core
    pub threads_per_core: u32,
    /// nr_cpu_ids (≥ sockets × cores × threads; CPUs above the present ones are not present)
    pub nr_cpu_ids: u32,
    /// NUMA nodes
    pub nodes: u32,
    /// present but offline CPUs
    pub offline: Vec<u32>,
    /// kHz
    pub cpu_khz: u32,
    /// memory per node, MiB
    pub mem_mb_per_node: u64,
    /// cpupools (pool 0 is added if missing)
    pub pools: Vec<PoolSpec>,
    /// domains
    pub domains: Vec<DomSpec>,
    /// guest reaction to availability changes
    pub follow: Follow,
}

fn range(a: u32, b: u32) -> Vec<u32> {
    (a..=b).collect()
}

impl HostSpec {
    /// The host a base and its parameters describe; a parameter the base does not know is
    /// an error naming it.
    pub fn build(base: &SimBase, params: &BTreeMap<String, String>) -> Result<Self> {
        match base {
            SimBase::Default => {
                let mut h = Self::default_host();
                h.apply_overrides(params)?;
                Ok(h)
            }
            SimBase::Scale => Self::from_query(params),
            SimBase::Toml(path) => {
                let mut h = Self::from_toml(&read_capped(path)?)?;
                h.apply_overrides(params)?;
                Ok(h)
            }
        }
    }

    /// Present CPUs (sockets × cores × threads), or None when the product overflows.
    pub fn present(&self) -> Option<u32> {
        self.sockets
            .checked_mul(self.cores_per_socket)?
            .checked_mul(self.threads_per_core)
    }

    /// `sim:///default`: 2 sockets × 16 cores × 2 threads, 2 nodes, two cpupools, Domain-0 and
    /// three guests of different sizes and kinds (some vCPUs offline, some pinned, one in
    /// pool 1): web (PV), db (HVM), batch (PVH).
    pub fn default_host() -> Self {
        let mut dom0 = DomSpec::new(0, "Domain-0", 4);
        dom0.mem_mb = 4096;
        let mut web = DomSpec::new(1, "web", 4);
        web.pins = vec![(0, vec![2]), (1, vec![3])];
        web.soft = Some(range(0, 7));
        web.mem_mb = 2048;
        let mut db = DomSpec::new(2, "db", 8);
        db.online = Some(range(0, 5));
        db.hard = Some(range(16, 31));
        db.guest = GuestKind::Hvm;
        db.mem_mb = 16384;
        let mut batch = DomSpec::new(3, "batch", 16);
        batch.online = Some(range(0, 11));
        batch.pool = 1;
        batch.guest = GuestKind::Pvh;
        batch.mem_mb = 8192;
        HostSpec {
            release: (4, 17, 5),
            sockets: 2,
            cores_per_socket: 16,
            threads_per_core: 2,
            nr_cpu_ids: 64,
            nodes: 2,
            offline: Vec::new(),
            cpu_khz: 2_400_000,
            mem_mb_per_node: 32768,
            pools: vec![
                PoolSpec {
                    id: 0,
                    name: "Pool-0".into(),
                    sched_id: sched::CREDIT2,
                    cpus: vec![],
                },
                PoolSpec {
                    id: 1,
                    name: "batch-pool".into(),
                    sched_id: sched::CREDIT,
                    cpus: range(48, 63),
                },
            ],
            domains: vec![dom0, web, db, batch],
            follow: Follow::After(Duration::from_millis(50)),
        }
    }

    /// A scale host from parameters (`cpus`, `sockets`, `threads`, `nodes`, `max_cpus`,
    /// `domains`, `vcpus`) plus the common overrides ([`HostSpec::apply_overrides`]).
    pub fn from_query(q: &BTreeMap<String, String>) -> Result<Self> {
        let num = |k: &str, default: u32, max: u32| -> Result<u32> {
            q.get(k).map_or(Ok(default), |v| param_u32(k, v, max))
        };
        let cpus = num("cpus", 64, MAX_CPUS)?;
        let nodes = num("nodes", 2.min(cpus), MAX_CPUS)?;
        let threads = num("threads", if cpus % 2 == 0 { 2 } else { 1 }, MAX_CPUS)?;
        let sockets = num("sockets", nodes, MAX_CPUS)?;
        let max_cpus = num("max_cpus", cpus, MAX_CPUS)?;
        let ndom = num("domains", 3, MAX_DOMAINS.saturating_sub(1))?;
        let vcpus = num("vcpus", 4, MAX_VCPUS)?;
        let per_socket = sockets.checked_mul(threads).unwrap_or(0);
        let cores = cpus.checked_div(per_socket).unwrap_or(0);
        let whole = cpus.checked_rem(per_socket) == Some(0);
        if cpus == 0 || nodes == 0 || nodes > cpus || cores == 0 || !whole {
            return Err(bad(format!(
                "cpus={cpus}, sockets={sockets}, threads={threads}, nodes={nodes} is not a host: \
                 cpus must be a positive multiple of sockets × threads, with 1 to cpus nodes"
            )));
        }
        if vcpus == 0 {
            return Err(bad(format!("vcpus=0: a domain has 1 to {MAX_VCPUS} vCPUs")));
        }
        let per_node = cpus.checked_div(nodes).unwrap_or(0);
        // Check the sizes before anything is built from them.
        let nr = u64::from(max_cpus.max(cpus));
        let total_vcpus = u64::from(ndom)
            .saturating_mul(u64::from(vcpus))
            .saturating_add(4);
        check_map_bytes(total_vcpus, nr)?;
        let pinned_ids = u64::from(ndom / 4).saturating_mul(u64::from(per_node));
        if pinned_ids > MAX_LIST_IDS {
            return Err(bad(format!(
                "{ndom} domains pinned by node on {cpus} CPUs list {pinned_ids} CPU ids; at most \
                 {MAX_LIST_IDS}"
            )));
        }
        let mut domains = vec![DomSpec::new(0, "Domain-0", cpus.min(4))];
        for i in 1..=ndom {
            // i < MAX_DOMAINS, which fits a u16
            let mut d = DomSpec::new(
                u16::try_from(i).unwrap_or(u16::MAX),
                &format!("guest-{i}"),
                vcpus,
            );
            if vcpus > 1 && i.checked_rem(5) == Some(0) {
                // every fifth domain has half its vCPUs online (vcpus ≥ 2 here)
                d.online = Some(range(0, (vcpus / 2).saturating_sub(1)));
            }
            if i.checked_rem(4) == Some(0) {
                // every fourth is pinned to one node: n < nodes, so the range is within cpus
                let n = i.checked_rem(nodes).unwrap_or(0);
                let first = n.saturating_mul(per_node);
                d.hard = Some(range(
                    first,
                    first.saturating_add(per_node).saturating_sub(1),
                ));
            }
            domains.push(d);
        }
        let mut h = HostSpec {
            release: (4, 17, 5),
            sockets,
            cores_per_socket: cores,
            threads_per_core: threads,
            nr_cpu_ids: max_cpus.max(cpus),
            nodes,
            offline: Vec::new(),
            cpu_khz: 2_400_000,
            mem_mb_per_node: 65536,
            pools: vec![PoolSpec {
                id: 0,
                name: "Pool-0".into(),
                sched_id: sched::CREDIT2,
                cpus: vec![],
            }],
            domains,
            follow: Follow::After(Duration::from_millis(50)),
        };
        if max_cpus < cpus {
            return Err(bad(format!("max_cpus={max_cpus} is below cpus={cpus}")));
        }
        let common: BTreeMap<String, String> = q
            .iter()
            .filter(|(k, _)| !SCALE_PARAMS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        h.apply_overrides(&common)?;
        h.validate()?;
        Ok(h)
    }

    /// Overrides valid on every host: `version=4.10.0`, `offline=60-63`, `delay_ms=N`,
    /// `follow=never`.
    pub fn apply_overrides(&mut self, q: &BTreeMap<String, String>) -> Result<()> {
        if let Some(k) = q.keys().find(|k| !COMMON_PARAMS.contains(&k.as_str())) {
            let scale = if SCALE_PARAMS.contains(&k.as_str()) {
                " (it describes a scale host: sim:///?cpus=N&domains=M)"
            } else {
                ""
            };
            return Err(bad(format!(
                "unknown sim host parameter {k:?}{scale}; this host takes {}",
                COMMON_PARAMS.join(", ")
            )));
        }
        if let Some(v) = q.get("version") {
            self.release = parse_release(v)?;
        }
        if let Some(v) = q.get("offline") {
            let mut budget = MAX_LIST_IDS;
            self.offline = parse_list(v, self.present().unwrap_or(0), "offline CPUs", &mut budget)?;
        }
        if let Some(v) = q.get("delay_ms") {
            let ms = param_u64("delay_ms", v, MAX_DELAY_MS)?;
            self.follow = Follow::After(Duration::from_millis(ms));
        }
        if let Some(v) = q.get("follow") {
            match v.as_str() {
                "never" => self.follow = Follow::Never,
                "yes" | "always" => {}
                _ => return Err(bad(format!("follow={v}: expected never"))),
            }
        }
        self.validate()
    }

    /// Check everything [`crate::sim::SimHost::new`] relies on: topology products without
    /// overflow, every size within its cap, every CPU and vCPU number within its host or
    /// domain. A spec built by hand is checked the same way as a parsed one.
    pub fn validate(&self) -> Result<()> {
        let present = self
            .present()
            .filter(|&p| p > 0 && p <= MAX_CPUS)
            .ok_or_else(|| {
                bad(format!(
                    "{} sockets × {} cores × {} threads is not a host of 1 to {MAX_CPUS} CPUs",
                    self.sockets, self.cores_per_socket, self.threads_per_core
                ))
            })?;
        if self.nr_cpu_ids < present || self.nr_cpu_ids > MAX_CPUS {
            return Err(bad(format!(
                "nr_cpu_ids {} must be between the present CPUs ({present}) and {MAX_CPUS}",
                self.nr_cpu_ids
            )));
        }
        if self.nodes == 0 || self.nodes > present {
            return Err(bad(format!(
                "{} NUMA nodes: a host of {present} CPUs has 1 to {present}",
                self.nodes
            )));
        }
        if self.mem_mb_per_node > MAX_MEM_MB {
            return Err(bad(format!(
                "{} MiB per node is above {MAX_MEM_MB} MiB",
                self.mem_mb_per_node
            )));
        }
        check_ids(&self.offline, present, "offline CPUs")?;
        if self.pools.len() > MAX_POOLS {
            return Err(bad(format!(
                "{} cpupools: at most {MAX_POOLS}",
                self.pools.len()
            )));
        }
        let mut pool_ids = std::collections::BTreeSet::from([0u32]);
        let mut taken = std::collections::BTreeSet::new();
        for p in &self.pools {
            check_name(&p.name, "cpupool")?;
            check_ids(&p.cpus, self.nr_cpu_ids, &format!("cpupool {} CPUs", p.id))?;
            if !pool_ids.insert(p.id) && p.id != 0 {
                return Err(bad(format!("cpupool id {} is given twice", p.id)));
            }
            if p.id != 0 {
                // pool 0 gets every online CPU the others do not have
                if let Some(c) = p.cpus.iter().find(|c| !taken.insert(**c)) {
                    return Err(bad(format!(
                        "cpupool {}: CPU {c} is already in another cpupool",
                        p.id
                    )));
                }
            }
        }
        if self.domains.len() > MAX_DOMAINS as usize {
            return Err(bad(format!(
                "{} domains: at most {MAX_DOMAINS}",
                self.domains.len()
            )));
        }
        let mut total: u64 = 0;
        let mut ids = std::collections::BTreeSet::new();
        for d in &self.domains {
            self.validate_domain(d)?;
            if !ids.insert(d.id) {
                return Err(bad(format!("domain id {} is given twice", d.id)));
            }
            if !pool_ids.contains(&d.pool) {
                return Err(bad(format!(
                    "domain {} ({}): no cpupool {}",
                    d.id, d.name, d.pool
                )));
            }
            total = total.saturating_add(u64::from(d.vcpus));
        }
        check_map_bytes(total, u64::from(self.nr_cpu_ids))?;
        let ids = self.listed_ids();
        if ids > MAX_LIST_IDS {
            return Err(bad(format!(
                "the lists of this host hold {ids} ids; at most {MAX_LIST_IDS}"
            )));
        }
        Ok(())
    }

    /// How many ids all the lists of the description hold together.
    fn listed_ids(&self) -> u64 {
        let len = |v: &Vec<u32>| u64::try_from(v.len()).unwrap_or(u64::MAX);
        let opt = |v: &Option<Vec<u32>>| v.as_ref().map_or(0, len);
        let pools = self.pools.iter().map(|p| len(&p.cpus));
        let doms = self.domains.iter().map(|d| {
            let pins = d
                .pins
                .iter()
                .map(|(_, m)| len(m))
                .fold(0, u64::saturating_add);
            [opt(&d.online), opt(&d.hard), opt(&d.soft), pins]
                .into_iter()
                .fold(0, u64::saturating_add)
        });
        pools
            .chain(doms)
            .fold(len(&self.offline), u64::saturating_add)
    }

    fn validate_domain(&self, d: &DomSpec) -> Result<()> {
        let who = format!("domain {} ({})", d.id, d.name);
        if u32::from(d.id) >= DOMID_FIRST_RESERVED {
            return Err(bad(format!(
                "{who}: ids 0 to {} are domain ids; {} and above are Xen's reserved ones",
                DOMID_FIRST_RESERVED.saturating_sub(1),
                DOMID_FIRST_RESERVED
            )));
        }
        check_name(&d.name, "domain")?;
        if d.vcpus == 0 || d.vcpus > MAX_VCPUS {
            return Err(bad(format!(
                "{who}: {} vCPUs; a domain has 1 to {MAX_VCPUS}",
                d.vcpus
            )));
        }
        if d.mem_mb > MAX_MEM_MB {
            return Err(bad(format!(
                "{who}: {} MiB is above {MAX_MEM_MB} MiB",
                d.mem_mb
            )));
        }
        if let Some(o) = &d.online {
            check_ids(o, d.vcpus, &format!("{who} online vCPUs"))?;
        }
        for (what, m) in [("hard", &d.hard), ("soft", &d.soft)] {
            if let Some(m) = m {
                check_ids(m, self.nr_cpu_ids, &format!("{who} {what} affinity"))?;
            }
        }
        for (v, m) in &d.pins {
            check_ids(&[*v], d.vcpus, &format!("{who} pinned vCPUs"))?;
            check_ids(m, self.nr_cpu_ids, &format!("{who} vCPU {v} hard affinity"))?;
        }
        Ok(())
    }
}

/// `vcpus` vCPUs within [`MAX_TOTAL_VCPUS`], and their maps (two each, `nr_cpu_ids / 8`
/// bytes) within [`MAX_MAP_BYTES`].
fn check_map_bytes(vcpus: u64, nr_cpu_ids: u64) -> Result<()> {
    if vcpus > MAX_TOTAL_VCPUS {
        return Err(bad(format!(
            "{vcpus} vCPUs in all: a simulated host may have at most {MAX_TOTAL_VCPUS}"
        )));
    }
    let bytes = vcpus
        .saturating_mul(nr_cpu_ids.div_ceil(8))
        .saturating_mul(2);
    if bytes > MAX_MAP_BYTES {
        return Err(bad(format!(
            "{vcpus} vCPUs with {nr_cpu_ids}-CPU affinity maps would take {} MiB of maps; the \
             most a simulated host may have is {} MiB (fewer vCPUs or CPUs)",
            bytes >> 20,
            MAX_MAP_BYTES >> 20
        )));
    }
    Ok(())
}

/// Every id below `limit`.
fn check_ids(ids: &[u32], limit: u32, what: &str) -> Result<()> {
    match ids.iter().find(|&&i| i >= limit) {
        Some(i) => Err(Error::new(
            ErrorKind::CpuListError,
            format!(
                "sim host: {what}: {i} is out of range; valid ones are {}",
                crate::cpumap::valid_range(limit as usize)
            ),
        )),
        None => Ok(()),
    }
}

fn check_name(name: &str, what: &str) -> Result<()> {
    let n = name.chars().count();
    if n == 0 || n > MAX_NAME || name.chars().any(char::is_control) {
        return Err(bad(format!(
            "{what} name {name:?}: 1 to {MAX_NAME} characters, no control characters"
        )));
    }
    Ok(())
}

/// The text of a host file, refusing one larger than [`MAX_TOML_BYTES`].
fn read_capped(path: &std::path::Path) -> Result<String> {
    use std::io::Read;
    let p = path.display();
    let cannot = |e: std::io::Error| bad(format!("cannot read sim host file {p}: {e}"));
    let f = std::fs::File::open(path).map_err(cannot)?;
    let mut text = String::new();
    f.take(MAX_TOML_BYTES.saturating_add(1))
        .read_to_string(&mut text)
        .map_err(cannot)?;
    if text.len() as u64 > MAX_TOML_BYTES {
        return Err(bad(format!(
            "{p} is larger than {MAX_TOML_BYTES} bytes, the most a host file may be"
        )));
    }
    Ok(text)
}

pub(super) fn bad(msg: String) -> Error {
    Error::new(ErrorKind::Other, format!("sim host: {msg}"))
}

/// A decimal number `0..=max`: digits only (no sign, no spaces), never wrapped.
pub(super) fn param_u64(key: &str, value: &str, max: u64) -> Result<u64> {
    let n = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        value.parse::<u64>().ok().filter(|&n| n <= max)
    } else {
        None
    };
    n.ok_or_else(|| {
        let shown: String = value.chars().take(40).collect();
        bad(format!("{key}={shown} is not a number from 0 to {max}"))
    })
}

fn param_u32(key: &str, value: &str, max: u32) -> Result<u32> {
    // max fits a u32, so the checked number does too
    param_u64(key, value, u64::from(max)).map(|n| u32::try_from(n).unwrap_or(max))
}

/// `4.17` or `4.10.0`.
pub fn parse_release(v: &str) -> Result<(u32, u32, u32)> {
    let wrong = || bad(format!("version {v:?}: expected 4.17 or 4.10.1"));
    let mut parts = v.split('.').map(|s| param_u32("version", s, 0xFFFF).ok());
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(Some(a)), Some(Some(b)), None, None) => Ok((a, b, 0)),
        (Some(Some(a)), Some(Some(b)), Some(Some(c)), None) => Ok((a, b, c)),
        _ => Err(wrong()),
    }
}

/// A plain list `0-3,8` of ids below `limit` (no `^`, no `all`): sim host files only. The
/// ids are checked against `limit` and `budget` (what the whole description may still
/// list, see [`MAX_LIST_IDS`]) before a range is expanded, so `0-4294967295` is an error,
/// not 16 GiB of ids.
pub fn parse_list(v: &str, limit: u32, what: &str, budget: &mut u64) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    for tok in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let err = |why: &str| {
            Error::new(
                ErrorKind::CpuListError,
                format!(
                    "sim host: {what}: bad list item {tok:?}: {why}; valid ones are {}",
                    crate::cpumap::valid_range(limit as usize)
                ),
            )
        };
        let n = |s: &str| {
            param_u32(what, s.trim(), u32::MAX)
                .ok()
                .filter(|&n| n < limit)
                .ok_or_else(|| err("not a number in range"))
        };
        match tok.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (n(a)?, n(b)?);
                if a > b {
                    return Err(err("a range must go upwards"));
                }
                spend(budget, u64::from(b.abs_diff(a)).saturating_add(1), what)?;
                out.extend(a..=b);
            }
            None => {
                let id = n(tok)?;
                spend(budget, 1, what)?;
                out.push(id);
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn spend(budget: &mut u64, n: u64, what: &str) -> Result<()> {
    *budget = budget.checked_sub(n).ok_or_else(|| {
        bad(format!(
            "{what}: the lists of this host hold more than {MAX_LIST_IDS} ids"
        ))
    })?;
    Ok(())
}

/// A UUID: 32 hex digits, dashes anywhere.
pub fn parse_uuid(s: &str) -> Result<[u8; 16]> {
    let digits: Vec<u8> = s
        .chars()
        .filter(|&c| c != '-')
        .map(|c| c.to_digit(16).and_then(|d| u8::try_from(d).ok()))
        .collect::<Option<_>>()
        .ok_or_else(|| bad(format!("uuid {s:?}: not hex")))?;
    if digits.len() != 32 {
        return Err(bad(format!("uuid {s:?}: expected 32 hex digits")));
    }
    let mut u = [0u8; 16];
    for (b, pair) in u.iter_mut().zip(digits.chunks_exact(2)) {
        if let [hi, lo] = pair {
            *b = (hi << 4) | lo;
        }
    }
    Ok(u)
}

/// Tests: a host spec from a base and `(key, value)` parameters (panics on a bad one).
#[cfg(test)]
pub(crate) fn test_spec(base: SimBase, params: &[(&str, &str)]) -> HostSpec {
    let q = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    HostSpec::build(&base, &q).unwrap_or_else(|e| panic!("{base:?} {params:?}: {e}"))
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)]
mod tests {
    use super::*;

    fn q(s: &[(&str, &str)]) -> BTreeMap<String, String> {
        s.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn lists_and_releases() {
        let b = &mut MAX_LIST_IDS.clone();
        assert_eq!(
            parse_list("0-3,8, 6", 9, "x", b).unwrap(),
            vec![0, 1, 2, 3, 6, 8]
        );
        assert_eq!(
            parse_list("3-1", 9, "x", b).unwrap_err().kind,
            ErrorKind::CpuListError
        );
        let e = parse_list("0-4294967295", 64, "offline CPUs", b).unwrap_err();
        assert!(e.message.contains("valid ones are 0-63"), "{}", e.message);
        assert!(parse_list("64", 64, "x", b).is_err());
        assert!(parse_list("-1", 64, "x", b).is_err());
        assert!(parse_list("0-3", 64, "x", &mut 3).is_err());
        assert_eq!(parse_release("4.10.0").unwrap(), (4, 10, 0));
        assert_eq!(parse_release("4.18").unwrap(), (4, 18, 0));
        assert!(parse_release("four").is_err());
        assert!(parse_release("4.99999999999").is_err());
        assert!(parse_release("4.1.2.3").is_err());
        assert_eq!(
            parse_uuid("00112233-4455-6677-8899-aabbccddeeff").unwrap()[15],
            0xff
        );
        assert!(parse_uuid("é0112233-4455-6677-8899-aabbccddeeff").is_err());
        assert!(parse_uuid("0011").is_err());
    }

    #[test]
    fn query_validation() {
        let h = HostSpec::from_query(&q(&[
            ("cpus", "4096"),
            ("nodes", "4"),
            ("domains", "10"),
            ("vcpus", "8"),
        ]))
        .unwrap();
        assert_eq!(h.present(), Some(4096));
        assert_eq!(h.domains.len(), 11);
        assert!(HostSpec::from_query(&q(&[("cpus", "7"), ("threads", "2")])).is_err());
        assert!(HostSpec::from_query(&q(&[("bogus", "1")])).is_err());
        assert!(HostSpec::from_query(&q(&[("cpus", "x")])).is_err());
        let h = HostSpec::from_query(&q(&[("follow", "never"), ("version", "4.10.0")])).unwrap();
        assert_eq!(h.follow, Follow::Never);
        assert_eq!(h.release, (4, 10, 0));
    }

    #[test]
    fn hostile_parameters_are_refused_not_wrapped() {
        for params in [
            &[("sockets", "65536"), ("threads", "65536")][..],
            &[("cpus", "4294967360")],
            &[("cpus", "-1")],
            &[("cpus", "+8")],
            &[("cpus", " 8")],
            &[("cpus", "64"), ("nodes", "0")],
            &[("cpus", "64"), ("nodes", "65")],
            &[("vcpus", "0")],
            &[("vcpus", "8193")],
            &[("domains", "32752")],
            &[("offline", "0-4294967295")],
            &[("delay_ms", "99999999999999999999")],
            &[("cpus", "65536"), ("domains", "32000"), ("vcpus", "64")],
        ] {
            assert!(HostSpec::from_query(&q(params)).is_err(), "{params:?}");
        }
    }

    #[test]
    fn hand_built_specs_are_checked_too() {
        let mut h = HostSpec::default_host();
        h.sockets = u32::MAX;
        assert!(h.validate().is_err());
        let mut h = HostSpec::default_host();
        h.domains[1].hard = Some(vec![64]);
        assert!(h.validate().is_err());
        let mut h = HostSpec::default_host();
        h.domains[1].name = "a\nb".into();
        assert!(h.validate().is_err());
        HostSpec::default_host().validate().unwrap();
    }
}
