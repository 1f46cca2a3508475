//! A simulated Xen behind the [`Transport`] seam.
//!
//! [`SimTransport`] owns an arena like the privcmd transport, and its `hypercall` decodes the
//! very same request blocks from it — domctl (ref §3), sysctl (ref §4), xen_version (ref §2) and
//! multicall batches (ref §10) — and answers as Xen 4.x does, errno cases included. The host
//! state lives in a [`SimHost`] shared through a [`SimHandle`], so a "toolstack" (the Python
//! layer on sim hosts, or tests) can name domains, change vCPU availability, inject faults.
//!
//! URIs ([`SimHost::from_uri`]):
//! * `sim:///default` — see [`HostSpec::default_host`];
//! * `sim:///?cpus=4096&nodes=4&domains=1000&vcpus=8` (also `sockets`, `threads`, `max_cpus`);
//! * `sim:///path/host.toml` — `[host]` (cpus, sockets, threads, nodes, max_cpus, cpu_khz,
//!   version, offline, delay_ms, follow), `[[pool]]` (id, name, sched, cpus) and `[[domain]]`
//!   (id, name, uuid, vcpus, online, pool, hard, soft, hvm, paused, mem_mb); lists are cpulists
//!   in strings, e.g. `online = "0-3"`.
//!
//! Every form accepts `version=4.10.0`, `offline=60-63`, `delay_ms=N` and `follow=never` in its
//! query.

pub mod spec;

pub use spec::{DomSpec, Follow, HostSpec, PoolSpec, SimBase};

use crate::abi::{self, dominf, Field, InterfaceVersion, RawDomainInfo, RawPhysinfo};
use crate::error::{Errno, Error, ErrorKind, Result};
use crate::transport::Transport;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A CPU bitmap in Xen's byte form, `ceil(nr_cpu_ids / 8)` bytes (shared when equal).
type Map = Arc<[u8]>;

/// Scheduling state of an online simulated vCPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VcpuState {
    /// on a pCPU
    Running,
    /// waiting for an event
    Blocked,
    /// online, neither running nor blocked
    Runnable,
}

#[derive(Debug, Clone)]
struct Vcpu {
    online: bool,
    state: VcpuState,
    cpu: u32,
    hard: Map,
    soft: Map,
    pin_override: bool,
    time_acc: u64,
    since: u64,
    rate_permille: u64,
}

#[derive(Debug, Clone)]
struct Dom {
    id: u16,
    name: String,
    uuid: [u8; 16],
    pool: u32,
    vcpus: Vec<Option<Vcpu>>,
    dying: bool,
    hvm: bool,
    paused: bool,
    shutdown: Option<u8>,
    pages: u64,
    availability: Vec<bool>,
    pending: Option<(u64, Vec<bool>)>,
}

#[derive(Debug, Clone)]
struct Pool {
    id: u32,
    name: String,
    sched_id: u32,
    cpus: Map,
}

#[derive(Debug, Clone, Copy)]
struct Topo {
    core: u32,
    socket: u32,
    node: u32,
}

/// The simulated hypervisor's whole state.
#[derive(Debug)]
pub struct SimHost {
    release: (u32, u32, u32),
    iface: Option<InterfaceVersion>,
    nr_cpu_ids: u32,
    threads_per_core: u32,
    cores_per_socket: u32,
    cpu_khz: u32,
    nodes: u32,
    mem_per_node: u64,
    topo: Vec<Option<Topo>>,
    online: Map,
    pools: Vec<Pool>,
    domains: BTreeMap<u16, Dom>,
    start: Instant,
    offset_ns: i64,
    frozen_at: Option<u64>,
    follow: Follow,
    ops: u64,
    hypercalls: u64,
    faults: Vec<(u64, i32)>,
    hc_faults: Vec<(u64, i32)>,
    removals: Vec<(u64, u16)>,
    multicall_errno: Option<i32>,
}

/// Shared handle to a simulated host (toolstack side).
pub type SimHandle = Arc<Mutex<SimHost>>;

fn nbytes(nr_cpu_ids: u32) -> usize {
    abi::bitmap_bytes(nr_cpu_ids)
}

fn map_from(cpus: &[u32], nr: u32) -> Vec<u8> {
    let mut m = vec![0u8; nbytes(nr)];
    for &c in cpus {
        if c < nr {
            m[(c / 8) as usize] |= 1 << (c % 8);
        }
    }
    m
}

fn has(m: &[u8], c: u32) -> bool {
    m.get((c / 8) as usize)
        .is_some_and(|b| b & (1 << (c % 8)) != 0)
}

fn and(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(x, y)| x & y).collect()
}

fn is_empty(m: &[u8]) -> bool {
    m.iter().all(|&b| b == 0)
}

fn first(m: &[u8]) -> Option<u32> {
    m.iter()
        .position(|&b| b != 0)
        .map(|i| i as u32 * 8 + m[i].trailing_zeros())
}

fn nth_set(m: &[u8], n: u32) -> Option<u32> {
    let count: u32 = m.iter().map(|b| b.count_ones()).sum();
    if count == 0 {
        return None;
    }
    let mut k = n % count;
    for (i, &b) in m.iter().enumerate() {
        let c = b.count_ones();
        if k < c {
            let mut bb = b;
            for _ in 0..k {
                bb &= bb - 1;
            }
            return Some(i as u32 * 8 + bb.trailing_zeros());
        }
        k -= c;
    }
    None
}

fn no_hv(msg: String) -> Error {
    Error::new(ErrorKind::Other, msg)
}

impl SimHost {
    /// Build a host from a spec.
    pub fn new(spec: &HostSpec) -> Result<Self> {
        let present = spec.present();
        let nr = spec.nr_cpu_ids.max(present);
        if nr == 0 || nr > 1 << 20 {
            return Err(no_hv(format!("sim host: {nr} CPUs is out of range")));
        }
        let per_node = present.div_ceil(spec.nodes.max(1)).max(1);
        let mut topo = vec![None; nr as usize];
        let mut online = vec![0u8; nbytes(nr)];
        for c in 0..present {
            let t = spec.threads_per_core;
            let offline = spec.offline.contains(&c);
            let node = c / per_node;
            topo[c as usize] = Some(if offline {
                // Xen invalidates core/socket ids of an offlined CPU (ref §4.3: 0xFFFFFFFF).
                Topo {
                    core: abi::XEN_INVALID_TOPO_ID,
                    socket: abi::XEN_INVALID_TOPO_ID,
                    node,
                }
            } else {
                Topo {
                    core: (c / t) % spec.cores_per_socket,
                    socket: c / (t * spec.cores_per_socket),
                    node,
                }
            });
            if !offline {
                online[(c / 8) as usize] |= 1 << (c % 8);
            }
        }
        let online: Map = online.into();
        // pools: explicit ones get their (online) CPUs, pool 0 the rest
        let mut pools: Vec<Pool> = Vec::new();
        let mut taken = vec![0u8; nbytes(nr)];
        let mut specs = spec.pools.clone();
        if !specs.iter().any(|p| p.id == 0) {
            specs.push(PoolSpec {
                id: 0,
                name: "Pool-0".into(),
                sched_id: abi::sched::CREDIT2,
                cpus: vec![],
            });
        }
        specs.sort_by_key(|p| p.id);
        for p in specs.iter().filter(|p| p.id != 0) {
            let m = and(&map_from(&p.cpus, nr), &online);
            for (t, b) in taken.iter_mut().zip(&m) {
                if *t & b != 0 {
                    return Err(no_hv(format!(
                        "sim host: pool {} shares CPUs with another pool",
                        p.id
                    )));
                }
                *t |= b;
            }
            pools.push(Pool {
                id: p.id,
                name: p.name.clone(),
                sched_id: p.sched_id,
                cpus: m.into(),
            });
        }
        let p0 = specs.iter().find(|p| p.id == 0).expect("pool 0 added");
        let rest: Vec<u8> = online.iter().zip(&taken).map(|(o, t)| o & !t).collect();
        pools.insert(
            0,
            Pool {
                id: 0,
                name: p0.name.clone(),
                sched_id: p0.sched_id,
                cpus: rest.into(),
            },
        );

        let iface =
            InterfaceVersion::for_release_patch(spec.release.0, spec.release.1, spec.release.2)
                .ok();
        let mut host = SimHost {
            release: spec.release,
            iface,
            nr_cpu_ids: nr,
            threads_per_core: spec.threads_per_core,
            cores_per_socket: spec.cores_per_socket,
            cpu_khz: spec.cpu_khz,
            nodes: spec.nodes.max(1),
            mem_per_node: spec.mem_mb_per_node << 20,
            topo,
            online,
            pools,
            domains: BTreeMap::new(),
            start: Instant::now(),
            offset_ns: 0,
            frozen_at: None,
            follow: spec.follow,
            ops: 0,
            hypercalls: 0,
            faults: Vec::new(),
            hc_faults: Vec::new(),
            removals: Vec::new(),
            multicall_errno: None,
        };
        for d in &spec.domains {
            host.add_domain(d)?;
        }
        Ok(host)
    }

    fn now(&self) -> u64 {
        let t = self
            .frozen_at
            .unwrap_or_else(|| self.start.elapsed().as_nanos() as u64);
        (t as i64 + self.offset_ns).max(0) as u64
    }

    /// Stop (true) or restart (false) the wall clock; [`SimHost::advance`] still moves time.
    /// Frozen hosts give reproducible CPU times.
    pub fn freeze_clock(&mut self, frozen: bool) {
        match (frozen, self.frozen_at) {
            (true, None) => self.frozen_at = Some(self.start.elapsed().as_nanos() as u64),
            (false, Some(at)) => {
                // continue from the frozen instant
                let real = self.start.elapsed().as_nanos() as u64;
                self.offset_ns += at as i64 - real as i64;
                self.frozen_at = None;
            }
            _ => {}
        }
    }

    fn full_map(&self) -> Map {
        let mut m = vec![0xFFu8; nbytes(self.nr_cpu_ids)];
        let r = self.nr_cpu_ids % 8;
        if r != 0 {
            *m.last_mut().expect("non-empty") = (1u8 << r) - 1;
        }
        m.into()
    }

    fn pool(&self, id: u32) -> Option<&Pool> {
        self.pools.iter().find(|p| p.id == id)
    }

    /// Add a domain (toolstack: domain creation).
    pub fn add_domain(&mut self, d: &DomSpec) -> Result<()> {
        if u32::from(d.id) >= abi::DOMID_FIRST_RESERVED || self.domains.contains_key(&d.id) {
            return Err(no_hv(format!(
                "sim host: domain id {} is reserved or taken",
                d.id
            )));
        }
        let pool = self.pool(d.pool).ok_or_else(|| {
            no_hv(format!(
                "sim host: domain {}: no cpupool {}",
                d.name, d.pool
            ))
        })?;
        let pool_cpus = pool.cpus.clone();
        let full = self.full_map();
        let nr = self.nr_cpu_ids;
        let hard: Map = d
            .hard
            .as_ref()
            .map_or(full.clone(), |h| map_from(h, nr).into());
        let soft: Map = d
            .soft
            .as_ref()
            .map_or(full.clone(), |s| map_from(s, nr).into());
        let now = self.now();
        let mut vcpus = Vec::with_capacity(d.vcpus as usize);
        for v in 0..d.vcpus {
            let online = d.online.as_ref().is_none_or(|o| o.contains(&v));
            let hard = d
                .pins
                .iter()
                .find(|p| p.0 == v)
                .map_or(hard.clone(), |p| map_from(&p.1, nr).into());
            let eff = and(&hard, &pool_cpus);
            let cpu = nth_set(&eff, v).or_else(|| first(&pool_cpus)).unwrap_or(0);
            let state = match (u32::from(d.id) * 7 + v * 3) % 4 {
                0 => VcpuState::Running,
                3 => VcpuState::Runnable,
                _ => VcpuState::Blocked,
            };
            let rate = match state {
                VcpuState::Running => 900,
                VcpuState::Runnable => 150,
                VcpuState::Blocked => 20,
            };
            vcpus.push(Some(Vcpu {
                online,
                state,
                cpu,
                hard,
                soft: soft.clone(),
                pin_override: false,
                time_acc: (u64::from(d.id) + 1) * (u64::from(v) + 1) * 1_000_000_007,
                since: now,
                rate_permille: rate,
            }));
        }
        let uuid = d.uuid.unwrap_or_else(|| {
            if d.id == 0 {
                [0; 16]
            } else {
                let mut u = [0u8; 16];
                u[..4].copy_from_slice(&0x5158_e7c0u32.to_be_bytes());
                u[6] = 0x40; // version 4 nibble
                u[8] = 0x80; // variant
                u[12..16].copy_from_slice(&u32::from(d.id).to_be_bytes());
                u
            }
        });
        let availability = vcpus
            .iter()
            .map(|v| v.as_ref().is_some_and(|v| v.online))
            .collect();
        self.domains.insert(
            d.id,
            Dom {
                id: d.id,
                name: d.name.clone(),
                uuid,
                pool: d.pool,
                vcpus,
                dying: false,
                hvm: d.hvm,
                paused: d.paused,
                shutdown: None,
                pages: d.mem_mb * 256,
                availability,
                pending: None,
            },
        );
        Ok(())
    }

    fn dom_mut(&mut self, domid: u32) -> Result<&mut Dom> {
        u16::try_from(domid)
            .ok()
            .and_then(|id| self.domains.get_mut(&id))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::DomainNotFound,
                    format!("no domain with id {domid}"),
                )
                .with_domain(domid)
            })
    }

    // ----- toolstack side ---------------------------------------------------------------------

    /// (id, name) of every domain, by id.
    pub fn domain_names(&self) -> Vec<(u32, String)> {
        self.domains
            .values()
            .map(|d| (u32::from(d.id), d.name.clone()))
            .collect()
    }

    /// Name of a domain.
    pub fn domain_name(&self, domid: u32) -> Option<String> {
        u16::try_from(domid)
            .ok()
            .and_then(|i| self.domains.get(&i))
            .map(|d| d.name.clone())
    }

    /// Id of the domain with this name.
    pub fn domain_by_name(&self, name: &str) -> Option<u32> {
        self.domains
            .values()
            .find(|d| d.name == name)
            .map(|d| u32::from(d.id))
    }

    /// Name of a cpupool (toolstack side).
    pub fn pool_name(&self, id: u32) -> Option<String> {
        self.pool(id).map(|p| p.name.clone())
    }

    /// Write `cpu/<n>/availability` for every vCPU (ref §5.5): `online[n]` = wanted state.
    /// The simulated guest follows after the configured delay (or never).
    pub fn set_availability(&mut self, domid: u32, online: &[bool]) -> Result<()> {
        self.tick();
        let follow = self.follow;
        let now = self.now();
        let d = self.dom_mut(domid)?;
        let max = d.vcpus.len();
        if online.len() > max || !online.iter().any(|&b| b) {
            return Err(Error::new(
                ErrorKind::VcpuCountError,
                format!(
                    "domain {domid} ({}) can have 1 to {max} vCPUs online (vCPUs 0-{}); asked for {} of {}",
                    d.name,
                    max.saturating_sub(1),
                    online.iter().filter(|&&b| b).count(),
                    online.len()
                ),
            )
            .with_domain(domid));
        }
        let mut want = online.to_vec();
        want.resize(max, false);
        d.availability = want.clone();
        match follow {
            Follow::Never => d.pending = None,
            Follow::After(delay) => d.pending = Some((now + delay.as_nanos() as u64, want)),
        }
        self.tick();
        Ok(())
    }

    /// The availability values last written (what xenstore holds).
    pub fn availability(&self, domid: u32) -> Option<Vec<bool>> {
        u16::try_from(domid)
            .ok()
            .and_then(|i| self.domains.get(&i))
            .map(|d| d.availability.clone())
    }

    /// Change how guests follow availability changes.
    pub fn set_follow(&mut self, follow: Follow) {
        self.follow = follow;
    }

    /// Advance the simulated clock (CPU time and pending availability changes).
    pub fn advance(&mut self, by: Duration) {
        self.offset_ns += by.as_nanos() as i64;
        self.tick();
    }

    /// Apply availability changes whose delay has passed.
    fn tick(&mut self) {
        let now = self.now();
        for d in self.domains.values_mut() {
            let due = matches!(&d.pending, Some((t, _)) if *t <= now);
            if !due {
                continue;
            }
            let (_, want) = d.pending.take().expect("checked");
            for (slot, w) in d.vcpus.iter_mut().zip(want) {
                if let Some(v) = slot {
                    if v.online && !w {
                        v.time_acc += now.saturating_sub(v.since) * v.rate_permille / 1000;
                        v.online = false;
                    } else if !v.online && w {
                        v.online = true;
                        v.since = now;
                    }
                }
            }
        }
    }

    /// Pretend to be another Xen release (an unknown one answers EACCES to every domctl/sysctl).
    pub fn set_release(&mut self, major: u32, minor: u32, patch: u32) {
        self.release = (major, minor, patch);
        self.iface = InterfaceVersion::for_release_patch(major, minor, patch).ok();
    }

    /// The interface this host accepts (None for an unknown release).
    pub fn interface(&self) -> Option<InterfaceVersion> {
        self.iface
    }

    /// Fail the `n`-th domctl/sysctl operation from now (1 = the next; entries of a multicall
    /// count one each) with `errno`.
    pub fn fail_nth(&mut self, n: u64, errno: i32) {
        self.faults.push((self.ops + n, errno));
    }

    /// Fail the `n`-th top-level hypercall from now (1 = the next; a multicall batch counts
    /// once, as does xen_version) with `errno`, before it does anything.
    pub fn fail_nth_hypercall(&mut self, n: u64, errno: i32) {
        self.hc_faults.push((self.hypercalls + n, errno));
    }

    /// Remove domain `domid` just before the `n`-th domctl/sysctl operation from now.
    pub fn remove_domain_at(&mut self, n: u64, domid: u16) {
        self.removals.push((self.ops + n, domid));
    }

    /// Remove a domain now.
    pub fn remove_domain(&mut self, domid: u32) -> Result<()> {
        self.dom_mut(domid)?;
        self.domains.remove(&(domid as u16));
        Ok(())
    }

    /// Make the multicall hypercall itself fail with `errno` (None: accept batches).
    pub fn refuse_multicall(&mut self, errno: Option<i32>) {
        self.multicall_errno = errno;
    }

    /// Mark a domain dying (being destroyed).
    pub fn set_dying(&mut self, domid: u32, dying: bool) -> Result<()> {
        self.dom_mut(domid)?.dying = dying;
        Ok(())
    }

    /// Pause or unpause a domain (its vCPUs then report not running).
    pub fn set_paused(&mut self, domid: u32, paused: bool) -> Result<()> {
        self.dom_mut(domid)?.paused = paused;
        Ok(())
    }

    /// Mark a domain shut down with a code (ref §3.4 SHUTDOWN_*), or clear it.
    pub fn set_shutdown(&mut self, domid: u32, code: Option<u8>) -> Result<()> {
        self.dom_mut(domid)?.shutdown = code;
        Ok(())
    }

    /// Set/clear a temporary pin override on a vCPU (Xen then answers EBUSY to hard pins).
    pub fn set_pin_override(&mut self, domid: u32, vcpu: u32, on: bool) -> Result<()> {
        let d = self.dom_mut(domid)?;
        match d.vcpus.get_mut(vcpu as usize).and_then(Option::as_mut) {
            Some(v) => {
                v.pin_override = on;
                Ok(())
            }
            None => Err(
                Error::new(ErrorKind::VcpuNotFound, format!("no vCPU {vcpu}")).with_domain(domid),
            ),
        }
    }

    /// Set a vCPU's scheduling state.
    pub fn set_vcpu_state(&mut self, domid: u32, vcpu: u32, state: VcpuState) -> Result<()> {
        let now = self.now();
        let d = self.dom_mut(domid)?;
        match d.vcpus.get_mut(vcpu as usize).and_then(Option::as_mut) {
            Some(v) => {
                if v.online {
                    v.time_acc += now.saturating_sub(v.since) * v.rate_permille / 1000;
                    v.since = now;
                }
                v.state = state;
                v.rate_permille = match state {
                    VcpuState::Running => 900,
                    VcpuState::Runnable => 150,
                    VcpuState::Blocked => 20,
                };
                Ok(())
            }
            None => Err(
                Error::new(ErrorKind::VcpuNotFound, format!("no vCPU {vcpu}")).with_domain(domid),
            ),
        }
    }

    /// Remove the vCPU structure of a slot (Xen: "slot not allocated" → ESRCH, ref §3.5).
    pub fn drop_vcpu_slot(&mut self, domid: u32, vcpu: u32) -> Result<()> {
        let d = self.dom_mut(domid)?;
        if let Some(s) = d.vcpus.get_mut(vcpu as usize) {
            *s = None;
        }
        Ok(())
    }

    /// domctl/sysctl operations executed so far (singles + multicall entries).
    pub fn ops(&self) -> u64 {
        self.ops
    }

    /// Top-level hypercalls issued so far (a multicall counts once).
    pub fn hypercalls(&self) -> u64 {
        self.hypercalls
    }

    /// nr_cpu_ids (= physinfo.max_cpu_id + 1).
    pub fn nr_cpu_ids(&self) -> u32 {
        self.nr_cpu_ids
    }

    // ----- hypervisor side --------------------------------------------------------------------

    fn count_op(&mut self) -> std::result::Result<(), i32> {
        self.ops += 1;
        let n = self.ops;
        let mut i = 0;
        while i < self.removals.len() {
            if self.removals[i].0 == n {
                let id = self.removals.remove(i).1;
                self.domains.remove(&id);
            } else {
                i += 1;
            }
        }
        if let Some(pos) = self.faults.iter().position(|f| f.0 == n) {
            return Err(self.faults.remove(pos).1);
        }
        Ok(())
    }

    fn cpu_time(v: &Vcpu, now: u64) -> u64 {
        if v.online {
            v.time_acc + now.saturating_sub(v.since) * v.rate_permille / 1000
        } else {
            v.time_acc
        }
    }

    fn raw_info(&self, d: &Dom, now: u64) -> RawDomainInfo {
        let online: Vec<&Vcpu> = d.vcpus.iter().flatten().filter(|v| v.online).collect();
        let mut flags = 0;
        if d.dying {
            flags |= dominf::DYING;
        }
        if d.hvm {
            flags |= dominf::HVM_GUEST;
        }
        if d.paused {
            flags |= dominf::PAUSED;
        }
        if let Some(code) = d.shutdown {
            flags |= dominf::SHUTDOWN | (u32::from(code) << dominf::SHUTDOWNSHIFT);
        }
        // running/blocked only when some vCPU is online (ref §3.4 semantics)
        if !online.is_empty() {
            if !d.paused && online.iter().any(|v| v.state == VcpuState::Running) {
                flags |= dominf::RUNNING;
            }
            if online.iter().all(|v| v.state == VcpuState::Blocked) {
                flags |= dominf::BLOCKED;
            }
        }
        let max_vcpu_id = d
            .vcpus
            .iter()
            .rposition(Option::is_some)
            .map_or(abi::NO_VCPU_ID, |i| i as u32);
        RawDomainInfo {
            domain: d.id,
            flags,
            tot_pages: d.pages,
            max_pages: d.pages,
            cpu_time: d
                .vcpus
                .iter()
                .flatten()
                .map(|v| Self::cpu_time(v, now))
                .sum(),
            nr_online_vcpus: online.len() as u32,
            max_vcpu_id,
            ssidref: 0,
            handle: d.uuid,
            cpupool: d.pool,
        }
    }

    /// Read a guest bitmap per ref §3.6 (min of the two lengths; missing CPUs not allowed).
    fn read_bitmap(&self, mem: &Mem, bm: abi::XenctlBitmap) -> std::result::Result<Vec<u8>, i32> {
        let xen_bytes = nbytes(self.nr_cpu_ids);
        let mut out = vec![0u8; xen_bytes];
        let guest_bytes = (bm.nr_bits as usize).div_ceil(8);
        let n = guest_bytes.min(xen_bytes);
        if n == 0 {
            return Ok(out);
        }
        let src = mem.slice(bm.bitmap, n)?;
        out[..n].copy_from_slice(src);
        if guest_bytes <= xen_bytes && bm.nr_bits % 8 != 0 {
            out[n - 1] &= (1u8 << (bm.nr_bits % 8)) - 1;
        }
        let r = self.nr_cpu_ids % 8;
        if r != 0 {
            out[xen_bytes - 1] &= (1u8 << r) - 1;
        }
        Ok(out)
    }

    /// Write a bitmap to the guest per ref §3.6 (min bytes, then zero-fill to nr_bits).
    fn write_bitmap(
        mem: &mut Mem,
        bm: abi::XenctlBitmap,
        m: &[u8],
    ) -> std::result::Result<(), i32> {
        let guest_bytes = (bm.nr_bits as usize).div_ceil(8);
        if guest_bytes == 0 {
            return Ok(());
        }
        let dst = mem.slice_mut(bm.bitmap, guest_bytes)?;
        let n = guest_bytes.min(m.len());
        dst[..n].copy_from_slice(&m[..n]);
        dst[n..].fill(0);
        Ok(())
    }

    fn domctl(&mut self, mem: &mut Mem, addr: u64) -> std::result::Result<u64, i32> {
        self.count_op()?;
        let now = self.now();
        // A stack copy: the request block is read once per multicall entry.
        let mut block = [0u8; abi::XenDomctl::SIZE];
        block.copy_from_slice(mem.slice(addr, abi::XenDomctl::SIZE)?);
        let (cmd, ver, domid) = abi::read_domctl_header(&block);
        let iface = self.iface.ok_or(libc::EACCES)?;
        if ver != iface.domctl {
            return Err(libc::EACCES); // ref §3.2: first check, −EACCES
        }
        let u = &block[abi::DOMCTL_U..];
        match cmd {
            abi::domctl::GETDOMAININFO => {
                if u32::from(domid) >= abi::DOMID_FIRST_RESERVED {
                    return Err(libc::EINVAL);
                }
                let found = if iface.getdomaininfo_returns_next() {
                    self.domains.range(domid..).next().map(|(_, d)| d)
                } else {
                    self.domains.get(&domid)
                };
                let d = found.ok_or(libc::ESRCH)?;
                let info = self.raw_info(d, now);
                let out = mem.slice_mut(addr, abi::XenDomctl::SIZE)?;
                info.domain.put(&mut out[8..]); // echoed into xen_domctl.domain (ref §3.4)
                info.encode(&mut out[abi::DOMCTL_U..], iface.dominfo_size);
                Ok(0)
            }
            abi::domctl::GETVCPUINFO => {
                let d = self.domains.get(&domid).ok_or(libc::ESRCH)?;
                let vcpu = u32::get(u);
                if vcpu as usize >= d.vcpus.len() {
                    return Err(libc::EINVAL);
                }
                let v = d.vcpus[vcpu as usize].as_ref().ok_or(libc::ESRCH)?;
                let r = abi::GetVcpuInfo {
                    vcpu,
                    online: u8::from(v.online),
                    blocked: u8::from(v.online && v.state == VcpuState::Blocked),
                    running: u8::from(v.online && v.state == VcpuState::Running && !d.paused),
                    cpu_time: Self::cpu_time(v, now),
                    cpu: v.cpu,
                    ..Default::default()
                };
                r.encode(&mut mem.slice_mut(addr, abi::XenDomctl::SIZE)?[abi::DOMCTL_U..]);
                Ok(0)
            }
            abi::domctl::GETVCPUAFFINITY | abi::domctl::SETVCPUAFFINITY => {
                let a = abi::VcpuAffinity::decode(u);
                self.affinity(mem, cmd, domid, a, iface)
            }
            _ => Err(libc::ENOSYS),
        }
    }

    fn affinity(
        &mut self,
        mem: &mut Mem,
        cmd: u32,
        domid: u16,
        a: abi::VcpuAffinity,
        iface: InterfaceVersion,
    ) -> std::result::Result<u64, i32> {
        let d = self.domains.get(&domid).ok_or(libc::ESRCH)?;
        if a.vcpu as usize >= d.vcpus.len() {
            return Err(libc::EINVAL);
        }
        let v = d.vcpus[a.vcpu as usize].as_ref().ok_or(libc::ESRCH)?;
        let known = abi::VCPUAFFINITY_HARD
            | abi::VCPUAFFINITY_SOFT
            | if iface.has_force_flag() {
                abi::VCPUAFFINITY_FORCE
            } else {
                0
            };
        let hs = a.flags & (abi::VCPUAFFINITY_HARD | abi::VCPUAFFINITY_SOFT);
        if hs == 0 || a.flags & !known != 0 {
            return Err(libc::EINVAL);
        }
        let want_hard = a.flags & abi::VCPUAFFINITY_HARD != 0;
        let want_soft = a.flags & abi::VCPUAFFINITY_SOFT != 0;
        if (want_hard && a.cpumap_hard.bitmap == 0) || (want_soft && a.cpumap_soft.bitmap == 0) {
            return Err(libc::EINVAL);
        }
        if cmd == abi::domctl::GETVCPUAFFINITY {
            // configured maps, no intersection (ref §3.6 get semantics)
            let (h, s) = (v.hard.clone(), v.soft.clone());
            if want_hard {
                Self::write_bitmap(mem, a.cpumap_hard, &h)?;
            }
            if want_soft {
                Self::write_bitmap(mem, a.cpumap_soft, &s)?;
            }
            return Ok(0);
        }
        let pool = self
            .pool(d.pool)
            .map(|p| p.cpus.clone())
            .unwrap_or_else(|| self.full_map());
        let pool_online = and(&pool, &self.online);
        let new_hard = if want_hard {
            Some(self.read_bitmap(mem, a.cpumap_hard)?)
        } else {
            None
        };
        let new_soft = if want_soft {
            Some(self.read_bitmap(mem, a.cpumap_soft)?)
        } else {
            None
        };
        let mut override_on = v.pin_override;
        if a.flags & abi::VCPUAFFINITY_FORCE != 0 {
            override_on = false;
        }
        if let Some(h) = &new_hard {
            if is_empty(&and(h, &pool_online)) {
                return Err(libc::EINVAL);
            }
            if override_on {
                return Err(libc::EBUSY);
            }
        }
        let d = self.domains.get_mut(&domid).expect("checked above");
        let v = d.vcpus[a.vcpu as usize].as_mut().expect("checked above");
        v.pin_override = override_on;
        if let Some(h) = new_hard {
            v.hard = h.into();
        }
        if let Some(s) = new_soft {
            v.soft = s.into();
        }
        let eff_hard = and(&v.hard, &pool_online);
        let eff_soft = and(&and(&v.soft, &pool_online), &v.hard);
        if !has(&eff_hard, v.cpu) {
            let pref = and(&eff_soft, &eff_hard);
            v.cpu = first(&pref).or_else(|| first(&eff_hard)).unwrap_or(v.cpu);
        }
        // written back: effective maps of the flagged kinds (ref §3.6 item 4)
        if want_hard {
            Self::write_bitmap(mem, a.cpumap_hard, &eff_hard)?;
        }
        if want_soft {
            Self::write_bitmap(mem, a.cpumap_soft, &eff_soft)?;
        }
        Ok(0)
    }

    fn sysctl(&mut self, mem: &mut Mem, addr: u64) -> std::result::Result<u64, i32> {
        self.count_op()?;
        let now = self.now();
        let block = mem.slice(addr, abi::XenSysctl::SIZE)?.to_vec();
        let (cmd, ver) = abi::read_sysctl_header(&block);
        let iface = self.iface.ok_or(libc::EACCES)?;
        if ver != iface.sysctl {
            return Err(libc::EACCES);
        }
        let u = &block[abi::SYSCTL_U..];
        let out_u = abi::SYSCTL_U;
        match cmd {
            abi::sysctl::PHYSINFO => {
                let online: u32 = self.online.iter().map(|b| b.count_ones()).sum();
                let total: u64 = (self.mem_per_node >> 12) * u64::from(self.nodes);
                let used: u64 = self.domains.values().map(|d| d.pages).sum();
                let p = RawPhysinfo {
                    threads_per_core: self.threads_per_core,
                    cores_per_socket: self.cores_per_socket,
                    nr_cpus: online,
                    max_cpu_id: self.nr_cpu_ids - 1,
                    nr_nodes: self.nodes,
                    max_node_id: 63,
                    cpu_khz: self.cpu_khz,
                    capabilities: 1,
                    total_pages: total,
                    free_pages: total.saturating_sub(used),
                };
                p.encode(
                    &mut mem.slice_mut(addr, abi::XenSysctl::SIZE)?[out_u..],
                    iface.physinfo_layout(),
                );
                Ok(0)
            }
            abi::sysctl::GETDOMAININFOLIST => {
                let req = abi::GetDomainInfoList::decode(u);
                let stride = iface.dominfo_size;
                let mut n = 0u32;
                let ids: Vec<u16> = self
                    .domains
                    .range(req.first_domain..)
                    .take(req.max_domains as usize)
                    .map(|(id, _)| *id)
                    .collect();
                if !ids.is_empty() {
                    let buf = mem.slice_mut(req.buffer, ids.len() * stride)?;
                    for (i, id) in ids.iter().enumerate() {
                        let info = self.raw_info(&self.domains[id], now);
                        info.encode(&mut buf[i * stride..], stride);
                        n += 1;
                    }
                }
                let out = abi::GetDomainInfoList {
                    num_domains: n,
                    ..req
                };
                out.encode(&mut mem.slice_mut(addr, abi::XenSysctl::SIZE)?[out_u..]);
                Ok(0)
            }
            abi::sysctl::CPUTOPOINFO => {
                let mut req = abi::CpuTopoInfo::decode(u);
                let count = self
                    .topo
                    .iter()
                    .rposition(Option::is_some)
                    .map_or(0, |i| i + 1) as u32;
                if req.cputopo != 0 {
                    let k = count.min(req.num_cpus) as usize;
                    let buf = mem.slice_mut(req.cputopo, k * abi::CpuTopo::SIZE)?;
                    for (i, t) in self.topo.iter().take(k).enumerate() {
                        let inv = abi::XEN_INVALID_TOPO_ID;
                        let e = t.map_or(
                            abi::CpuTopo {
                                core: inv,
                                socket: inv,
                                node: inv,
                            },
                            |t| abi::CpuTopo {
                                core: t.core,
                                socket: t.socket,
                                node: t.node,
                            },
                        );
                        e.encode(&mut buf[i * abi::CpuTopo::SIZE..]);
                    }
                }
                req.num_cpus = count;
                req.encode(&mut mem.slice_mut(addr, abi::XenSysctl::SIZE)?[out_u..]);
                Ok(0)
            }
            abi::sysctl::NUMAINFO => {
                let mut req = abi::NumaInfo::decode(u);
                let nn = self.nodes;
                if req.meminfo != 0 || req.distance != 0 {
                    let k = nn.min(req.num_nodes) as usize;
                    if req.meminfo != 0 {
                        let buf = mem.slice_mut(req.meminfo, k * abi::MemInfo::SIZE)?;
                        for i in 0..k {
                            abi::MemInfo {
                                memsize: self.mem_per_node,
                                memfree: self.mem_per_node / 2,
                            }
                            .encode(&mut buf[i * abi::MemInfo::SIZE..]);
                        }
                    }
                    if req.distance != 0 {
                        let buf = mem.slice_mut(req.distance, k * k * 4)?;
                        for i in 0..k {
                            for j in 0..k {
                                let dist: u32 = if i == j { 10 } else { 20 };
                                dist.put(&mut buf[(i * k + j) * 4..]);
                            }
                        }
                    }
                }
                req.num_nodes = nn;
                req.encode(&mut mem.slice_mut(addr, abi::XenSysctl::SIZE)?[out_u..]);
                Ok(0)
            }
            abi::sysctl::CPUPOOL_OP => {
                let mut req = abi::CpupoolOp::decode(u);
                let map: Vec<u8> = match req.op {
                    abi::cpupool_op::INFO => {
                        let p = self
                            .pools
                            .iter()
                            .filter(|p| p.id >= req.cpupool_id)
                            .min_by_key(|p| p.id)
                            .ok_or(libc::ENOENT)?;
                        req.cpupool_id = p.id;
                        req.sched_id = p.sched_id;
                        req.n_dom = self.domains.values().filter(|d| d.pool == p.id).count() as u32;
                        p.cpus.to_vec()
                    }
                    abi::cpupool_op::FREEINFO => {
                        let mut m = self.online.to_vec();
                        for p in &self.pools {
                            for (a, b) in m.iter_mut().zip(p.cpus.iter()) {
                                *a &= !b;
                            }
                        }
                        m
                    }
                    _ => return Err(libc::ENOSYS),
                };
                if req.cpumap.bitmap != 0 {
                    Self::write_bitmap(mem, req.cpumap, &map)?;
                }
                req.encode(&mut mem.slice_mut(addr, abi::XenSysctl::SIZE)?[out_u..]);
                Ok(0)
            }
            _ => Err(libc::ENOSYS),
        }
    }

    fn dispatch(
        &mut self,
        mem: &mut Mem,
        op: u64,
        args: [u64; 6],
    ) -> std::result::Result<u64, i32> {
        match op {
            abi::HYPERVISOR_DOMCTL => self.domctl(mem, args[0]),
            abi::HYPERVISOR_SYSCTL => self.sysctl(mem, args[0]),
            abi::HYPERVISOR_XEN_VERSION => match args[0] {
                abi::XENVER_VERSION => {
                    Ok(u64::from(self.release.0) << 16 | u64::from(self.release.1))
                }
                1 => {
                    // XENVER_extraversion: 16-byte string (ref §2)
                    let s = format!(".{}", self.release.2);
                    let out = mem.slice_mut(args[1], 16)?;
                    out.fill(0);
                    out[..s.len()].copy_from_slice(s.as_bytes());
                    Ok(0)
                }
                _ => Err(libc::ENOSYS),
            },
            _ => Err(libc::ENOSYS),
        }
    }

    fn hypercall(&mut self, mem: &mut Mem, op: u64, a: [u64; 5]) -> std::result::Result<u64, i32> {
        self.tick();
        self.hypercalls += 1;
        let n = self.hypercalls;
        if let Some(pos) = self.hc_faults.iter().position(|f| f.0 == n) {
            return Err(self.hc_faults.remove(pos).1);
        }
        if op != abi::HYPERVISOR_MULTICALL {
            return self.dispatch(mem, op, [a[0], a[1], a[2], a[3], a[4], 0]);
        }
        if let Some(e) = self.multicall_errno {
            return Err(e);
        }
        // ref §10: arg0 = entry array, arg1 = count; each entry gets its own result
        let n = a[1] as usize;
        mem.slice(
            a[0],
            n.checked_mul(abi::MulticallEntry::SIZE)
                .ok_or(libc::EFAULT)?,
        )?;
        for i in 0..n {
            let at = a[0] + (i * abi::MulticallEntry::SIZE) as u64;
            let mut e = abi::MulticallEntry::decode(mem.slice(at, abi::MulticallEntry::SIZE)?);
            if e.op == abi::HYPERVISOR_MULTICALL {
                e.result = (-i64::from(libc::EINVAL)) as u64;
            } else {
                e.result = match self.dispatch(mem, e.op, e.args) {
                    Ok(r) => r,
                    Err(errno) => (-i64::from(errno)) as u64,
                };
            }
            e.encode(mem.slice_mut(at, abi::MulticallEntry::SIZE)?);
        }
        Ok(0)
    }
}

/// Guest memory as the simulated Xen sees it: the transport's arena at its base address.
struct Mem<'a> {
    base: u64,
    bytes: &'a mut [u8],
}

impl Mem<'_> {
    fn range(&self, addr: u64, len: usize) -> std::result::Result<std::ops::Range<usize>, i32> {
        let off = addr.checked_sub(self.base).ok_or(libc::EFAULT)? as usize;
        let end = off.checked_add(len).ok_or(libc::EFAULT)?;
        if end > self.bytes.len() {
            return Err(libc::EFAULT); // not hypercall memory: what Xen reports (ref §1.5)
        }
        Ok(off..end)
    }
    fn slice(&self, addr: u64, len: usize) -> std::result::Result<&[u8], i32> {
        let r = self.range(addr, len)?;
        Ok(&self.bytes[r])
    }
    fn slice_mut(&mut self, addr: u64, len: usize) -> std::result::Result<&mut [u8], i32> {
        let r = self.range(addr, len)?;
        Ok(&mut self.bytes[r])
    }
}

/// Base of the simulated arena's guest addresses (any non-zero page-aligned value works; a
/// recognisable one helps debugging).
pub const SIM_ARENA_BASE: u64 = 0x5157_0000_0000;

/// The simulator as a [`Transport`].
#[derive(Debug)]
pub struct SimTransport {
    host: SimHandle,
    arena: Vec<u8>,
}

impl SimTransport {
    /// A transport on a new host.
    pub fn new(host: SimHost) -> Self {
        Self::with_handle(Arc::new(Mutex::new(host)))
    }

    /// A transport on a shared host.
    pub fn with_handle(host: SimHandle) -> Self {
        SimTransport {
            host,
            arena: Vec::new(),
        }
    }

    /// The shared host (toolstack side).
    pub fn handle(&self) -> SimHandle {
        self.host.clone()
    }
}

/// Lock a sim host, surviving a poisoned lock (the state stays usable for tests).
pub fn lock(h: &SimHandle) -> MutexGuard<'_, SimHost> {
    h.lock().unwrap_or_else(|p| p.into_inner())
}

impl Transport for SimTransport {
    fn reserve(&mut self, len: usize) -> Result<()> {
        if self.arena.len() < len {
            let want = crate::transport::pages(len.max(self.arena.len() * 2));
            self.arena = vec![0u8; want];
        }
        Ok(())
    }

    fn arena(&mut self) -> (u64, &mut [u8]) {
        (SIM_ARENA_BASE, &mut self.arena)
    }

    fn hypercall(&mut self, op: u64, args: [u64; 5]) -> std::result::Result<u64, Errno> {
        let mut mem = Mem {
            base: SIM_ARENA_BASE,
            bytes: &mut self.arena,
        };
        lock(&self.host)
            .hypercall(&mut mem, op, args)
            .map_err(Errno)
    }

    fn name(&self) -> &'static str {
        "sim"
    }
}

#[cfg(test)]
mod tests;
