//! `CpuMap`: a set of physical CPUs of a fixed width.
//!
//! One type is used everywhere a set of CPUs appears (host CPUs, hard and soft affinity,
//! cpupools). Its byte form is the one of the 2006 proposal and of Xen's `xenctl_bitmap`
//! (xen-interfaces.md §3.6): CPU `n` is bit `n % 8` of byte `n / 8`, the lowest CPU in the least
//! significant bit. Internally the bits live in little-endian `u64` words, so packing to and
//! from bytes is a copy, not a loop over bits.
//!
//! The text form is the cpulist grammar of `xl` and `virsh` (see [`CpuMap::parse`]); the
//! canonical output ([`CpuMap::to_cpulist`]) is ascending, with runs of two or more CPUs
//! written `a-b`.

use std::fmt;

mod parse;

pub use parse::Terms;

/// The widest map accepted (4 Mi CPUs, 512 KiB of bits): far above any Xen host
/// (`NR_CPUS` tops out in the thousands) but small enough that a typo cannot exhaust memory.
pub const MAX_WIDTH: usize = 1 << 22;

/// The longest byte form [`CpuMap::to_bytes`] makes: the bytes of a [`MAX_WIDTH`] map.
pub const MAX_MAPLEN: usize = MAX_WIDTH / 8;

/// What the cpulist grammar ignores around a term: the ASCII whitespace. The grammar's own
/// definition (the pure-Python fallback, `python/xenvcpu/_pycpumap.py`, uses the same set).
pub const WHITESPACE: [char; 6] = [' ', '\t', '\n', '\r', '\x0b', '\x0c'];

const WORD_BITS: usize = 64;

/// Why a map could not be built, parsed or converted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CpuMapError {
    /// A width of 0 or above [`MAX_WIDTH`].
    BadWidth {
        /// the width asked for
        width: usize,
    },
    /// A CPU number at or above the width.
    CpuOutOfRange {
        /// the CPU
        cpu: u64,
        /// the map's width
        width: usize,
    },
    /// A negative CPU number (only reachable from bindings that accept signed input).
    NegativeCpu {
        /// the CPU
        cpu: i64,
        /// the map's width
        width: usize,
    },
    /// A malformed cpulist term.
    Parse {
        /// the whole cpulist
        text: String,
        /// the term at fault
        token: String,
        /// where the term starts: 1-based, counted in characters
        column: usize,
        /// what is wrong with it
        reason: String,
        /// the map's width
        width: usize,
    },
    /// `to_bytes(maplen)` with a length above [`MAX_MAPLEN`].
    MaplenTooLong {
        /// the length asked for
        maplen: usize,
    },
    /// `to_bytes(maplen)` with a length too short for the highest set CPU.
    MaplenTooShort {
        /// the length asked for
        maplen: usize,
        /// the length the highest set CPU needs
        needed: usize,
        /// the highest set CPU
        cpu: usize,
    },
    /// A binary operation between maps of different widths.
    WidthMismatch {
        /// this map's width
        left: usize,
        /// the other map's width
        right: usize,
    },
}

/// `0-7`, or `0` for a width of 1: the valid range of CPU numbers.
pub fn valid_range(width: usize) -> String {
    match width {
        0 => "none".to_string(),
        1 => "0".to_string(),
        w => format!("0-{}", w - 1),
    }
}

impl fmt::Display for CpuMapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CpuMapError::BadWidth { width } => write!(
                f,
                "invalid CPU map width {width}: the width must be between 1 and {MAX_WIDTH}"
            ),
            CpuMapError::CpuOutOfRange { cpu, width } => write!(
                f,
                "CPU {cpu} is out of range: valid CPUs are {} (width {width})",
                valid_range(*width)
            ),
            CpuMapError::NegativeCpu { cpu, width } => write!(
                f,
                "CPU {cpu} is negative: valid CPUs are {} (width {width})",
                valid_range(*width)
            ),
            CpuMapError::Parse {
                text,
                token,
                column,
                reason,
                width,
            } => write!(
                f,
                "invalid cpulist {text:?}: {token:?} at column {column}: {reason}; valid CPUs are {} (width {width})",
                valid_range(*width)
            ),
            CpuMapError::MaplenTooLong { maplen } => write!(
                f,
                "maplen {maplen} is too long: a map has at most {MAX_MAPLEN} bytes ({MAX_WIDTH} CPUs)"
            ),
            CpuMapError::MaplenTooShort { maplen, needed, cpu } => write!(
                f,
                "maplen {maplen} is too short: CPU {cpu} is set and needs at least {needed} bytes"
            ),
            CpuMapError::WidthMismatch { left, right } => write!(
                f,
                "CPU maps of different widths ({left} and {right}) cannot be combined"
            ),
        }
    }
}

impl std::error::Error for CpuMapError {}

/// A set of CPUs `0..width`. Invariant: no bit at or above `width` is set.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CpuMap {
    width: usize,
    words: Vec<u64>,
}

fn words_for(width: usize) -> usize {
    width.div_ceil(WORD_BITS)
}

/// Mask of the valid bits of the last word of a map of `width` bits.
fn last_word_mask(width: usize) -> u64 {
    match width % WORD_BITS {
        0 => u64::MAX,
        r => (1u64 << r) - 1,
    }
}

impl CpuMap {
    /// An empty map of `width` CPUs.
    pub fn new(width: usize) -> Result<Self, CpuMapError> {
        if width == 0 || width > MAX_WIDTH {
            return Err(CpuMapError::BadWidth { width });
        }
        Ok(CpuMap {
            width,
            words: vec![0; words_for(width)],
        })
    }

    /// A map with every CPU `0..width` set.
    pub fn full(width: usize) -> Result<Self, CpuMapError> {
        let mut m = Self::new(width)?;
        m.words.fill(u64::MAX);
        m.trim();
        Ok(m)
    }

    /// A map of `width` CPUs with the given CPUs set.
    pub fn from_cpus<I: IntoIterator<Item = u64>>(
        cpus: I,
        width: usize,
    ) -> Result<Self, CpuMapError> {
        let mut m = Self::new(width)?;
        for cpu in cpus {
            m.insert(cpu)?;
        }
        Ok(m)
    }

    /// Store word `i` of a byte input, rejecting bits at or above the width.
    fn put_word(&mut self, i: usize, w: u64) -> Result<(), CpuMapError> {
        let n = self.words.len();
        let allowed = if i + 1 < n {
            u64::MAX
        } else if i + 1 == n {
            last_word_mask(self.width)
        } else {
            0
        };
        let extra = w & !allowed;
        if extra != 0 {
            let cpu = (i * WORD_BITS) as u64 + u64::from(extra.trailing_zeros());
            return Err(CpuMapError::CpuOutOfRange {
                cpu,
                width: self.width,
            });
        }
        self.words[i] = w;
        Ok(())
    }

    /// A map from one flag per CPU (libvirt-python's tuple-of-bools shape).
    pub fn from_bools<I: IntoIterator<Item = bool>>(bools: I) -> Result<Self, CpuMapError> {
        let mut words: Vec<u64> = Vec::new();
        let mut width = 0usize;
        let mut cur = 0u64;
        for b in bools {
            cur |= u64::from(b) << (width % WORD_BITS);
            width += 1;
            if width % WORD_BITS == 0 {
                words.push(cur);
                cur = 0;
            }
            if width > MAX_WIDTH {
                return Err(CpuMapError::BadWidth { width });
            }
        }
        if width % WORD_BITS != 0 {
            words.push(cur);
        }
        if width == 0 {
            return Err(CpuMapError::BadWidth { width });
        }
        Ok(CpuMap { width, words })
    }

    /// Build from raw words (bits at or above `width` are an error).
    pub fn from_words(words: &[u64], width: usize) -> Result<Self, CpuMapError> {
        let mut m = Self::new(width)?;
        for (i, &w) in words.iter().enumerate() {
            if w != 0 {
                m.put_word(i, w)?;
            }
        }
        Ok(m)
    }

    fn trim(&mut self) {
        let mask = last_word_mask(self.width);
        if let Some(last) = self.words.last_mut() {
            *last &= mask;
        }
    }

    /// Number of CPUs the map can hold.
    pub fn width(&self) -> usize {
        self.width
    }

    /// The bits as little-endian words (64 CPUs each).
    pub fn as_words(&self) -> &[u64] {
        &self.words
    }

    /// Number of set CPUs.
    pub fn count(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// True when no CPU is set.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// True when every CPU `0..width` is set.
    pub fn is_full(&self) -> bool {
        let n = self.words.len();
        self.words[..n - 1].iter().all(|&w| w == u64::MAX)
            && self.words[n - 1] == last_word_mask(self.width)
    }

    /// Whether `cpu` is set (false for CPUs outside the width).
    pub fn contains(&self, cpu: u64) -> bool {
        if cpu >= self.width as u64 {
            return false;
        }
        let cpu = cpu as usize;
        self.words[cpu / WORD_BITS] >> (cpu % WORD_BITS) & 1 == 1
    }

    fn check(&self, cpu: u64) -> Result<usize, CpuMapError> {
        if cpu >= self.width as u64 {
            Err(CpuMapError::CpuOutOfRange {
                cpu,
                width: self.width,
            })
        } else {
            Ok(cpu as usize)
        }
    }

    /// Set `cpu`.
    pub fn insert(&mut self, cpu: u64) -> Result<(), CpuMapError> {
        let c = self.check(cpu)?;
        self.words[c / WORD_BITS] |= 1u64 << (c % WORD_BITS);
        Ok(())
    }

    /// Clear `cpu`.
    pub fn remove(&mut self, cpu: u64) -> Result<(), CpuMapError> {
        let c = self.check(cpu)?;
        self.words[c / WORD_BITS] &= !(1u64 << (c % WORD_BITS));
        Ok(())
    }

    /// Set (`on`) or clear every CPU in `lo..=hi` (both checked by the caller).
    fn set_range(&mut self, lo: usize, hi: usize, on: bool) {
        let (lw, hw) = (lo / WORD_BITS, hi / WORD_BITS);
        for i in lw..=hw {
            let start = if i == lw { lo % WORD_BITS } else { 0 };
            let end = if i == hw {
                hi % WORD_BITS
            } else {
                WORD_BITS - 1
            };
            let mask = (u64::MAX >> (WORD_BITS - 1 - end)) & (u64::MAX << start);
            if on {
                self.words[i] |= mask;
            } else {
                self.words[i] &= !mask;
            }
        }
    }

    /// The set CPUs, ascending.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    None
                } else {
                    let b = w.trailing_zeros() as usize;
                    w &= w - 1;
                    Some(i * WORD_BITS + b)
                }
            })
        })
    }

    /// Maximal runs of consecutive set CPUs, as inclusive `(first, last)` pairs.
    pub fn runs(&self) -> Runs<'_> {
        Runs {
            words: &self.words,
            pos: 0,
        }
    }

    /// One flag per CPU, `width` of them.
    pub fn to_bools(&self) -> Vec<bool> {
        (0..self.width)
            .map(|c| self.words[c / WORD_BITS] >> (c % WORD_BITS) & 1 == 1)
            .collect()
    }

    /// Bytes needed to hold every CPU of the width: `ceil(width / 8)`.
    pub fn byte_len(&self) -> usize {
        self.width.div_ceil(8)
    }

    /// Pack to the little-endian byte form, `maplen` bytes long (default: `ceil(width/8)`).
    /// A longer `maplen` is zero-padded; a shorter one is an error if it would drop a set CPU.
    pub fn to_bytes(&self, maplen: Option<usize>) -> Result<Vec<u8>, CpuMapError> {
        let maplen = maplen.unwrap_or_else(|| self.byte_len());
        if maplen > MAX_MAPLEN {
            return Err(CpuMapError::MaplenTooLong { maplen });
        }
        let mut out = vec![0u8; maplen];
        self.write_bytes(&mut out)?;
        Ok(out)
    }

    /// Pack into `out` (its whole length is written: bytes past the map are zeroed).
    pub fn write_bytes(&self, out: &mut [u8]) -> Result<(), CpuMapError> {
        if let Some(highest) = self.highest() {
            if highest / 8 >= out.len() {
                return Err(CpuMapError::MaplenTooShort {
                    maplen: out.len(),
                    needed: highest / 8 + 1,
                    cpu: highest,
                });
            }
        }
        let mut chunks = out.chunks_mut(8);
        for (w, chunk) in self.words.iter().zip(chunks.by_ref()) {
            let bytes = w.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        for chunk in chunks {
            chunk.fill(0);
        }
        Ok(())
    }

    /// The highest set CPU, if any.
    pub fn highest(&self) -> Option<usize> {
        self.words
            .iter()
            .enumerate()
            .rev()
            .find(|(_, &w)| w != 0)
            .map(|(i, &w)| i * WORD_BITS + (WORD_BITS - 1 - w.leading_zeros() as usize))
    }

    /// The lowest set CPU, if any.
    pub fn lowest(&self) -> Option<usize> {
        self.words
            .iter()
            .enumerate()
            .find(|(_, &w)| w != 0)
            .map(|(i, &w)| i * WORD_BITS + w.trailing_zeros() as usize)
    }

    /// The same CPUs in a map of another width (CPUs at or above `width` are an error).
    pub fn resized(&self, width: usize) -> Result<Self, CpuMapError> {
        Self::from_words(&self.words, width)
    }

    fn zip_with(&self, other: &Self, f: impl Fn(u64, u64) -> u64) -> Result<Self, CpuMapError> {
        if self.width != other.width {
            return Err(CpuMapError::WidthMismatch {
                left: self.width,
                right: other.width,
            });
        }
        let words = self
            .words
            .iter()
            .zip(&other.words)
            .map(|(&a, &b)| f(a, b))
            .collect();
        let mut m = CpuMap {
            width: self.width,
            words,
        };
        m.trim();
        Ok(m)
    }

    /// CPUs in both maps.
    pub fn intersection(&self, other: &Self) -> Result<Self, CpuMapError> {
        self.zip_with(other, |a, b| a & b)
    }

    /// CPUs in either map.
    pub fn union(&self, other: &Self) -> Result<Self, CpuMapError> {
        self.zip_with(other, |a, b| a | b)
    }

    /// CPUs in `self` but not in `other`.
    pub fn difference(&self, other: &Self) -> Result<Self, CpuMapError> {
        self.zip_with(other, |a, b| a & !b)
    }

    /// CPUs in exactly one of the maps.
    pub fn symmetric_difference(&self, other: &Self) -> Result<Self, CpuMapError> {
        self.zip_with(other, |a, b| a ^ b)
    }

    /// Every CPU of the width that is not in `self`.
    pub fn complement(&self) -> Self {
        let mut m = CpuMap {
            width: self.width,
            words: self.words.iter().map(|w| !w).collect(),
        };
        m.trim();
        m
    }

    /// True when every CPU of `self` is in `other` (widths may differ).
    pub fn is_subset(&self, other: &Self) -> bool {
        self.words.iter().enumerate().all(|(i, &w)| {
            let o = other.words.get(i).copied().unwrap_or(0);
            w & !o == 0
        })
    }

    /// Canonical cpulist: ascending, runs of two or more as `a-b`, `""` when empty.
    pub fn to_cpulist(&self) -> String {
        let mut out = Vec::new();
        self.write_cpulist_bytes(&mut out);
        // Only ASCII digits, ',' and '-' were written.
        String::from_utf8(out).unwrap_or_default()
    }

    /// Append the canonical cpulist to `out` as ASCII bytes.
    ///
    /// The output is sized once (runs x widest run) and written by index: formatting
    /// thousands of short runs is dominated by per-byte bookkeeping otherwise.
    pub fn write_cpulist_bytes(&self, out: &mut Vec<u8>) {
        let widest = decimal_len(self.width - 1);
        let base = out.len();
        out.resize(base + self.run_count() * (2 * widest + 2), 0);
        let mut pos = base;
        for (lo, hi) in self.runs() {
            if pos != base {
                out[pos] = b',';
                pos += 1;
            }
            pos = put_decimal(out, pos, lo);
            if hi > lo {
                out[pos] = b'-';
                pos = put_decimal(out, pos + 1, hi);
            }
        }
        out.truncate(pos);
    }

    /// Number of maximal runs of set CPUs.
    pub fn run_count(&self) -> usize {
        let mut carry = 0u64;
        let mut n = 0usize;
        for &w in &self.words {
            n += (w & !((w << 1) | carry)).count_ones() as usize;
            carry = w >> 63;
        }
        n
    }
}

/// "00" to "99": two digits per division when formatting CPU numbers.
const DIGIT_PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

fn decimal_len(n: usize) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// Write `n` in decimal at `buf[pos..]`, returning the position after it.
fn put_decimal(buf: &mut [u8], pos: usize, n: usize) -> usize {
    let end = pos + decimal_len(n);
    let mut i = end;
    let mut n = n;
    while n >= 100 {
        let d = (n % 100) * 2;
        n /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&DIGIT_PAIRS[d..d + 2]);
    }
    if n >= 10 {
        buf[i - 2..i].copy_from_slice(&DIGIT_PAIRS[n * 2..n * 2 + 2]);
    } else {
        buf[i - 1] = b'0' + n as u8;
    }
    end
}

/// Iterator over maximal runs of set bits, see [`CpuMap::runs`].
pub struct Runs<'a> {
    words: &'a [u64],
    pos: usize,
}

impl Runs<'_> {
    /// Position of the next bit at or after `pos` whose value is `one`, or the end.
    fn seek(&self, pos: usize, one: bool) -> usize {
        let total = self.words.len() * WORD_BITS;
        let mut i = pos / WORD_BITS;
        if i >= self.words.len() {
            return total;
        }
        let flip = |w: u64| if one { w } else { !w };
        let mut w = flip(self.words[i]) & (u64::MAX << (pos % WORD_BITS));
        loop {
            if w != 0 {
                return i * WORD_BITS + w.trailing_zeros() as usize;
            }
            i += 1;
            if i == self.words.len() {
                return total;
            }
            w = flip(self.words[i]);
        }
    }
}

impl Iterator for Runs<'_> {
    type Item = (usize, usize);
    fn next(&mut self) -> Option<(usize, usize)> {
        let total = self.words.len() * WORD_BITS;
        let lo = self.seek(self.pos, true);
        if lo >= total {
            self.pos = total;
            return None;
        }
        // Bits above the width are always zero, so a run ends inside the width.
        let hi = self.seek(lo, false);
        self.pos = hi;
        Some((lo, hi - 1))
    }
}

impl fmt::Display for CpuMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_cpulist())
    }
}

impl fmt::Debug for CpuMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CpuMap(width={}, {:?})", self.width, self.to_cpulist())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const WIDTHS: [usize; 12] = [1, 7, 8, 9, 63, 64, 65, 255, 256, 257, 4096, 65536];

    fn set(cpus: &[u64], width: usize) -> CpuMap {
        CpuMap::from_cpus(cpus.iter().copied(), width).unwrap()
    }

    #[test]
    fn seed_byte_order() {
        // CPU0 = bit 0 of byte 0, CPU9 = bit 1 of byte 1 (xen-interfaces.md §3.6).
        let m = set(&[0, 9], 16);
        assert_eq!(m.to_bytes(None).unwrap(), vec![0b0000_0001, 0b0000_0010]);
        let m = CpuMap::from_bytes(&[0x80, 0x01], None).unwrap();
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![7, 8]);
        assert_eq!(m.width(), 16);
    }

    #[test]
    fn maplen_rules() {
        let m = set(&[3], 64);
        assert_eq!(m.to_bytes(Some(1)).unwrap(), vec![8]);
        assert_eq!(m.to_bytes(Some(3)).unwrap(), vec![8, 0, 0]);
        let m = set(&[9], 64);
        assert_eq!(
            m.to_bytes(Some(1)),
            Err(CpuMapError::MaplenTooShort {
                maplen: 1,
                needed: 2,
                cpu: 9
            })
        );
        assert_eq!(
            CpuMap::new(64).unwrap().to_bytes(Some(0)).unwrap(),
            Vec::<u8>::new()
        );
    }

    #[test]
    fn from_bytes_width_checks() {
        assert!(matches!(
            CpuMap::from_bytes(&[0x00, 0x04], Some(10)),
            Err(CpuMapError::CpuOutOfRange { cpu: 10, width: 10 })
        ));
        let m = CpuMap::from_bytes(&[0xff], Some(100)).unwrap();
        assert_eq!(m.width(), 100);
        assert_eq!(m.to_cpulist(), "0-7");
        assert!(matches!(
            CpuMap::from_bytes(&[], None),
            Err(CpuMapError::BadWidth { width: 0 })
        ));
    }

    #[test]
    fn cpulist_format() {
        assert_eq!(
            set(&[0, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15], 16).to_cpulist(),
            "0,2-3,8-15"
        );
        assert_eq!(CpuMap::new(8).unwrap().to_cpulist(), "");
        assert_eq!(CpuMap::full(65).unwrap().to_cpulist(), "0-64");
        assert_eq!(set(&[63, 64], 128).to_cpulist(), "63-64");
        assert_eq!(set(&[0], 1).to_cpulist(), "0");
    }

    #[test]
    fn parse_grammar() {
        let p = |s: &str| CpuMap::parse(s, 8, None).unwrap().to_cpulist();
        assert_eq!(p("0-3,^1-2,2"), "0,2-3");
        assert_eq!(p("all"), "0-7");
        assert_eq!(p("all,^0"), "1-7");
        assert_eq!(p(" 1 , 3 "), "1,3");
        assert_eq!(p("r"), "0-7");
        assert_eq!(p("^3"), "");
        assert_eq!(p(""), "");
        assert_eq!(p("7"), "7");
        let nodes = [0, 0, 0, 0, 1, 1, 1, 1];
        let q = |s: &str| CpuMap::parse(s, 8, Some(&nodes)).unwrap().to_cpulist();
        assert_eq!(q("node:1"), "4-7");
        assert_eq!(q("nodes:0-1,^node:0"), "4-7");
        assert_eq!(q("all,^node:1,5"), "0-3,5");
    }

    #[test]
    fn parse_errors_name_token_and_column() {
        for (text, token, column) in [
            ("0-", "0-", 1),
            ("a", "a", 1),
            ("1,,2x", "", 3),
            ("-3", "-3", 1),
            ("3-1-2", "3-1-2", 1),
            ("0,8", "8", 3),
            ("0, 5-9", "5-9", 4),
            ("^all", "^all", 1),
            ("3-1", "3-1", 1),
            ("99999999999999999999999", "99999999999999999999999", 1),
            ("node:0", "node:0", 1),
        ] {
            match CpuMap::parse(text, 8, None) {
                Err(CpuMapError::Parse {
                    token: t,
                    column: c,
                    ..
                }) => {
                    assert_eq!((t.as_str(), c), (token, column), "{text}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        let e = CpuMap::parse("0,9", 8, None).unwrap_err().to_string();
        assert!(
            e.contains("\"9\"") && e.contains("column 3") && e.contains("0-7"),
            "{e}"
        );
        assert!(matches!(
            CpuMap::parse("0", 0, None),
            Err(CpuMapError::BadWidth { width: 0 })
        ));
        let nodes = [0u32, 0];
        let e = CpuMap::parse("node:3", 2, Some(&nodes))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nodes with CPUs: 0"), "{e}");
    }

    #[test]
    fn set_algebra_and_widths() {
        let a = set(&[0, 1, 2], 8);
        let b = set(&[2, 3], 8);
        assert_eq!(a.intersection(&b).unwrap().to_cpulist(), "2");
        assert_eq!(a.union(&b).unwrap().to_cpulist(), "0-3");
        assert_eq!(a.difference(&b).unwrap().to_cpulist(), "0-1");
        assert_eq!(a.symmetric_difference(&b).unwrap().to_cpulist(), "0-1,3");
        assert_eq!(a.complement().to_cpulist(), "3-7");
        assert!(a.union(&set(&[], 9)).is_err());
        assert!(set(&[2], 8).is_subset(&a));
        assert!(CpuMap::full(70).unwrap().is_full());
        assert_eq!(CpuMap::full(70).unwrap().complement().count(), 0);
    }

    #[test]
    fn every_width_full_and_empty() {
        for w in WIDTHS {
            let full = CpuMap::full(w).unwrap();
            assert_eq!(full.count(), w);
            assert_eq!(full.to_cpulist(), valid_range(w));
            assert_eq!(CpuMap::parse(&full.to_cpulist(), w, None).unwrap(), full);
            let bytes = full.to_bytes(None).unwrap();
            assert_eq!(bytes.len(), w.div_ceil(8));
            assert_eq!(CpuMap::from_bytes(&bytes, Some(w)).unwrap(), full);
            assert_eq!(CpuMap::from_bools(full.to_bools()).unwrap(), full);
            assert_eq!(full.highest(), Some(w - 1));
            assert!(CpuMap::new(w).unwrap().is_empty());
        }
    }

    fn map_strategy() -> impl Strategy<Value = CpuMap> {
        proptest::sample::select(WIDTHS.to_vec()).prop_flat_map(|w| {
            proptest::collection::vec(0..w as u64, 0..64)
                .prop_map(move |cpus| CpuMap::from_cpus(cpus, w).unwrap())
        })
    }

    proptest! {
        #[test]
        fn roundtrip_bytes(m in map_strategy()) {
            let b = m.to_bytes(None).unwrap();
            prop_assert_eq!(CpuMap::from_bytes(&b, Some(m.width())).unwrap(), m);
        }

        #[test]
        fn roundtrip_cpulist(m in map_strategy()) {
            let s = m.to_cpulist();
            prop_assert_eq!(CpuMap::parse(&s, m.width(), None).unwrap(), m);
        }

        #[test]
        fn roundtrip_bools(m in map_strategy()) {
            prop_assert_eq!(CpuMap::from_bools(m.to_bools()).unwrap(), m);
        }

        #[test]
        fn runs_cover_exactly_the_set(m in map_strategy()) {
            let from_runs: Vec<usize> = m.runs().flat_map(|(a, b)| a..=b).collect();
            prop_assert_eq!(from_runs, m.iter().collect::<Vec<_>>());
            for w in m.runs().collect::<Vec<_>>().windows(2) {
                prop_assert!(w[1].0 > w[0].1 + 1, "runs are maximal");
            }
        }

        #[test]
        fn algebra_matches_sets(a in map_strategy(), cpus in proptest::collection::vec(0u64..65536, 0..64)) {
            let w = a.width();
            let b = CpuMap::from_cpus(cpus.into_iter().filter(|&c| c < w as u64), w).unwrap();
            let sa: std::collections::BTreeSet<usize> = a.iter().collect();
            let sb: std::collections::BTreeSet<usize> = b.iter().collect();
            prop_assert_eq!(a.intersection(&b).unwrap().iter().collect::<std::collections::BTreeSet<_>>(), &sa & &sb);
            prop_assert_eq!(a.union(&b).unwrap().iter().collect::<std::collections::BTreeSet<_>>(), &sa | &sb);
            prop_assert_eq!(a.difference(&b).unwrap().iter().collect::<std::collections::BTreeSet<_>>(), &sa - &sb);
            prop_assert_eq!(a.complement().count(), w - sa.len());
        }

        #[test]
        fn parse_never_panics(s in "[0-9a-z,^:\\- ]{0,24}") {
            let _ = CpuMap::parse(&s, 64, Some(&[0; 64]));
        }
    }
}
