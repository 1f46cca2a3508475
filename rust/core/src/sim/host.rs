//! The simulated host: its model (CPUs, pools, domains, vCPUs), the toolstack side (names,
//! vCPU availability, a guest that follows it) and the controls that inject faults.

use super::bitmap::{and, first, map_from, nbytes, nth_set};
use super::spec::{DomSpec, Follow, GuestKind, HostSpec, PoolSpec};
use crate::abi::{self, InterfaceVersion};
use crate::error::{Error, ErrorKind, Result};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A CPU bitmap in Xen's byte form, `ceil(nr_cpu_ids / 8)` bytes (shared when equal).
pub(super) type Map = Arc<[u8]>;

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
pub(super) struct Vcpu {
    pub(super) online: bool,
    pub(super) state: VcpuState,
    pub(super) cpu: u32,
    pub(super) hard: Map,
    pub(super) soft: Map,
    pub(super) pin_override: bool,
    pub(super) time_acc: u64,
    pub(super) since: u64,
    pub(super) rate_permille: u64,
}

#[derive(Debug, Clone)]
pub(super) struct Dom {
    pub(super) id: u16,
    pub(super) name: String,
    pub(super) uuid: [u8; 16],
    pub(super) pool: u32,
    pub(super) vcpus: Vec<Option<Vcpu>>,
    pub(super) dying: bool,
    pub(super) guest: GuestKind,
    pub(super) type_record: bool,
    pub(super) device_model: bool,
    pub(super) paused: bool,
    pub(super) shutdown: Option<u8>,
    pub(super) pages: u64,
    pub(super) availability: Vec<bool>,
    pub(super) pending: Option<(u64, Vec<bool>)>,
}

#[derive(Debug, Clone)]
pub(super) struct Pool {
    pub(super) id: u32,
    pub(super) name: String,
    pub(super) sched_id: u32,
    pub(super) cpus: Map,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Topo {
    pub(super) core: u32,
    pub(super) socket: u32,
    pub(super) node: u32,
}

/// The simulated hypervisor's whole state.
#[derive(Debug)]
pub struct SimHost {
    pub(super) release: (u32, u32, u32),
    pub(super) iface: Option<InterfaceVersion>,
    pub(super) nr_cpu_ids: u32,
    pub(super) threads_per_core: u32,
    pub(super) cores_per_socket: u32,
    pub(super) cpu_khz: u32,
    pub(super) nodes: u32,
    pub(super) mem_per_node: u64,
    pub(super) topo: Vec<Option<Topo>>,
    pub(super) online: Map,
    pub(super) pools: Vec<Pool>,
    pub(super) domains: BTreeMap<u16, Dom>,
    pub(super) start: Instant,
    pub(super) offset_ns: i64,
    pub(super) frozen_at: Option<u64>,
    pub(super) follow: Follow,
    pub(super) ops: u64,
    pub(super) hypercalls: u64,
    pub(super) faults: Vec<(u64, i32)>,
    pub(super) hc_faults: Vec<(u64, i32)>,
    pub(super) removals: Vec<(u64, u16)>,
    pub(super) multicall_errno: Option<i32>,
}

/// Shared handle to a simulated host (toolstack side).
pub type SimHandle = Arc<Mutex<SimHost>>;

/// Nanoseconds since `start` (saturating: a u64 of them lasts 584 years).
fn elapsed_ns(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// CPU time a vCPU accrued since it last changed state: wall time × its run rate.
pub(super) fn ran_ns(v: &Vcpu, now: u64) -> u64 {
    now.saturating_sub(v.since).saturating_mul(v.rate_permille) / 1000
}

fn no_hv(msg: String) -> Error {
    Error::new(ErrorKind::Other, msg)
}

impl SimHost {
    /// Build a host from a spec.
    pub fn new(spec: &HostSpec) -> Result<Self> {
        // Every size below is within its cap once the spec is valid (HostSpec::validate).
        spec.validate()?;
        let present = spec.present().unwrap_or(0);
        let nr = spec.nr_cpu_ids.max(present);
        let per_node = present.div_ceil(spec.nodes.max(1)).max(1);
        let mut topo = vec![None; nr as usize];
        let mut online = vec![0u8; nbytes(nr)];
        for c in 0..present {
            let t = spec.threads_per_core;
            let offline = spec.offline.contains(&c);
            let node = c / per_node;
            topo[c as usize] = Some(if offline {
                // Xen invalidates core/socket ids of an offlined CPU (xen-interfaces.md §4.3: 0xFFFFFFFF).
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
            mem_per_node: spec.mem_mb_per_node << 20, // ≤ MAX_MEM_MB << 20, no overflow
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

    pub(super) fn now(&self) -> u64 {
        let t = self.frozen_at.unwrap_or_else(|| elapsed_ns(self.start));
        // Saturating: the clock may be moved forward without bound (advance), never wrap.
        let t = i64::try_from(t).unwrap_or(i64::MAX);
        u64::try_from(t.saturating_add(self.offset_ns).max(0)).unwrap_or(0)
    }

    /// Stop (true) or restart (false) the wall clock; [`SimHost::advance`] still moves time.
    /// Frozen hosts give reproducible CPU times.
    pub fn freeze_clock(&mut self, frozen: bool) {
        match (frozen, self.frozen_at) {
            (true, None) => self.frozen_at = Some(elapsed_ns(self.start)),
            (false, Some(at)) => {
                // continue from the frozen instant
                let real = i64::try_from(elapsed_ns(self.start)).unwrap_or(i64::MAX);
                let at = i64::try_from(at).unwrap_or(i64::MAX);
                self.offset_ns = self.offset_ns.saturating_add(at.saturating_sub(real));
                self.frozen_at = None;
            }
            _ => {}
        }
    }

    pub(super) fn full_map(&self) -> Map {
        let mut m = vec![0xFFu8; nbytes(self.nr_cpu_ids)];
        let r = self.nr_cpu_ids % 8;
        if r != 0 {
            *m.last_mut().expect("non-empty") = (1u8 << r) - 1;
        }
        m.into()
    }

    pub(super) fn pool(&self, id: u32) -> Option<&Pool> {
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
                guest: d.guest,
                type_record: d.type_record,
                device_model: d.device_model.unwrap_or(d.guest == GuestKind::Hvm),
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

    /// What the toolstack knows of a domain's kind: the `/libxl/<domid>/type` record (None
    /// where it is missing) and whether a device model is registered for it.
    pub fn guest_record(&self, domid: u32) -> Option<(Option<&'static str>, bool)> {
        let d = u16::try_from(domid)
            .ok()
            .and_then(|i| self.domains.get(&i))?;
        Some((d.type_record.then(|| d.guest.name()), d.device_model))
    }

    /// Name of a cpupool (toolstack side).
    pub fn pool_name(&self, id: u32) -> Option<String> {
        self.pool(id).map(|p| p.name.clone())
    }

    /// Write `cpu/<n>/availability` for every vCPU (xen-interfaces.md §5.5): `online[n]` = wanted state.
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
            Follow::After(delay) => {
                let due = now.saturating_add(u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX));
                d.pending = Some((due, want))
            }
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
        let by = i64::try_from(by.as_nanos()).unwrap_or(i64::MAX);
        self.offset_ns = self.offset_ns.saturating_add(by);
        self.tick();
    }

    /// Apply availability changes whose delay has passed.
    pub(super) fn tick(&mut self) {
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
                        v.time_acc = v.time_acc.saturating_add(ran_ns(v, now));
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

    /// Mark a domain shut down with a code (xen-interfaces.md §3.4 SHUTDOWN_*), or clear it.
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
                    v.time_acc = v.time_acc.saturating_add(ran_ns(v, now));
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

    /// Remove the vCPU structure of a slot (Xen: "slot not allocated" → ESRCH, xen-interfaces.md §3.5).
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
}
