//! Simulated hosts described in TOML (`sim:///path/host.toml`).
//!
//! The file is parsed by the `toml` crate, a well-kept parser of the whole language
//! (with nesting limits of its own), rather than by a subset parser of ours; this module
//! only maps its tables onto a [`HostSpec`]. Every key is checked: an unknown one is an
//! error naming it and the keys its table takes, and every value is checked against its
//! type and range before it is used (see docs/simulator.md for the keys).
#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice
)]

use super::spec::{
    bad, parse_list, parse_release, parse_uuid, DomSpec, Follow, GuestKind, HostSpec, PoolSpec,
    MAX_CPUS, MAX_DELAY_MS, MAX_DOMAINS, MAX_LIST_IDS, MAX_MEM_MB, MAX_POOLS, MAX_VCPUS,
};
use crate::abi::sched;
use crate::error::Result;
use std::collections::BTreeMap;
use std::time::Duration;
use toml::{Table, Value};

const HOST_KEYS: [&str; 11] = [
    "cpus",
    "sockets",
    "threads",
    "nodes",
    "max_cpus",
    "cpu_khz",
    "mem_mb_per_node",
    "version",
    "offline",
    "delay_ms",
    "follow",
];
const POOL_KEYS: [&str; 4] = ["id", "name", "sched", "cpus"];
const DOMAIN_KEYS: [&str; 14] = [
    "id",
    "name",
    "uuid",
    "vcpus",
    "online",
    "pool",
    "hard",
    "soft",
    "type",
    "hvm",
    "libxl_record",
    "device_model",
    "paused",
    "mem_mb",
];

/// Where in the file a value is, for messages: `[host] cpus`, `[[domain]] #2 vcpus`.
struct At<'a> {
    table: &'a str,
    key: &'a str,
}

impl std::fmt::Display for At<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.table, self.key)
    }
}

fn check_keys(t: &Table, known: &[&str], table: &str) -> Result<()> {
    match t.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(bad(format!(
            "{table}: unknown key {k:?}; the keys are {}",
            known.join(", ")
        ))),
        None => Ok(()),
    }
}

/// An integer `0..=max`.
fn uint(t: &Table, table: &str, key: &str, default: u64, max: u64) -> Result<u64> {
    let at = At { table, key };
    match t.get(key) {
        None => Ok(default),
        Some(Value::Integer(i)) => u64::try_from(*i)
            .ok()
            .filter(|&n| n <= max)
            .ok_or_else(|| bad(format!("{at} = {i}: expected a number from 0 to {max}"))),
        Some(v) => Err(bad(format!(
            "{at} = {}: expected a number from 0 to {max}",
            shown(v)
        ))),
    }
}

fn uint32(t: &Table, table: &str, key: &str, default: u32, max: u32) -> Result<u32> {
    let n = uint(t, table, key, u64::from(default), u64::from(max))?;
    Ok(u32::try_from(n).unwrap_or(max))
}

fn string(t: &Table, table: &str, key: &str) -> Result<Option<String>> {
    match t.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(bad(format!(
            "{} = {}: expected a string",
            At { table, key },
            shown(v)
        ))),
    }
}

/// `type = "pv" | "pvh" | "hvm"`, or the older `hvm = true` (an alias of type = "hvm").
fn guest_kind(t: &Table, table: &str) -> Result<GuestKind> {
    let hvm = boolean(t, table, "hvm")?;
    match string(t, table, "type")? {
        None if hvm => Ok(GuestKind::Hvm),
        None => Ok(GuestKind::Pv),
        Some(name) => match GuestKind::from_name(&name) {
            Some(GuestKind::Hvm) => Ok(GuestKind::Hvm),
            Some(kind) if !hvm => Ok(kind),
            Some(_) => Err(bad(format!(
                "{table}: type = {name:?} contradicts hvm = true"
            ))),
            None => Err(bad(format!(
                "{table} type = {name:?}: expected \"pv\", \"pvh\" or \"hvm\""
            ))),
        },
    }
}

fn boolean(t: &Table, table: &str, key: &str) -> Result<bool> {
    match t.get(key) {
        None => Ok(false),
        Some(Value::Boolean(b)) => Ok(*b),
        Some(v) => Err(bad(format!(
            "{} = {}: expected true or false",
            At { table, key },
            shown(v)
        ))),
    }
}

/// A list of ids below `limit`: a cpulist string (`"0-3,8"`) or a single number; `budget`
/// is what the whole file may still list ([`MAX_LIST_IDS`]).
fn list(
    t: &Table,
    table: &str,
    key: &str,
    limit: u32,
    budget: &mut u64,
) -> Result<Option<Vec<u32>>> {
    let what = format!("{table} {key}");
    match t.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => parse_list(s, limit, &what, budget).map(Some),
        Some(Value::Integer(i)) => parse_list(&i.to_string(), limit, &what, budget).map(Some),
        Some(v) => Err(bad(format!(
            "{what} = {}: expected a list such as \"0-3,8\"",
            shown(v)
        ))),
    }
}

/// A value as messages show it, at most 60 characters of it.
fn shown(v: &Value) -> String {
    let s = match v {
        Value::String(s) => format!("{s:?}"),
        Value::Integer(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Boolean(b) => b.to_string(),
        Value::Datetime(d) => d.to_string(),
        Value::Array(a) => format!("an array of {}", a.len()),
        Value::Table(_) => "a table".to_string(),
    };
    if s.chars().count() > 60 {
        let cut: String = s.chars().take(60).collect();
        format!("{cut}…")
    } else {
        s
    }
}

/// The tables of an array of tables (`[[pool]]`), at most `max` of them.
fn tables<'a>(doc: &'a Table, name: &str, max: usize) -> Result<Vec<&'a Table>> {
    match doc.get(name) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) if items.len() <= max => items
            .iter()
            .map(|v| match v {
                Value::Table(t) => Ok(t),
                other => Err(bad(format!(
                    "[[{name}]]: expected tables, found {}",
                    shown(other)
                ))),
            })
            .collect(),
        Some(Value::Array(items)) => Err(bad(format!(
            "{} [[{name}]] entries: at most {max}",
            items.len()
        ))),
        Some(other) => Err(bad(format!(
            "{name} = {}: expected [[{name}]] tables",
            shown(other)
        ))),
    }
}

impl HostSpec {
    /// Parse a host from TOML (see docs/simulator.md): `[host]`, `[[pool]]`, `[[domain]]`.
    pub fn from_toml(text: &str) -> Result<Self> {
        let doc: Table = text.parse().map_err(|e: toml::de::Error| {
            let msg: String = e.to_string().chars().take(400).collect();
            bad(format!("not valid TOML: {}", msg.trim()))
        })?;
        check_keys(&doc, &["host", "pool", "domain"], "the file")?;
        let empty = Table::new();
        let host = match doc.get("host") {
            None => &empty,
            Some(Value::Table(t)) => t,
            Some(v) => return Err(bad(format!("host = {}: expected [host]", shown(v)))),
        };
        check_keys(host, &HOST_KEYS, "[host]")?;
        let h = "[host]";
        let mut q = BTreeMap::new();
        for k in ["cpus", "sockets", "threads", "nodes", "max_cpus"] {
            if host.contains_key(k) {
                q.insert(
                    k.to_string(),
                    uint(host, h, k, 0, u64::from(MAX_CPUS))?.to_string(),
                );
            }
        }
        q.insert("domains".into(), "0".into());
        let mut spec = HostSpec::from_query(&q)?;
        spec.domains.clear();
        spec.cpu_khz = uint32(host, h, "cpu_khz", spec.cpu_khz, u32::MAX)?;
        spec.mem_mb_per_node = uint(host, h, "mem_mb_per_node", spec.mem_mb_per_node, MAX_MEM_MB)?;
        if let Some(v) = string(host, h, "version")? {
            spec.release = parse_release(&v)?;
        }
        let budget = &mut MAX_LIST_IDS.clone();
        if let Some(o) = list(host, h, "offline", spec.present().unwrap_or(0), budget)? {
            spec.offline = o;
        }
        if host.contains_key("delay_ms") {
            let ms = uint(host, h, "delay_ms", 0, MAX_DELAY_MS)?;
            spec.follow = Follow::After(Duration::from_millis(ms));
        }
        if let Some(v) = string(host, h, "follow")? {
            match v.as_str() {
                "never" => spec.follow = Follow::Never,
                "yes" | "always" => {}
                _ => return Err(bad(format!("[host] follow = {v:?}: expected \"never\""))),
            }
        }
        let nr = spec.nr_cpu_ids;
        for p in tables(&doc, "pool", MAX_POOLS)? {
            check_keys(p, &POOL_KEYS, "[[pool]]")?;
            let id = uint32(p, "[[pool]]", "id", 0, u32::MAX)?;
            let table = format!("[[pool]] {id}");
            let sched_name = string(p, &table, "sched")?.unwrap_or_else(|| "credit2".into());
            let sched_id = match sched_name.as_str() {
                "credit" => sched::CREDIT,
                "credit2" => sched::CREDIT2,
                "arinc653" => sched::ARINC653,
                s => {
                    return Err(bad(format!(
                        "{table}: unknown scheduler {s:?} (credit, credit2, arinc653)"
                    )))
                }
            };
            let cpus = list(p, &table, "cpus", nr, budget)?.unwrap_or_default();
            let name = string(p, &table, "name")?.unwrap_or_else(|| format!("Pool-{id}"));
            spec.pools.retain(|x| x.id != id);
            spec.pools.push(PoolSpec {
                id,
                name,
                sched_id,
                cpus,
            });
        }
        let domains = tables(&doc, "domain", MAX_DOMAINS as usize)?;
        for (i, d) in domains.into_iter().enumerate() {
            check_keys(d, &DOMAIN_KEYS, "[[domain]]")?;
            let next = u64::try_from(i).unwrap_or(u64::MAX);
            let id = uint(
                d,
                "[[domain]]",
                "id",
                next,
                u64::from(MAX_DOMAINS).saturating_sub(1),
            )?;
            // id < MAX_DOMAINS = DOMID_FIRST_RESERVED, which fits a u16
            let id = u16::try_from(id).unwrap_or(u16::MAX);
            let table = format!("[[domain]] {id}");
            let name = string(d, &table, "name")?.unwrap_or_else(|| format!("guest-{id}"));
            let vcpus = uint32(d, &table, "vcpus", 1, MAX_VCPUS)?;
            let mut s = DomSpec::new(id, &name, vcpus);
            s.online = list(d, &table, "online", vcpus, budget)?;
            s.hard = list(d, &table, "hard", nr, budget)?;
            s.soft = list(d, &table, "soft", nr, budget)?;
            s.pool = uint32(d, &table, "pool", 0, u32::MAX)?;
            s.guest = guest_kind(d, &table)?;
            s.type_record = d.get("libxl_record").is_none() || boolean(d, &table, "libxl_record")?;
            if d.contains_key("device_model") {
                s.device_model = Some(boolean(d, &table, "device_model")?);
            }
            s.paused = boolean(d, &table, "paused")?;
            s.mem_mb = uint(d, &table, "mem_mb", 1024, MAX_MEM_MB)?;
            if let Some(u) = string(d, &table, "uuid")? {
                s.uuid = Some(parse_uuid(&u)?);
            }
            spec.domains.push(s);
        }
        spec.validate()?;
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_file() {
        let h = HostSpec::from_toml(
            "# host\n[host]\ncpus = 8 # eight\nversion = \"4.18\"\noffline = \"6-7\"\n\n\
             [[pool]]\nid = 1\nname = \"rt\"\nsched = \"credit\"\ncpus = \"4-5\"\n\n\
             [[domain]]\nid = 1\nname = \"a#b\"\nhvm = true\nvcpus = 3\nonline = \"0-1\"\n\
             [[domain]]\nid = 2\nuuid = \"00112233-4455-6677-8899-aabbccddeeff\"\n",
        )
        .unwrap();
        assert_eq!((h.present(), h.release), (Some(8), (4, 18, 0)));
        assert_eq!(h.offline, vec![6, 7]);
        assert_eq!(h.domains.len(), 2);
        assert_eq!(h.domains[0].name, "a#b");
        assert_eq!(h.domains[0].guest, GuestKind::Hvm);
        assert_eq!(h.domains[0].online, Some(vec![0, 1]));
        assert_eq!(h.domains[1].uuid.unwrap()[15], 0xff);
    }

    #[test]
    fn every_mistake_is_named() {
        for (text, needle) in [
            ("[host]\ncpus = eight\n", "not valid TOML"),
            ("[host]\ncpus = 1\ncpus = 2\n", "not valid TOML"),
            ("just words\n", "not valid TOML"),
            ("[host]\ncpu = 8\n", "unknown key \"cpu\""),
            ("[hosts]\n", "unknown key \"hosts\""),
            ("[[domain]]\nvcpu = 2\n", "unknown key \"vcpu\""),
            ("[host]\ncpus = -8\n", "from 0 to"),
            ("[host]\ncpus = 4294967360\n", "from 0 to"),
            ("[host]\nsockets = 65536\nthreads = 65536\n", "is not a host"),
            ("[[domain]]\nvcpus = 100000\n", "from 0 to 8192"),
            ("[[domain]]\nonline = \"0-4294967295\"\n", "valid ones are 0"),
            ("[[domain]]\nhard = \"0-4294967295\"\n", "valid ones are 0-63"),
            ("[[pool]]\nid = 1\ncpus = \"0-99999999\"\n", "valid ones are 0-63"),
            ("[[domain]]\nuuid = \"é0112233-4455-6677-8899-aabbccddeeff\"\n", "not hex"),
            ("[[domain]]\nvcpus = \"2\"\n", "expected a number"),
            ("[[domain]]\nhvm = 1\n", "true or false"),
            ("[[domain]]\ntype = \"pvm\"\n", "expected \"pv\", \"pvh\" or \"hvm\""),
            ("[[domain]]\ntype = \"pvh\"\nhvm = true\n", "contradicts"),
            ("domain = 3\n", "expected [[domain]]"),
            (
                "[host]\ncpus = 65536\n[[domain]]\nvcpus = 8192\n[[domain]]\nid = 1\nvcpus = 8192\n\
                 [[domain]]\nid = 2\nvcpus = 8192\n",
                "MiB of maps",
            ),
        ] {
            let e = HostSpec::from_toml(text).unwrap_err();
            assert!(e.message.contains(needle), "{text:?}: {}", e.message);
        }
        let deep = format!("x = {}1{}", "[".repeat(100_000), "]".repeat(100_000));
        let e = HostSpec::from_toml(&deep).unwrap_err();
        assert!(
            e.message.len() < 600,
            "the message is capped: {}",
            e.message.len()
        );
    }
}
