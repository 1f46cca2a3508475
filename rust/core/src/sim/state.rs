//! The state of a lasting simulated host (`sim:///…?state=PATH`, see `store.rs`) as JSON:
//! everything a [`SimHost`] holds beyond its hardware — Xen release, cpupools, domains with
//! their vCPUs, maps, online sets and pending guest follow-ups, creation specs, the clock,
//! faults and counters — plus the host description it was made from, so that a file made
//! from another description is refused instead of silently giving another host.
//!
//! Read with serde_json into typed structs that refuse unknown fields; every value is then
//! checked as a host description is (`spec.rs`): sizes against the `MAX_*` caps before
//! anything is built from them, ids against their host, maps as cpulists whose ranges must
//! go upwards (so a map costs at most its own size to read), and nothing is applied to the
//! host until all of it is valid. The file is capped at [`MAX_STATE_BYTES`] by its reader.
#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice
)]

use super::bitmap::nbytes;
use super::host::{Dom, Map, Pool, SimHost, Vcpu, VcpuState};
use super::spec::{
    bad, check_map_bytes, check_name, parse_list, parse_uuid, DomSpec, Follow, GuestKind, HostSpec,
    MAX_DOMAINS, MAX_LIST_IDS, MAX_MEM_MB, MAX_POOLS, MAX_VCPUS,
};
use crate::abi::{InterfaceVersion, DOMID_FIRST_RESERVED};
use crate::error::Result;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::time::Duration;

/// The format tag of a state file; another one is refused by name.
pub const FORMAT: &str = "xenvcpu-sim-state/1";

/// The largest state file that is read or written, in bytes. A lasting host is meant for
/// small hosts (a CLI, a watcher, their tests); a larger state is refused when it would be
/// written.
pub const MAX_STATE_BYTES: u64 = 64 << 20;

/// A host description as a state file records it (lists as cpulists).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Desc {
    release: (u32, u32, u32),
    sockets: u32,
    cores_per_socket: u32,
    threads_per_core: u32,
    nr_cpu_ids: u32,
    nodes: u32,
    offline: String,
    cpu_khz: u32,
    mem_mb_per_node: u64,
    pools: Vec<PoolDesc>,
    domains: Vec<DomDesc>,
    follow_ns: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolDesc {
    id: u32,
    name: String,
    sched_id: u32,
    cpus: String,
}

/// A domain's creation spec ([`DomSpec`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DomDesc {
    id: u16,
    name: String,
    uuid: Option<String>,
    vcpus: u32,
    online: Option<String>,
    pool: u32,
    hard: Option<String>,
    soft: Option<String>,
    pins: Vec<(u32, String)>,
    guest: String,
    type_record: bool,
    device_model: Option<bool>,
    paused: bool,
    mem_mb: u64,
}

/// The whole file. `D` is the description: borrowed when written, owned when read.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct State<D> {
    format: String,
    description: D,
    clock: Clock,
    release: (u32, u32, u32),
    follow_ns: Option<u64>,
    ops: u64,
    hypercalls: u64,
    faults: Vec<(u64, i32)>,
    hypercall_faults: Vec<(u64, i32)>,
    removals: Vec<(u64, u16)>,
    multicall_errno: Option<i32>,
    last_domid: u16,
    pools: Vec<PoolState>,
    domains: Vec<DomState>,
    gone: Vec<DomDesc>,
}

/// Only the format tag, read first so that another format is named, not misparsed.
#[derive(Deserialize)]
struct Header {
    format: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Clock {
    epoch_ns: u64,
    offset_ns: i64,
    frozen_at_ns: Option<u64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolState {
    id: u32,
    name: String,
    sched_id: u32,
    cpus: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DomState {
    id: u16,
    name: String,
    uuid: String,
    pool: u32,
    guest: String,
    type_record: bool,
    device_model: bool,
    paused: bool,
    dying: bool,
    shutdown: Option<u8>,
    pages: u64,
    availability: String,
    pending: Option<(u64, String)>,
    vcpus: Vec<Option<VcpuSt>>,
    spec: DomDesc,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VcpuSt {
    online: bool,
    state: String,
    cpu: u32,
    hard: String,
    soft: String,
    pin_override: bool,
    time_ns: u64,
    since_ns: u64,
    rate_permille: u64,
}

// ----- cpulists ------------------------------------------------------------------------------

/// `0-3,8` from ranges.
fn print_ranges(ranges: impl Iterator<Item = (u32, u32)>) -> String {
    let mut s = String::new();
    for (a, b) in ranges {
        if !s.is_empty() {
            s.push(',');
        }
        // writing to a String cannot fail
        let _ = if a == b {
            write!(s, "{a}")
        } else {
            write!(s, "{a}-{b}")
        };
    }
    s
}

/// The ranges of set bits of a byte map.
fn map_ranges(m: &[u8]) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    let mut start: Option<u32> = None;
    let mut c: u32 = 0;
    for &b in m {
        if (b == 0 && start.is_none()) || (b == 0xFF && start.is_some()) {
            c = c.saturating_add(8);
            continue;
        }
        for bit in 0..8 {
            let set = (b >> bit) & 1 != 0;
            match (set, start) {
                (true, None) => start = Some(c),
                (false, Some(s)) => {
                    out.push((s, c.saturating_sub(1)));
                    start = None;
                }
                _ => {}
            }
            c = c.saturating_add(1);
        }
    }
    if let Some(s) = start {
        out.push((s, c.saturating_sub(1)));
    }
    out
}

fn print_map(m: &[u8]) -> String {
    print_ranges(map_ranges(m).into_iter())
}

fn print_bools(b: &[bool]) -> String {
    let bytes = b.chunks(8).map(|c| {
        c.iter()
            .enumerate()
            .fold(0u8, |m, (i, &on)| m | (u8::from(on) << i))
    });
    print_map(&bytes.collect::<Vec<u8>>())
}

fn print_ids(ids: &[u32]) -> String {
    let mut v = ids.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut out: Vec<(u32, u32)> = Vec::new();
    for id in v {
        match out.last_mut() {
            Some((_, b)) if b.checked_add(1) == Some(id) => *b = id,
            _ => out.push((id, id)),
        }
    }
    print_ranges(out.into_iter())
}

/// A map of `nr` CPUs from a cpulist whose ranges go upwards (`0-3,8`; empty: no CPU), so
/// reading it costs at most the map's size plus the text's.
fn parse_map(text: &str, nr: u32, what: &str) -> Result<Vec<u8>> {
    let mut m = vec![0u8; nbytes(nr)];
    if text.is_empty() {
        return Ok(m);
    }
    let mut next: u32 = 0;
    for (i, tok) in text.split(',').enumerate() {
        let wrong = |why: &str| {
            let shown: String = tok.chars().take(24).collect();
            bad(format!("{what}: {shown:?}: {why}"))
        };
        let num = |s: &str| {
            if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(wrong("not a list of CPU numbers"));
            }
            s.parse::<u32>()
                .map_err(|_| wrong("not a list of CPU numbers"))
        };
        let (a, b) = match tok.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => {
                let n = num(tok)?;
                (n, n)
            }
        };
        if b >= nr {
            return Err(wrong(&format!(
                "beyond the host's CPUs (0 to {})",
                nr.saturating_sub(1)
            )));
        }
        if a > b || (i > 0 && a < next) {
            return Err(wrong("the ranges of a list must go upwards"));
        }
        fill(&mut m, a, b);
        next = b.saturating_add(1);
    }
    Ok(m)
}

/// Set bits `a..=b` (within the map).
fn fill(m: &mut [u8], a: u32, b: u32) {
    let mut c = a;
    while c <= b {
        let byte = (c / 8) as usize;
        let Some(slot) = m.get_mut(byte) else {
            return;
        };
        if c.is_multiple_of(8) && b.saturating_sub(c) >= 7 {
            *slot = 0xFF;
            c = c.saturating_add(8);
        } else {
            *slot |= 1 << (c % 8);
            match c.checked_add(1) {
                Some(n) => c = n,
                None => return,
            }
        }
    }
}

/// `len` flags from a list of the set ones.
fn parse_bools(text: &str, len: usize, what: &str) -> Result<Vec<bool>> {
    let n = u32::try_from(len).map_err(|_| bad(format!("{what}: too long")))?;
    let m = parse_map(text, n, what)?;
    Ok((0..len)
        .map(|i| m.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0))
        .collect())
}

// ----- descriptions --------------------------------------------------------------------------

fn follow_ns(f: Follow) -> Option<u64> {
    match f {
        Follow::After(d) => Some(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        Follow::Never => None,
    }
}

fn dom_desc(d: &DomSpec) -> DomDesc {
    DomDesc {
        id: d.id,
        name: d.name.clone(),
        uuid: d.uuid.map(|u| uuid_string(&u)),
        vcpus: d.vcpus,
        online: d.online.as_deref().map(print_ids),
        pool: d.pool,
        hard: d.hard.as_deref().map(print_ids),
        soft: d.soft.as_deref().map(print_ids),
        pins: d.pins.iter().map(|(v, m)| (*v, print_ids(m))).collect(),
        guest: d.guest.name().to_string(),
        type_record: d.type_record,
        device_model: d.device_model,
        paused: d.paused,
        mem_mb: d.mem_mb,
    }
}

/// The description a state file records for a host spec.
pub(super) fn describe(spec: &HostSpec) -> Desc {
    Desc {
        release: spec.release,
        sockets: spec.sockets,
        cores_per_socket: spec.cores_per_socket,
        threads_per_core: spec.threads_per_core,
        nr_cpu_ids: spec.nr_cpu_ids,
        nodes: spec.nodes,
        offline: print_ids(&spec.offline),
        cpu_khz: spec.cpu_khz,
        mem_mb_per_node: spec.mem_mb_per_node,
        pools: spec
            .pools
            .iter()
            .map(|p| PoolDesc {
                id: p.id,
                name: p.name.clone(),
                sched_id: p.sched_id,
                cpus: print_ids(&p.cpus),
            })
            .collect(),
        domains: spec.domains.iter().map(dom_desc).collect(),
        follow_ns: follow_ns(spec.follow),
    }
}

/// What differs between two descriptions, for the message refusing a state file.
fn difference(file: &Desc, now: &Desc) -> String {
    let hw = |d: &Desc| {
        (
            d.sockets,
            d.cores_per_socket,
            d.threads_per_core,
            d.nr_cpu_ids,
            d.nodes,
            d.cpu_khz,
            d.mem_mb_per_node,
        )
    };
    if file.release != now.release {
        let (a, b, c) = file.release;
        return format!("it was made for Xen {a}.{b}.{c}");
    }
    if hw(file) != hw(now) {
        return format!(
            "it was made for {} sockets × {} cores × {} threads ({} CPU ids, {} nodes)",
            file.sockets, file.cores_per_socket, file.threads_per_core, file.nr_cpu_ids, file.nodes
        );
    }
    if file.offline != now.offline {
        return format!("its offline CPUs are {:?}", file.offline);
    }
    if file.pools != now.pools {
        return "its cpupools differ".to_string();
    }
    if file.follow_ns != now.follow_ns {
        return "its guests follow online-vCPU changes after another delay".to_string();
    }
    let differs = file
        .domains
        .iter()
        .zip(&now.domains)
        .find(|(a, b)| a != b)
        .map(|(a, _)| a);
    match differs {
        Some(d) => format!("its domain {} ({}) differs", d.id, d.name),
        None => format!(
            "it has {} domains, this host {}",
            file.domains.len(),
            now.domains.len()
        ),
    }
}

fn uuid_string(u: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn state_name(s: VcpuState) -> &'static str {
    match s {
        VcpuState::Running => "running",
        VcpuState::Blocked => "blocked",
        VcpuState::Runnable => "runnable",
    }
}

// ----- writing -------------------------------------------------------------------------------

/// The state of a host, as the bytes of its file.
pub(super) fn encode(host: &SimHost, desc: &Desc) -> Result<Vec<u8>> {
    let domains = host
        .domains
        .values()
        .map(|d| DomState {
            id: d.id,
            name: d.name.clone(),
            uuid: uuid_string(&d.uuid),
            pool: d.pool,
            guest: d.guest.name().to_string(),
            type_record: d.type_record,
            device_model: d.device_model,
            paused: d.paused,
            dying: d.dying,
            shutdown: d.shutdown,
            pages: d.pages,
            availability: print_bools(&d.availability),
            pending: d.pending.as_ref().map(|(t, w)| (*t, print_bools(w))),
            vcpus: d
                .vcpus
                .iter()
                .map(|v| {
                    v.as_ref().map(|v| VcpuSt {
                        online: v.online,
                        state: state_name(v.state).to_string(),
                        cpu: v.cpu,
                        hard: print_map(&v.hard),
                        soft: print_map(&v.soft),
                        pin_override: v.pin_override,
                        time_ns: v.time_acc,
                        since_ns: v.since,
                        rate_permille: v.rate_permille,
                    })
                })
                .collect(),
            // every domain has one (add_domain keeps it); the fallback keeps this total
            spec: host.specs.get(&d.id).map_or_else(
                || dom_desc(&DomSpec::new(d.id, &d.name, d.vcpus.len() as u32)),
                dom_desc,
            ),
        })
        .collect();
    let state = State {
        format: FORMAT.to_string(),
        description: desc,
        clock: Clock {
            epoch_ns: host.epoch_ns,
            offset_ns: host.offset_ns,
            frozen_at_ns: host.frozen_at,
        },
        release: host.release,
        follow_ns: follow_ns(host.follow),
        ops: host.ops,
        hypercalls: host.hypercalls,
        faults: host.faults.clone(),
        hypercall_faults: host.hc_faults.clone(),
        removals: host.removals.clone(),
        multicall_errno: host.multicall_errno,
        last_domid: host.last_domid,
        pools: host
            .pools
            .iter()
            .map(|p| PoolState {
                id: p.id,
                name: p.name.clone(),
                sched_id: p.sched_id,
                cpus: print_map(&p.cpus),
            })
            .collect(),
        domains,
        gone: host.gone.values().map(dom_desc).collect(),
    };
    serde_json::to_vec(&state).map_err(|e| bad(format!("cannot write the host's state: {e}")))
}

// ----- reading -------------------------------------------------------------------------------

/// A serde_json error for a message: clipped, without control characters (it may quote
/// the file).
fn json_error(file: &str, e: &serde_json::Error) -> crate::error::Error {
    let msg: String = e
        .to_string()
        .chars()
        .take(300)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    bad(format!(
        "state file {file} is not the state of a simulated host: {msg}"
    ))
}

/// A domain's creation spec, checked as a host description's domain is.
fn dom_spec(d: &DomDesc, spec: &HostSpec, budget: &mut u64) -> Result<DomSpec> {
    let who = format!("domain {} ({})", d.id, d.name);
    if d.vcpus == 0 || d.vcpus > MAX_VCPUS {
        return Err(bad(format!(
            "{who}: {} vCPUs; a domain has 1 to {MAX_VCPUS}",
            d.vcpus
        )));
    }
    let nr = spec.nr_cpu_ids;
    let list = |t: &Option<String>, limit: u32, what: &str, budget: &mut u64| {
        t.as_deref()
            .map(|t| parse_list(t, limit, &format!("{who} {what}"), budget))
            .transpose()
    };
    let mut pins = Vec::with_capacity(d.pins.len().min(MAX_VCPUS as usize));
    for (v, m) in &d.pins {
        pins.push((*v, parse_list(m, nr, &format!("{who} pin"), budget)?));
    }
    let s = DomSpec {
        id: d.id,
        name: d.name.clone(),
        uuid: d.uuid.as_deref().map(parse_uuid).transpose()?,
        vcpus: d.vcpus,
        online: list(&d.online, d.vcpus, "online vCPUs", budget)?,
        pool: d.pool,
        hard: list(&d.hard, nr, "hard affinity", budget)?,
        soft: list(&d.soft, nr, "soft affinity", budget)?,
        pins,
        guest: GuestKind::from_name(&d.guest)
            .ok_or_else(|| bad(format!("{who}: unknown guest type {:?}", d.guest)))?,
        type_record: d.type_record,
        device_model: d.device_model,
        paused: d.paused,
        mem_mb: d.mem_mb,
    };
    spec.validate_domain(&s)?;
    Ok(s)
}

/// The parts of a host a state file replaces, checked; assigned to the host at once.
struct Loaded {
    pools: Vec<Pool>,
    domains: BTreeMap<u16, Dom>,
    specs: BTreeMap<u16, DomSpec>,
    gone: BTreeMap<String, DomSpec>,
}

/// Read a state file's bytes into `host` (built from `spec`, whose description is `desc`):
/// nothing of the host changes unless all of the file is valid. `file` names it in errors.
pub(super) fn decode(
    bytes: &[u8],
    spec: &HostSpec,
    desc: &Desc,
    host: &mut SimHost,
    file: &str,
) -> Result<()> {
    let head: Header = serde_json::from_slice(bytes).map_err(|e| json_error(file, &e))?;
    if head.format != FORMAT {
        let shown: String = head.format.chars().take(40).collect();
        return Err(bad(format!(
            "state file {file} has the format {shown:?}; this xenvcpu reads {FORMAT:?} (remove \
             the file to start afresh)"
        )));
    }
    let st: State<Desc> = serde_json::from_slice(bytes).map_err(|e| json_error(file, &e))?;
    if st.description != *desc {
        return Err(bad(format!(
            "state file {file} holds a host made from another description ({}): open it with \
             the URI it was made with, or remove it to start afresh",
            difference(&st.description, desc)
        )));
    }
    let loaded = load(&st, spec, host).map_err(|mut e| {
        e.message = format!("state file {file}: {}", e.message);
        e
    })?;
    if u32::from(st.last_domid) >= DOMID_FIRST_RESERVED {
        return Err(bad(format!(
            "state file {file}: last domid {} is a reserved one",
            st.last_domid
        )));
    }
    let (a, b, c) = st.release;
    host.release = st.release;
    host.iface = InterfaceVersion::for_release_patch(a, b, c).ok();
    host.pools = loaded.pools;
    host.domains = loaded.domains;
    // `tick` looks only at this: the loaded follow-ups must be due there too.
    host.pending_due = host
        .domains
        .values()
        .filter_map(|d| d.pending.as_ref().map(|p| p.0))
        .min();
    host.specs = loaded.specs;
    host.gone = loaded.gone;
    host.last_domid = st.last_domid;
    host.epoch_ns = st.clock.epoch_ns;
    host.offset_ns = st.clock.offset_ns;
    host.frozen_at = st.clock.frozen_at_ns;
    host.follow = st
        .follow_ns
        .map_or(Follow::Never, |ns| Follow::After(Duration::from_nanos(ns)));
    host.ops = st.ops;
    host.hypercalls = st.hypercalls;
    host.faults = st.faults;
    host.hc_faults = st.hypercall_faults;
    host.removals = st.removals;
    host.multicall_errno = st.multicall_errno;
    Ok(())
}

/// The state file's bytes of `host`, made from `spec`: what a lasting host writes.
pub fn write_state(host: &SimHost, spec: &HostSpec) -> Result<Vec<u8>> {
    encode(host, &describe(spec))
}

/// The host that a state file's bytes hold, for hosts made from `spec`: what a lasting host
/// reloads, with every check (an error for anything that is not such a state, never a
/// panic). For the fuzzer and tests; a lasting host is opened with [`super::SimHandle::open`].
pub fn read_state(bytes: &[u8], spec: &HostSpec) -> Result<SimHost> {
    let mut host = SimHost::new(spec)?;
    decode(bytes, spec, &describe(spec), &mut host, "(bytes)")?;
    Ok(host)
}

/// A map read once per text: equal maps are shared, as the host shares them.
fn shared_map<'a>(
    maps: &mut BTreeMap<&'a str, Map>,
    text: &'a str,
    nr: u32,
    what: &str,
) -> Result<Map> {
    if let Some(m) = maps.get(text) {
        return Ok(m.clone());
    }
    let m: Map = parse_map(text, nr, what)?.into();
    maps.insert(text, m.clone());
    Ok(m)
}

fn load(st: &State<Desc>, spec: &HostSpec, host: &SimHost) -> Result<Loaded> {
    let nr = host.nr_cpu_ids;
    // cpupools: named, distinct, online CPUs that no other pool has, pool 0 among them
    if st.pools.len() > MAX_POOLS {
        return Err(bad(format!(
            "{} cpupools: at most {MAX_POOLS}",
            st.pools.len()
        )));
    }
    let mut pools = Vec::with_capacity(st.pools.len());
    let mut pool_ids = BTreeSet::new();
    let mut taken = vec![0u8; nbytes(nr)];
    for p in &st.pools {
        let what = format!("cpupool {}", p.id);
        check_name(&p.name, "cpupool")?;
        if !pool_ids.insert(p.id) {
            return Err(bad(format!("{what} is given twice")));
        }
        let m = parse_map(&p.cpus, nr, &format!("{what} CPUs"))?;
        for ((t, b), o) in taken.iter_mut().zip(&m).zip(host.online.iter()) {
            if b & !o != 0 {
                return Err(bad(format!("{what} has an offline CPU")));
            }
            if *t & b != 0 {
                return Err(bad(format!("{what} shares CPUs with another pool")));
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
    if !pool_ids.contains(&0) {
        return Err(bad("there is no cpupool 0".to_string()));
    }
    pools.sort_by_key(|p| p.id);

    // domains: sizes first, then each one
    if st.domains.len() > MAX_DOMAINS as usize {
        return Err(bad(format!(
            "{} domains: at most {MAX_DOMAINS}",
            st.domains.len()
        )));
    }
    let total = st
        .domains
        .iter()
        .map(|d| u64::try_from(d.vcpus.len()).unwrap_or(u64::MAX))
        .fold(0, u64::saturating_add);
    check_map_bytes(total, u64::from(nr))?;
    let mut budget = MAX_LIST_IDS;
    let mut maps: BTreeMap<&str, Map> = BTreeMap::new();
    let mut domains = BTreeMap::new();
    let mut specs = BTreeMap::new();
    for d in &st.domains {
        let who = format!("domain {} ({})", d.id, d.name);
        if u32::from(d.id) >= DOMID_FIRST_RESERVED {
            return Err(bad(format!("{who}: {} is a reserved domid", d.id)));
        }
        check_name(&d.name, "domain")?;
        let n = d.vcpus.len();
        if n == 0 || n > MAX_VCPUS as usize {
            return Err(bad(format!(
                "{who}: {n} vCPUs; a domain has 1 to {MAX_VCPUS}"
            )));
        }
        if !pool_ids.contains(&d.pool) {
            return Err(bad(format!("{who}: no cpupool {}", d.pool)));
        }
        if d.pages > MAX_MEM_MB.saturating_mul(256) {
            return Err(bad(format!("{who}: {} pages is too much memory", d.pages)));
        }
        let mut vcpus = Vec::with_capacity(n);
        for (i, v) in d.vcpus.iter().enumerate() {
            let Some(v) = v else {
                vcpus.push(None);
                continue;
            };
            let what = format!("{who} vCPU {i}");
            let state = match v.state.as_str() {
                "running" => VcpuState::Running,
                "blocked" => VcpuState::Blocked,
                "runnable" => VcpuState::Runnable,
                _ => return Err(bad(format!("{what}: unknown state"))),
            };
            if v.cpu >= nr {
                return Err(bad(format!(
                    "{what}: CPU {} is not a CPU of the host",
                    v.cpu
                )));
            }
            if v.rate_permille > 1000 {
                return Err(bad(format!("{what}: runs more than all the time")));
            }
            vcpus.push(Some(Vcpu {
                online: v.online,
                state,
                cpu: v.cpu,
                hard: shared_map(&mut maps, &v.hard, nr, &format!("{what} hard affinity"))?,
                soft: shared_map(&mut maps, &v.soft, nr, &format!("{what} soft affinity"))?,
                pin_override: v.pin_override,
                time_acc: v.time_ns,
                since: v.since_ns,
                rate_permille: v.rate_permille,
            }));
        }
        let pending = match &d.pending {
            Some((due, w)) => Some((*due, parse_bools(w, n, &format!("{who} pending vCPUs"))?)),
            None => None,
        };
        let creation = dom_spec(&d.spec, spec, &mut budget)?;
        if creation.id != d.id || !pool_ids.contains(&creation.pool) {
            return Err(bad(format!("{who}: its creation spec is another domain's")));
        }
        let dom = Dom {
            id: d.id,
            name: d.name.clone(),
            uuid: parse_uuid(&d.uuid)?,
            pool: d.pool,
            vcpus,
            dying: d.dying,
            guest: GuestKind::from_name(&d.guest)
                .ok_or_else(|| bad(format!("{who}: unknown guest type")))?,
            type_record: d.type_record,
            device_model: d.device_model,
            paused: d.paused,
            shutdown: d.shutdown,
            pages: d.pages,
            availability: parse_bools(&d.availability, n, &format!("{who} availability"))?,
            pending,
        };
        if domains.insert(d.id, dom).is_some() {
            return Err(bad(format!("domain id {} is given twice", d.id)));
        }
        specs.insert(d.id, creation);
    }
    let mut gone = BTreeMap::new();
    for g in &st.gone {
        let s = dom_spec(g, spec, &mut budget)?;
        if !pool_ids.contains(&s.pool) {
            return Err(bad(format!(
                "saved domain {}: no cpupool {}",
                s.name, s.pool
            )));
        }
        if gone.insert(s.name.clone(), s).is_some() {
            return Err(bad(format!("saved domain {} is given twice", g.name)));
        }
    }
    Ok(Loaded {
        pools,
        domains,
        specs,
        gone,
    })
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)]
mod tests {
    use super::*;

    #[test]
    fn cpulists_round_trip() {
        for (text, nr) in [
            ("", 8),
            ("0", 8),
            ("0-7", 8),
            ("1,3,5-6", 8),
            ("0-4095", 4096),
            ("8-15,17,100-200", 4096),
            ("4", 5),
        ] {
            let m = parse_map(text, nr, "x").unwrap();
            assert_eq!(m.len(), nbytes(nr));
            assert_eq!(print_map(&m), text);
        }
        assert_eq!(print_ids(&[3, 1, 2, 2, 9]), "1-3,9");
        assert_eq!(print_bools(&[true, true, false, true]), "0-1,3");
        assert_eq!(
            parse_bools("0-1,3", 5, "x").unwrap(),
            [true, true, false, true, false]
        );
    }

    #[test]
    fn hostile_cpulists_are_refused() {
        for text in [
            "8",
            "0-8",
            "3-1",
            "2,1",
            "0-3,2-5",
            "0,,1",
            "-1",
            "1-",
            "x",
            "0x1",
            " 1",
            "1,",
            "99999999999",
            "4294967295",
        ] {
            assert!(parse_map(text, 8, "x").is_err(), "{text:?}");
        }
        assert!(parse_map("0-262143", 262_144, "x").is_ok());
    }
}
