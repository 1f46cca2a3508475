//! Maps read from outside: the cpulist grammar and the little-endian byte form.
//!
//! Both take input from users (cpulists from the command line and files, bytes from callers
//! and from Xen), so this module may not panic on any input: arithmetic is checked, nothing
//! is indexed or sliced unchecked, and the lints below hold it to that.
#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice
)]

use super::{last_word_mask, words_for, CpuMap, CpuMapError, MAX_WIDTH, WHITESPACE, WORD_BITS};

/// What the topology terms of a cpulist read: per CPU its NUMA node, socket and core
/// (`u32::MAX` where Xen does not say), and the cpupools by name. A term whose facts are
/// missing is an error naming what it needs.
#[derive(Debug, Default, Clone, Copy)]
pub struct Terms<'a> {
    /// node of each CPU (`node:N`, `nodes:A-B`)
    pub nodes: Option<&'a [u32]>,
    /// socket of each CPU (`socket:N`, `sockets:A-B`, `siblings:N`)
    pub sockets: Option<&'a [u32]>,
    /// core of each CPU, within its socket (`siblings:N`)
    pub cores: Option<&'a [u32]>,
    /// the cpupools: name and CPUs (`pool:NAME`)
    pub pools: Option<&'a [(String, CpuMap)]>,
}

/// The CPUs of a term, set in a map of `width`.
type Chosen = Result<CpuMap, String>;

/// CPUs whose entry in `per_cpu` (node or socket) lies in `lo..=hi`.
fn by_unit(per_cpu: &[u32], lo: u64, hi: u64, width: usize, unit: &str) -> Chosen {
    let mut m = CpuMap::new(width).map_err(|e| e.to_string())?;
    let mut any = false;
    for (cpu, &u) in per_cpu.iter().enumerate().take(width) {
        if u64::from(u) >= lo && u64::from(u) <= hi {
            any = true;
            m.set_range(cpu, cpu, true);
        }
    }
    if any {
        Ok(m)
    } else {
        Err(format!(
            "no CPU is in that {unit} ({unit}s with CPUs: {})",
            known_nodes(per_cpu)
        ))
    }
}

/// CPU `n` and the CPUs on the same core of the same socket (its hyper-thread siblings).
fn siblings(sockets: &[u32], cores: &[u32], n: u64, width: usize) -> Chosen {
    let at = usize::try_from(n).ok().filter(|&c| c < width);
    let Some(cpu) = at else {
        return Err(format!("CPU {n} is out of range"));
    };
    let (Some(&s), Some(&c)) = (sockets.get(cpu), cores.get(cpu)) else {
        return Err(format!("Xen gives no core for CPU {n}"));
    };
    if s == u32::MAX || c == u32::MAX {
        return Err(format!("Xen gives no core for CPU {n} (is it offline?)"));
    }
    let mut m = CpuMap::new(width).map_err(|e| e.to_string())?;
    let same = sockets.iter().zip(cores).take(width).enumerate();
    for (other, (&so, &co)) in same {
        if so == s && co == c {
            m.set_range(other, other, true);
        }
    }
    Ok(m)
}

/// The CPUs of the cpupool called `name`.
fn pool(pools: &[(String, CpuMap)], name: &str, width: usize) -> Chosen {
    match pools.iter().find(|(n, _)| n == name) {
        Some((_, cpus)) => cpus.resized(width).map_err(|e| e.to_string()),
        None => {
            let known: Vec<&str> = pools.iter().map(|(n, _)| n.as_str()).collect();
            Err(format!(
                "no cpupool is called that (cpupools: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        }
    }
}

impl CpuMap {
    /// Unpack the little-endian byte form. `width` defaults to `8 * data.len()`; a wider map
    /// is zero-extended, a narrower one must not have a bit set at or above `width`.
    ///
    /// Whole words are copied straight (this runs twice per vCPU in every bulk read), then
    /// one check finds any bit beyond the width.
    pub fn from_bytes(data: &[u8], width: Option<usize>) -> Result<Self, CpuMapError> {
        let width = match width {
            Some(w) => w,
            None => data.len().saturating_mul(8),
        };
        if width == 0 || width > MAX_WIDTH {
            return Err(CpuMapError::BadWidth { width });
        }
        let nw = words_for(width);
        let mut words = vec![0u64; nw];
        let mut chunks = data.chunks(8);
        for (w, c) in words.iter_mut().zip(chunks.by_ref()) {
            *w = match <[u8; 8]>::try_from(c) {
                Ok(whole) => u64::from_le_bytes(whole),
                Err(_) => {
                    // the partial last word of the input
                    let mut buf = [0u8; 8];
                    buf.iter_mut().zip(c).for_each(|(d, s)| *d = *s);
                    u64::from_le_bytes(buf)
                }
            };
        }
        // Bits above the width: in the last word, or anywhere in bytes past the map.
        let last = words.last().copied().unwrap_or(0);
        let extra_last = last & !last_word_mask(width);
        if extra_last != 0 {
            let cpu = (nw.saturating_sub(1))
                .saturating_mul(WORD_BITS)
                .saturating_add(extra_last.trailing_zeros() as usize);
            return Err(CpuMapError::CpuOutOfRange {
                cpu: cpu as u64,
                width,
            });
        }
        let past = chunks.flatten().enumerate().find(|&(_, &b)| b != 0);
        if let Some((i, b)) = past {
            let cpu = nw
                .saturating_mul(8)
                .saturating_add(i)
                .saturating_mul(8)
                .saturating_add(b.trailing_zeros() as usize);
            return Err(CpuMapError::CpuOutOfRange {
                cpu: cpu as u64,
                width,
            });
        }
        Ok(CpuMap { width, words })
    }

    /// Parse a cpulist (the union of `xl`'s and `virsh`'s grammars) into a map of `width`.
    ///
    /// Comma-separated terms, applied left to right to an initially empty map:
    /// `N`, `A-B` (inclusive) and `all` (or virsh's `r`, reset to all) add CPUs;
    /// `^N` and `^A-B` remove them; `node:N`, `nodes:A-B` add every CPU of those NUMA
    /// nodes and `^node:N` removes them (`nodes[cpu]` gives each CPU's node).
    /// `^all` is rejected (as `xl` rejects it). [`WHITESPACE`] around terms is ignored.
    /// An exclusion-only list gives an empty map: whether that is acceptable is the caller's call.
    /// [`CpuMap::parse_terms`] reads the other topology terms too.
    ///
    /// ```
    /// use xenvcpu_core::cpumap::CpuMap;
    ///
    /// let m = CpuMap::parse("0-7,^2, 12", 16, None)?;
    /// assert_eq!(m.to_cpulist(), "0-1,3-7,12");
    /// let nodes = [0, 0, 1, 1];
    /// assert_eq!(CpuMap::parse("nodes:1", 4, Some(&nodes))?.to_cpulist(), "2-3");
    /// let e = CpuMap::parse("0,9", 8, None).unwrap_err();
    /// assert!(e.to_string().contains("\"9\" at column 3"));
    /// # Ok::<(), xenvcpu_core::cpumap::CpuMapError>(())
    /// ```
    pub fn parse(text: &str, width: usize, nodes: Option<&[u32]>) -> Result<Self, CpuMapError> {
        let terms = Terms {
            nodes,
            ..Terms::default()
        };
        Self::parse_terms(text, width, &terms)
    }

    /// [`CpuMap::parse`] with every topology term: `node:N`/`nodes:A-B`, `socket:N`/
    /// `sockets:A-B` (the CPUs of those sockets), `siblings:N` (CPU N and its hyper-thread
    /// siblings: the CPUs on the same core) and `pool:NAME` (the cpupool's CPUs); `^`
    /// removes any of them.
    ///
    /// ```
    /// use xenvcpu_core::cpumap::{CpuMap, Terms};
    ///
    /// let sockets = [0, 0, 0, 0, 1, 1, 1, 1];
    /// let cores = [0, 0, 1, 1, 0, 0, 1, 1];
    /// let pools = [("rt".to_string(), CpuMap::parse("6-7", 8, None)?)];
    /// let t = Terms { sockets: Some(&sockets), cores: Some(&cores), pools: Some(&pools), nodes: None };
    /// assert_eq!(CpuMap::parse_terms("socket:1,^pool:rt", 8, &t)?.to_cpulist(), "4-5");
    /// assert_eq!(CpuMap::parse_terms("siblings:3", 8, &t)?.to_cpulist(), "2-3");
    /// # Ok::<(), xenvcpu_core::cpumap::CpuMapError>(())
    /// ```
    pub fn parse_terms(text: &str, width: usize, terms: &Terms<'_>) -> Result<Self, CpuMapError> {
        let mut m = Self::new(width)?;
        // A wholly blank text is a list with no terms: the empty map.
        if text.trim_matches(&WHITESPACE[..]).is_empty() {
            return Ok(m);
        }
        let mut before = 0usize; // characters of the text before this term
        for raw in text.split(',') {
            let lead = raw.chars().take_while(|c| WHITESPACE.contains(c)).count();
            let tok = raw.trim_matches(&WHITESPACE[..]);
            let column = before.saturating_add(lead).saturating_add(1);
            before = before.saturating_add(raw.chars().count()).saturating_add(1);
            let err = |shown: &str, reason: &str| CpuMapError::Parse {
                text: text.to_string(),
                token: shown.to_string(),
                column,
                reason: reason.to_string(),
                width,
            };
            if tok.is_empty() {
                return Err(err(raw, "empty term"));
            }
            let (neg, body) = match tok.strip_prefix('^') {
                Some(rest) => (true, rest),
                None => (false, tok),
            };
            if body == "all" || body == "r" {
                if neg {
                    return Err(err(
                        tok,
                        "'^all' is not allowed (it would exclude every CPU)",
                    ));
                }
                m = Self::full(width)?;
            } else if let Some(chosen) = topology_term(body, width, terms) {
                let chosen = chosen.map_err(|r| err(tok, &r))?;
                m = if neg {
                    m.difference(&chosen)?
                } else {
                    m.union(&chosen)?
                };
            } else {
                let (lo, hi) = parse_range(body).map_err(|r| err(tok, r))?;
                let last = u64::try_from(width).unwrap_or(u64::MAX);
                if hi >= last {
                    let bad = if lo >= last { lo } else { hi };
                    return Err(err(tok, &format!("CPU {bad} is out of range")));
                }
                // both below the width, which fits a usize
                let (lo, hi) = (
                    usize::try_from(lo).unwrap_or(0),
                    usize::try_from(hi).unwrap_or(0),
                );
                m.set_range(lo, hi, !neg);
            }
        }
        Ok(m)
    }
}

/// The CPUs a topology term names, or None when `body` is no topology term. The facts a
/// term needs are looked for before its number is read.
fn topology_term(body: &str, width: usize, t: &Terms<'_>) -> Option<Chosen> {
    let need = |what: &str| Err(format!("{what} terms need the host topology"));
    let range_of = |spec: &str, per_cpu: Option<&[u32]>, unit: &str| match per_cpu {
        None => need(unit),
        Some(per_cpu) => match parse_range(spec) {
            Err(r) => Err(r.to_string()),
            Ok((lo, hi)) => by_unit(per_cpu, lo, hi, width, unit),
        },
    };
    if let Some(spec) = body
        .strip_prefix("nodes:")
        .or_else(|| body.strip_prefix("node:"))
    {
        return Some(range_of(spec, t.nodes, "node"));
    }
    if let Some(spec) = body
        .strip_prefix("sockets:")
        .or_else(|| body.strip_prefix("socket:"))
    {
        return Some(range_of(spec, t.sockets, "socket"));
    }
    if let Some(spec) = body.strip_prefix("siblings:") {
        return Some(match t.sockets.zip(t.cores) {
            None => need("siblings"),
            Some((sockets, cores)) => match parse_num(spec) {
                Err(r) => Err(r.to_string()),
                Ok(n) => siblings(sockets, cores, n, width),
            },
        });
    }
    if let Some(name) = body.strip_prefix("pool:") {
        return Some(match t.pools {
            None => Err("pool terms need the host's cpupools".to_string()),
            Some(pools) => pool(pools, name, width),
        });
    }
    None
}

/// Node numbers that own at least one CPU, as a cpulist.
fn known_nodes(nodes: &[u32]) -> String {
    let max = nodes.iter().filter(|&&n| n != u32::MAX).max().copied();
    match max {
        None => "none".to_string(),
        Some(max) => CpuMap::from_cpus(
            nodes
                .iter()
                .filter(|&&n| n != u32::MAX)
                .map(|&n| u64::from(n)),
            (max as usize).saturating_add(1),
        )
        .map(|m| m.to_cpulist())
        .unwrap_or_default(),
    }
}

/// `N` or `A-B` with `A <= B`, decimal digits only.
fn parse_range(s: &str) -> Result<(u64, u64), &'static str> {
    match s.split_once('-') {
        None => {
            let n = parse_num(s)?;
            Ok((n, n))
        }
        Some(("", _)) => Err("a range needs a start (negative CPUs do not exist)"),
        Some((_, "")) => Err("a range needs an end"),
        Some((a, b)) => {
            if b.contains('-') {
                return Err("a range has one '-'");
            }
            let (lo, hi) = (parse_num(a)?, parse_num(b)?);
            if lo > hi {
                return Err("a range must go upwards");
            }
            Ok((lo, hi))
        }
    }
}

fn parse_num(s: &str) -> Result<u64, &'static str> {
    if s.is_empty() {
        return Err("a CPU number is missing");
    }
    let mut n: u64 = 0;
    for b in s.bytes() {
        if !b.is_ascii_digit() {
            return Err("not a CPU number");
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b.wrapping_sub(b'0'))))
            .ok_or("CPU number too large")?;
    }
    Ok(n)
}
