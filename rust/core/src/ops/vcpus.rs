//! Per-vCPU reads, batched: getvcpuinfo and getvcpuaffinity for many vCPUs at once.
use super::layout::BatchLayout;
use super::*;

impl Xen {
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
        let mut got = None;
        self.batch_vcpu_list(&[(domid, vcpu)], |r| got = Some(r))?;
        got.expect("one request")
    }

    /// Every domain with every vCPU: one paged list, then batched vCPU reads. A domain whose
    /// vCPUs cannot be read (it vanished midway) carries its error; the others still answer.
    ///
    /// ```
    /// use xenvcpu_core::{ops::Xen, sim::HostSpec};
    ///
    /// let mut xen = Xen::open_sim(&HostSpec::default_host())?;
    /// let all = xen.snapshot()?;
    /// let vcpus: usize = all.iter().map(|(_, r)| r.as_ref().map_or(0, Vec::len)).sum();
    /// assert_eq!((all.len(), vcpus), (4, 4 + 4 + 8 + 16));
    /// # Ok::<(), xenvcpu_core::error::Error>(())
    /// ```
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
        // Results arrive in list order, so domain k's are the next reqs[k].1 of them: fold
        // them into that domain as they come, without a per-vCPU result list in between.
        let mut out: Vec<DomainVcpus> = Vec::with_capacity(reqs.len());
        let mut fold = DomainFold::new(reqs.first().map_or(0, |r| r.1 as usize));
        let mut k = 0usize;
        let mut left = reqs.first().map_or(0, |r| r.1);
        let close = |out: &mut Vec<DomainVcpus>, fold: &mut DomainFold, k: usize| {
            let domid = reqs[k].0;
            let next = reqs.get(k + 1).map_or(0, |r| r.1 as usize);
            out.push((
                domid,
                std::mem::replace(fold, DomainFold::new(next)).finish(domid),
            ));
        };
        // domains with no vCPU slot at all come out empty, as before
        while left == 0 && k < reqs.len() {
            close(&mut out, &mut fold, k);
            k += 1;
            left = reqs.get(k).map_or(0, |r| r.1);
        }
        self.batch_vcpu_list(&list, |r| {
            fold.add(r);
            left = left.saturating_sub(1);
            while left == 0 && k < reqs.len() {
                close(&mut out, &mut fold, k);
                k += 1;
                left = reqs.get(k).map_or(0, |r| r.1);
            }
        })?;
        Ok(out)
    }

    /// Read (domid, vcpu) pairs, each with two multicall entries (getvcpuinfo and
    /// getvcpuaffinity, both maps), in batches that fit the arena target; `sink` gets each
    /// pair's result in order.
    fn batch_vcpu_list(
        &mut self,
        list: &[(u32, u32)],
        mut sink: impl FnMut(Result<VcpuInfo>),
    ) -> Result<()> {
        let layout = BatchLayout::new(2, 2, 2, abi::bitmap_bytes(self.width));
        let bits = (layout.map_len * 8) as u32;
        let mut maps = MapCache::default();
        for part in list.chunks(layout.items_per_chunk()) {
            let c = layout.chunk(part.len());
            self.t.reserve(c.bytes())?;
            let dv = self.ver.domctl;
            let (base, a) = self.t.arena();
            for (i, &(domid, vcpu)) in part.iter().enumerate() {
                let (info, aff) = (c.block(i, 0), c.block(i, 1));
                let u = abi::domctl_header(&mut a[info..], domctl::GETVCPUINFO, dv, domid as u16);
                vcpu.put(u);
                let u =
                    abi::domctl_header(&mut a[aff..], domctl::GETVCPUAFFINITY, dv, domid as u16);
                let bitmap = |k: usize| XenctlBitmap {
                    bitmap: base + c.map(i, k) as u64,
                    nr_bits: bits,
                    pad: 0,
                };
                VcpuAffinity {
                    vcpu,
                    flags: abi::VCPUAFFINITY_HARD | abi::VCPUAFFINITY_SOFT,
                    cpumap_hard: bitmap(0),
                    cpumap_soft: bitmap(1),
                }
                .encode(u);
                // The maps need no clearing: on success Xen writes all nr_bits of each
                // (copies its map, zero-fills the rest: xen-interfaces.md §3.6), and they are
                // read only after success.
                for (k, b) in [info, aff].into_iter().enumerate() {
                    MulticallEntry {
                        op: abi::HYPERVISOR_DOMCTL,
                        result: 0,
                        args: [base + b as u64, 0, 0, 0, 0, 0],
                    }
                    .encode(&mut a[c.entry(i, k)..]);
                }
            }
            self.run_entries(c.entry_count())?;
            let w = self.width as usize;
            for (i, &(domid, vcpu)) in part.iter().enumerate() {
                let a = self.t.arena().1;
                let r_info = entry_result(u64::get(&a[c.result(i, 0)..]));
                let r_aff = entry_result(u64::get(&a[c.result(i, 1)..]));
                let res = match r_info.and(r_aff) {
                    Err(e) => Err(self.vcpu_error(Errno(e), domid, vcpu, "reading")),
                    Ok(_) => {
                        let gi = GetVcpuInfo::decode(&a[c.block(i, 0) + abi::DOMCTL_U..]);
                        let hard = maps.read(&mut a[c.map(i, 0)..], w, 0);
                        let soft = maps.read(&mut a[c.map(i, 1)..], w, 1);
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
                sink(res);
            }
        }
        Ok(())
    }

    pub(super) fn vcpu_error(&self, e: Errno, domid: u32, vcpu: u32, doing: &str) -> Error {
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

    pub(super) fn check_vcpu(d: &DomainInfo, vcpu: u32) -> Result<()> {
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
}

/// The vCPU results of one domain, folded as they arrive: all ESRCH → the domain is gone;
/// a single missing slot (ESRCH) is skipped; any other error fails the domain with the
/// first such vCPU's error.
#[derive(Default)]
struct DomainFold {
    vcpus: Vec<VcpuInfo>,
    seen: usize,
    missing: usize,
    error: Option<Error>,
}

impl DomainFold {
    /// A fold for a domain of `n` vCPU slots (at most [`crate::sim::spec::MAX_VCPUS`] are
    /// reserved: the rest grow as they come).
    fn new(n: usize) -> Self {
        DomainFold {
            vcpus: Vec::with_capacity(n.min(crate::sim::spec::MAX_VCPUS as usize)),
            ..Default::default()
        }
    }

    fn add(&mut self, r: Result<VcpuInfo>) {
        self.seen += 1;
        match r {
            Ok(v) if self.error.is_none() => self.vcpus.push(v),
            Ok(_) => {}
            Err(e) if e.errno == Some(libc::ESRCH) => self.missing += 1,
            Err(e) => {
                if self.error.is_none() {
                    self.error = Some(e);
                }
            }
        }
    }

    fn finish(self, domid: u32) -> Result<Vec<VcpuInfo>> {
        if self.seen > 0 && self.missing == self.seen {
            return Err(Xen::not_found(domid));
        }
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.vcpus),
        }
    }
}

/// The distinct maps of one bulk read: a map read from the arena that equals one of them is
/// shared (a reference count) instead of allocated and copied again. Thousands of vCPUs
/// usually carry a handful of distinct maps. Each is kept with its byte form, so a lookup
/// is a `memcmp` with the arena; each caller's slot (hard, soft) first tries the map it
/// found last.
#[derive(Default)]
pub(super) struct MapCache {
    maps: Vec<(CpuMap, Vec<u8>)>,
    last: [usize; 2],
    evict: usize,
}

impl MapCache {
    /// How many distinct maps are remembered (a miss compares against each of them).
    const KEEP: usize = 8;

    fn keep(&mut self, m: CpuMap, bytes: Vec<u8>) -> usize {
        if self.maps.len() < Self::KEEP {
            self.maps.push((m, bytes));
            self.maps.len() - 1
        } else {
            let i = self.evict;
            self.evict = (i + 1) % Self::KEEP;
            self.maps[i] = (m, bytes);
            i
        }
    }

    /// Share `m` with the maps read after it (a map a caller already holds).
    pub(super) fn remember(&mut self, m: &CpuMap) {
        if !self.maps.iter().any(|(r, _)| r.shares_words(m)) {
            let bytes = m.to_bytes(None).unwrap_or_default();
            self.keep(m.clone(), bytes);
        }
    }

    /// The `width`-wide map at the start of `bytes` (bits past the width cleared in place);
    /// `slot` (0 or 1) names the caller's kind of map.
    pub(super) fn read(&mut self, bytes: &mut [u8], width: usize, slot: usize) -> CpuMap {
        let mb = width.div_ceil(8);
        let bytes = &mut bytes[..mb];
        if !width.is_multiple_of(8) {
            bytes[mb - 1] &= (1u8 << (width % 8)) - 1;
        }
        let slot = slot % 2;
        let hint = self.last[slot];
        if let Some((m, b)) = self.maps.get(hint) {
            if b[..] == bytes[..] {
                return m.clone();
            }
        }
        if let Some(i) = self.maps.iter().position(|(_, b)| b[..] == bytes[..]) {
            self.last[slot] = i;
            return self.maps[i].0.clone();
        }
        let m = CpuMap::from_bytes(bytes, Some(width)).expect("masked to width");
        self.last[slot] = self.keep(m.clone(), bytes.to_vec());
        m
    }
}
