//! Host descriptions for the simulator: the built-in `sim:///default`, scale hosts from a URI
//! query, and TOML files (a small TOML subset, parsed here).

use crate::abi::sched;
use crate::error::{Error, ErrorKind, Result};
use std::collections::BTreeMap;
use std::time::Duration;

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
    /// HVM guest flag
    pub hvm: bool,
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
            hvm: false,
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

    /// Present CPUs.
    pub fn present(&self) -> u32 {
        self.sockets * self.cores_per_socket * self.threads_per_core
    }

    /// `sim:///default`: 2 sockets × 16 cores × 2 threads, 2 nodes, two cpupools, Domain-0 and
    /// three guests of different sizes (some vCPUs offline, some pinned, one in pool 1).
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
        db.hvm = true;
        db.mem_mb = 16384;
        let mut batch = DomSpec::new(3, "batch", 16);
        batch.online = Some(range(0, 11));
        batch.pool = 1;
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

    /// A scale host from a query (`cpus`, `sockets`, `threads`, `nodes`, `max_cpus`, `domains`,
    /// `vcpus`) plus the common overrides ([`HostSpec::apply_overrides`]).
    pub fn from_query(q: &BTreeMap<String, String>) -> Result<Self> {
        let num = |k: &str, d: u64| -> Result<u64> {
            match q.get(k) {
                None => Ok(d),
                Some(v) => v
                    .parse::<u64>()
                    .map_err(|_| bad(format!("{k}={v} is not a number"))),
            }
        };
        let cpus = num("cpus", 64)? as u32;
        let nodes = num("nodes", 2.min(cpus as u64))? as u32;
        let threads = num("threads", if cpus % 2 == 0 { 2 } else { 1 })? as u32;
        let sockets = num("sockets", nodes as u64)? as u32;
        if cpus == 0 || cpus > 65536 * 4 || nodes == 0 || threads == 0 || sockets == 0 {
            return Err(bad(format!(
                "cpus={cpus}, nodes={nodes}, threads={threads}, sockets={sockets} is not a host"
            )));
        }
        if cpus % (sockets * threads) != 0 {
            return Err(bad(format!(
                "cpus={cpus} is not a multiple of sockets × threads = {}",
                sockets * threads
            )));
        }
        let max_cpus = num("max_cpus", cpus as u64)? as u32;
        if max_cpus < cpus {
            return Err(bad(format!("max_cpus={max_cpus} is below cpus={cpus}")));
        }
        let ndom = num("domains", 3)? as u32;
        let vcpus = num("vcpus", 4)? as u32;
        if ndom as u64 >= crate::abi::DOMID_FIRST_RESERVED as u64 - 1 || vcpus == 0 || vcpus > 8192
        {
            return Err(bad(format!(
                "domains={ndom}, vcpus={vcpus} is out of range"
            )));
        }
        let mut domains = vec![DomSpec::new(0, "Domain-0", cpus.min(4))];
        let per_node = cpus / nodes;
        for i in 1..=ndom {
            let mut d = DomSpec::new(i as u16, &format!("guest-{i}"), vcpus);
            if vcpus > 1 && i % 5 == 0 {
                d.online = Some(range(0, vcpus / 2 - 1));
            }
            if i % 4 == 0 && per_node > 0 {
                let n = i % nodes;
                d.hard = Some(range(n * per_node, (n + 1) * per_node - 1));
            }
            domains.push(d);
        }
        let mut h = HostSpec {
            release: (4, 17, 5),
            sockets,
            cores_per_socket: cpus / (sockets * threads),
            threads_per_core: threads,
            nr_cpu_ids: max_cpus,
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
        let common: BTreeMap<String, String> = q
            .iter()
            .filter(|(k, _)| !SCALE_PARAMS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        h.apply_overrides(&common)?;
        Ok(h)
    }

    /// Overrides valid on every host: `version=4.10.0`, `offline=60-63`, `delay_ms=N`,
    /// `follow=never`.
    pub fn apply_overrides(&mut self, q: &BTreeMap<String, String>) -> Result<()> {
        if let Some(v) = q.get("version") {
            self.release = parse_release(v)?;
        }
        if let Some(v) = q.get("offline") {
            self.offline = parse_list(v)?;
        }
        if let Some(v) = q.get("delay_ms") {
            let ms = v
                .parse::<u64>()
                .map_err(|_| bad(format!("delay_ms={v} is not a number")))?;
            self.follow = Follow::After(Duration::from_millis(ms));
        }
        if let Some(v) = q.get("follow") {
            match v.as_str() {
                "never" => self.follow = Follow::Never,
                "yes" | "always" => {}
                _ => return Err(bad(format!("follow={v}: expected never"))),
            }
        }
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
        Ok(())
    }

    /// Parse a host from the TOML subset (see module docs of [`crate::sim`]).
    pub fn from_toml(text: &str) -> Result<Self> {
        let doc = parse_toml(text)?;
        let empty = BTreeMap::new();
        let host = doc.tables.get("host").unwrap_or(&empty);
        let get_u = |t: &BTreeMap<String, Value>, k: &str, d: u64| -> Result<u64> {
            match t.get(k) {
                None => Ok(d),
                Some(Value::Int(i)) if *i >= 0 => Ok(*i as u64),
                Some(v) => Err(bad(format!("{k} = {v:?}: expected a non-negative integer"))),
            }
        };
        let get_s = |t: &BTreeMap<String, Value>, k: &str| -> Result<Option<String>> {
            match t.get(k) {
                None => Ok(None),
                Some(Value::Str(s)) => Ok(Some(s.clone())),
                Some(Value::Int(i)) => Ok(Some(i.to_string())),
                Some(v) => Err(bad(format!("{k} = {v:?}: expected a string"))),
            }
        };
        let get_b = |t: &BTreeMap<String, Value>, k: &str| -> Result<bool> {
            match t.get(k) {
                None => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                Some(v) => Err(bad(format!("{k} = {v:?}: expected true or false"))),
            }
        };
        let mut q = BTreeMap::new();
        for k in ["cpus", "sockets", "threads", "nodes", "max_cpus"] {
            if let Some(v) = get_s(host, k)? {
                q.insert(k.to_string(), v);
            }
        }
        q.insert("domains".into(), "0".into());
        let mut h = HostSpec::from_query(&q)?;
        h.domains.clear();
        h.cpu_khz = get_u(host, "cpu_khz", h.cpu_khz as u64)? as u32;
        h.mem_mb_per_node = get_u(host, "mem_mb_per_node", h.mem_mb_per_node)?;
        let mut over = BTreeMap::new();
        for k in ["version", "offline", "delay_ms", "follow"] {
            if let Some(v) = get_s(host, k)? {
                over.insert(k.to_string(), v);
            }
        }
        h.apply_overrides(&over)?;
        for p in doc.arrays.get("pool").map(Vec::as_slice).unwrap_or(&[]) {
            let id = get_u(p, "id", 0)? as u32;
            let sched_name = get_s(p, "sched")?.unwrap_or_else(|| "credit2".into());
            let sched_id = match sched_name.as_str() {
                "credit" => sched::CREDIT,
                "credit2" => sched::CREDIT2,
                "arinc653" => sched::ARINC653,
                s => return Err(bad(format!("pool {id}: unknown scheduler {s:?}"))),
            };
            let cpus = match get_s(p, "cpus")? {
                Some(c) => parse_list(&c)?,
                None => vec![],
            };
            let name = get_s(p, "name")?.unwrap_or_else(|| format!("Pool-{id}"));
            h.pools.retain(|x| x.id != id);
            h.pools.push(PoolSpec {
                id,
                name,
                sched_id,
                cpus,
            });
        }
        for d in doc.arrays.get("domain").map(Vec::as_slice).unwrap_or(&[]) {
            let id = get_u(d, "id", h.domains.len() as u64)?;
            if id >= crate::abi::DOMID_FIRST_RESERVED as u64 {
                return Err(bad(format!("domain id {id} is reserved")));
            }
            let name = get_s(d, "name")?.unwrap_or_else(|| format!("guest-{id}"));
            let mut s = DomSpec::new(id as u16, &name, get_u(d, "vcpus", 1)? as u32);
            s.online = get_s(d, "online")?.map(|v| parse_list(&v)).transpose()?;
            s.hard = get_s(d, "hard")?.map(|v| parse_list(&v)).transpose()?;
            s.soft = get_s(d, "soft")?.map(|v| parse_list(&v)).transpose()?;
            s.pool = get_u(d, "pool", 0)? as u32;
            s.hvm = get_b(d, "hvm")?;
            s.paused = get_b(d, "paused")?;
            s.mem_mb = get_u(d, "mem_mb", 1024)?;
            if let Some(u) = get_s(d, "uuid")? {
                s.uuid = Some(parse_uuid(&u)?);
            }
            h.domains.push(s);
        }
        Ok(h)
    }
}

/// The text of a host file, refusing one larger than [`MAX_TOML_BYTES`].
fn read_capped(path: &std::path::Path) -> Result<String> {
    use std::io::Read;
    let p = path.display();
    let cannot = |e: std::io::Error| bad(format!("cannot read sim host file {p}: {e}"));
    let f = std::fs::File::open(path).map_err(cannot)?;
    let mut text = String::new();
    f.take(MAX_TOML_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(cannot)?;
    if text.len() as u64 > MAX_TOML_BYTES {
        return Err(bad(format!(
            "{p} is larger than {MAX_TOML_BYTES} bytes, the most a host file may be"
        )));
    }
    Ok(text)
}

fn bad(msg: String) -> Error {
    Error::new(ErrorKind::Other, format!("sim host: {msg}"))
}

/// `4.17` or `4.10.0`.
pub fn parse_release(v: &str) -> Result<(u32, u32, u32)> {
    let parts: Vec<&str> = v.split('.').collect();
    let n = |s: &str| {
        s.parse::<u32>()
            .map_err(|_| bad(format!("version {v:?}: expected 4.17 or 4.10.1")))
    };
    match parts.as_slice() {
        [a, b] => Ok((n(a)?, n(b)?, 0)),
        [a, b, c] => Ok((n(a)?, n(b)?, n(c)?)),
        _ => Err(bad(format!("version {v:?}: expected 4.17 or 4.10.1"))),
    }
}

/// A plain cpulist `0-3,8` (no `^`, no `all`): sim host files only.
pub fn parse_list(v: &str) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    for tok in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let n = |s: &str| {
            s.trim().parse::<u32>().map_err(|_| {
                Error::new(
                    ErrorKind::CpuListError,
                    format!("sim host: bad list item {tok:?} in {v:?}"),
                )
            })
        };
        match tok.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (n(a)?, n(b)?);
                if a > b {
                    return Err(Error::new(
                        ErrorKind::CpuListError,
                        format!("sim host: bad range {tok:?}"),
                    ));
                }
                out.extend(a..=b);
            }
            None => out.push(n(tok)?),
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn parse_uuid(s: &str) -> Result<[u8; 16]> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return Err(bad(format!("uuid {s:?}: expected 32 hex digits")));
    }
    let mut u = [0u8; 16];
    for (i, b) in u.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| bad(format!("uuid {s:?}: not hex")))?;
    }
    Ok(u)
}

/// A TOML value of the subset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// integer
    Int(i64),
    /// basic string
    Str(String),
    /// boolean
    Bool(bool),
}

/// Parsed TOML subset: `[table]`s and `[[array]]`s of tables with scalar keys.
#[derive(Debug, Default)]
pub struct TomlDoc {
    /// `[name]` tables
    pub tables: BTreeMap<String, BTreeMap<String, Value>>,
    /// `[[name]]` arrays of tables
    pub arrays: BTreeMap<String, Vec<BTreeMap<String, Value>>>,
}

/// Parse the TOML subset: comments, `[t]`, `[[a]]`, `key = 123 | "str" | true | false`.
pub fn parse_toml(text: &str) -> Result<TomlDoc> {
    enum Cur {
        Table(String),
        Array(String),
    }
    let mut doc = TomlDoc::default();
    let mut cur = Cur::Table(String::new());
    for (ln, raw) in text.lines().enumerate() {
        let err = |m: &str| bad(format!("TOML line {}: {m}: {raw:?}", ln + 1));
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
            let name = name.trim().to_string();
            doc.arrays
                .entry(name.clone())
                .or_default()
                .push(BTreeMap::new());
            cur = Cur::Array(name);
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim().to_string();
            doc.tables.entry(name.clone()).or_default();
            cur = Cur::Table(name);
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| err("expected key = value"))?;
        let k = k.trim().trim_matches('"').to_string();
        let v = v.trim();
        let val = if let Some(s) = v.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
            Value::Str(s.to_string())
        } else if v == "true" || v == "false" {
            Value::Bool(v == "true")
        } else {
            Value::Int(
                v.replace('_', "")
                    .parse::<i64>()
                    .map_err(|_| err("unsupported value"))?,
            )
        };
        let t = match &cur {
            Cur::Table(n) => doc.tables.entry(n.clone()).or_default(),
            Cur::Array(n) => doc
                .arrays
                .get_mut(n)
                .and_then(|a| a.last_mut())
                .expect("array exists"),
        };
        if t.insert(k.clone(), val).is_some() {
            return Err(err(&format!("duplicate key {k}")));
        }
    }
    Ok(doc)
}

fn strip_comment(line: &str) -> &str {
    let mut in_str = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => in_str = !in_str,
            '#' if !in_str => return &line[..i],
            _ => {}
        }
    }
    line
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
mod tests {
    use super::*;

    #[test]
    fn toml_subset() {
        let d = parse_toml(
            "# host\n[host]\ncpus = 8 # eight\nversion = \"4.18\"\n\n[[domain]]\nid = 1\nname = \"a#b\"\nhvm = true\n[[domain]]\nid = 2\n",
        )
        .unwrap();
        assert_eq!(d.tables["host"]["cpus"], Value::Int(8));
        assert_eq!(d.tables["host"]["version"], Value::Str("4.18".into()));
        assert_eq!(d.arrays["domain"].len(), 2);
        assert_eq!(d.arrays["domain"][0]["name"], Value::Str("a#b".into()));
        assert_eq!(d.arrays["domain"][0]["hvm"], Value::Bool(true));
        assert!(parse_toml("[host]\ncpus = eight\n").is_err());
        assert!(parse_toml("[host]\ncpus = 1\ncpus = 2\n").is_err());
        assert!(parse_toml("just words\n").is_err());
    }

    #[test]
    fn lists_and_releases() {
        assert_eq!(parse_list("0-3,8, 6").unwrap(), vec![0, 1, 2, 3, 6, 8]);
        assert_eq!(parse_list("3-1").unwrap_err().kind, ErrorKind::CpuListError);
        assert_eq!(parse_release("4.10.0").unwrap(), (4, 10, 0));
        assert_eq!(parse_release("4.18").unwrap(), (4, 18, 0));
        assert!(parse_release("four").is_err());
        assert_eq!(
            parse_uuid("00112233-4455-6677-8899-aabbccddeeff").unwrap()[15],
            0xff
        );
    }

    #[test]
    fn query_validation() {
        let q = |s: &[(&str, &str)]| {
            s.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let h = HostSpec::from_query(&q(&[
            ("cpus", "4096"),
            ("nodes", "4"),
            ("domains", "10"),
            ("vcpus", "8"),
        ]))
        .unwrap();
        assert_eq!(h.present(), 4096);
        assert_eq!(h.sockets * h.cores_per_socket * h.threads_per_core, 4096);
        assert_eq!(h.domains.len(), 11);
        assert!(HostSpec::from_query(&q(&[("cpus", "7"), ("threads", "2")])).is_err());
        assert!(HostSpec::from_query(&q(&[("bogus", "1")])).is_err());
        assert!(HostSpec::from_query(&q(&[("cpus", "x")])).is_err());
        let h = HostSpec::from_query(&q(&[("follow", "never"), ("version", "4.10.0")])).unwrap();
        assert_eq!(h.follow, Follow::Never);
        assert_eq!(h.release, (4, 10, 0));
    }
}
