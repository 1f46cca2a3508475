//! Pinning: validation before anything changes, then batched setvcpuaffinity.
use super::layout::BatchLayout;
use super::vcpus::MapCache;
use super::*;

/// One pin of a [`Xen::pin_many`] batch: a vCPU of a domain and the maps to set (None:
/// leave that kind as it is; at least one is given).
#[derive(Debug, Clone, Copy)]
pub struct PinRequest<'a> {
    /// domain id
    pub domid: u32,
    /// vCPU number
    pub vcpu: u32,
    /// hard affinity to set
    pub hard: Option<&'a CpuMap>,
    /// soft affinity to set
    pub soft: Option<&'a CpuMap>,
}

/// One validated setvcpuaffinity of a batch.
struct PinItem<'a> {
    domid: u32,
    pool: u32,
    vcpu: u32,
    hard: Option<&'a CpuMap>,
    soft: Option<&'a CpuMap>,
    flags: u32,
}

impl Xen {
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
        let (h, s, flags) = self.pin_checks(domid, vcpu, hard, soft, force)?;
        let d = self.domain(domid)?;
        Self::check_alive(&d)?;
        if let Some(v) = vcpu {
            Self::check_vcpu(&d, v)?;
        }
        Ok((d, h, s, flags))
    }

    fn check_alive(d: &DomainInfo) -> Result<()> {
        if d.dying {
            return Err(Error::new(
                ErrorKind::DomainDying,
                format!(
                    "domain {} is being destroyed; its vCPUs cannot be pinned",
                    d.id
                ),
            )
            .with_domain(d.id));
        }
        Ok(())
    }

    /// What needs no hypercall: something to pin, force supported, the maps against the
    /// host. Returns the maps at the host's width and the setvcpuaffinity flags.
    fn pin_checks(
        &self,
        domid: u32,
        vcpu: Option<u32>,
        hard: Option<&CpuMap>,
        soft: Option<&CpuMap>,
        force: bool,
    ) -> Result<(Option<CpuMap>, Option<CpuMap>, u32)> {
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
        Ok((h, s, flags))
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
    ///
    /// ```
    /// use xenvcpu_core::{cpumap::CpuMap, ops::Xen, sim::HostSpec};
    ///
    /// let mut xen = Xen::open_sim(&HostSpec::default_host())?;
    /// let node0 = CpuMap::parse("0-31", xen.width(), None)?;
    /// let results = xen.pin_all(1, Some(&node0), None, false)?; // domain 1, "web": 4 vCPUs
    /// assert_eq!(results.len(), 4);
    /// for (_vcpu, r) in results {
    ///     assert_eq!(r?.hard.unwrap().to_cpulist(), "0-31");
    /// }
    /// # Ok::<(), xenvcpu_core::error::Error>(())
    /// ```
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

    /// [`Xen::pin_all`] for a caller that knows the domain already (`known`: its
    /// DomainInfo as read before, e.g. by a listing): the vCPUs `0..known.max_vcpus` are
    /// pinned in the same multicall that reads the domain again, instead of a
    /// getdomaininfo hypercall first. The maps are validated before anything is issued;
    /// the domain's state is checked after, from the batch: gone (every pin failed
    /// with it), or dying (pins of a domain being destroyed change nothing that lasts),
    /// fails the call as `pin_all` would have before issuing them. A domain with fewer
    /// vCPUs than `known` says fails the pins of the others (VcpuNotFound each).
    ///
    /// ```
    /// use xenvcpu_core::{cpumap::CpuMap, ops::Xen, sim::HostSpec};
    ///
    /// let mut xen = Xen::open_sim(&HostSpec::default_host())?;
    /// let web = xen.domain(1)?;
    /// let node0 = CpuMap::parse("0-31", xen.width(), None)?;
    /// let results = xen.pin_all_known(&web, Some(&node0), None, false)?;
    /// assert_eq!(results.len(), web.max_vcpus as usize);
    /// # Ok::<(), xenvcpu_core::error::Error>(())
    /// ```
    pub fn pin_all_known(
        &mut self,
        known: &DomainInfo,
        hard: Option<&CpuMap>,
        soft: Option<&CpuMap>,
        force: bool,
    ) -> Result<Vec<(u32, Result<Pinning>)>> {
        let domid = known.id;
        if domid >= abi::DOMID_FIRST_RESERVED {
            return Err(Self::not_found(domid));
        }
        let (h, s, flags) = self.pin_checks(domid, None, hard, soft, force)?;
        let vcpus: Vec<u32> = (0..known.max_vcpus).collect();
        let items: Vec<PinItem<'_>> = vcpus
            .iter()
            .map(|&vcpu| PinItem {
                domid,
                pool: known.cpupool,
                vcpu,
                hard: h.as_ref(),
                soft: s.as_ref(),
                flags,
            })
            .collect();
        let (probe, results) = self.batch_pin_probed(&items, Some(domid))?;
        match probe {
            Some(Ok(d)) if d.id == domid => Self::check_alive(&d)?,
            Some(Err(e)) if e != libc::ESRCH => {
                return Err(self
                    .errno_error(Errno(e), "domctl getdomaininfo")
                    .with_domain(domid))
            }
            _ => return Err(Self::not_found(domid)),
        }
        Ok(vcpus.into_iter().zip(results).collect())
    }

    fn batch_pin(
        &mut self,
        d: &DomainInfo,
        vcpus: &[u32],
        hard: Option<&CpuMap>,
        soft: Option<&CpuMap>,
        flags: u32,
    ) -> Result<Vec<(u32, Result<Pinning>)>> {
        let items: Vec<PinItem<'_>> = vcpus
            .iter()
            .map(|&vcpu| PinItem {
                domid: d.id,
                pool: d.cpupool,
                vcpu,
                hard,
                soft,
                flags,
            })
            .collect();
        let r = self.batch_pin_items(&items)?;
        Ok(vcpus.iter().copied().zip(r).collect())
    }

    /// Pin many vCPUs of many domains in as few multicall batches as fit the arena: the
    /// pins of a whole placement, across domains (what `pin_all` does for one domain).
    ///
    /// Everything is validated before the first change: every map against the host, every
    /// domain (one paged list) and vCPU, no domain dying; a bad request fails the whole call
    /// with its typed error and nothing is changed. Then each pin gets its own result, in
    /// the order given (a domain that vanished midway fails only its own pins).
    ///
    /// ```
    /// use xenvcpu_core::{cpumap::CpuMap, ops::{PinRequest, Xen}, sim::HostSpec};
    ///
    /// let mut xen = Xen::open_sim(&HostSpec::default_host())?;
    /// let (a, b) = (CpuMap::parse("0-7", 64, None)?, CpuMap::parse("16-23", 64, None)?);
    /// let reqs = [
    ///     PinRequest { domid: 1, vcpu: 0, hard: Some(&a), soft: None },
    ///     PinRequest { domid: 2, vcpu: 5, hard: Some(&b), soft: Some(&b) },
    /// ];
    /// let results = xen.pin_many(&reqs, false)?;
    /// assert_eq!(results[1].as_ref().unwrap().soft.as_ref().unwrap().to_cpulist(), "16-23");
    /// # Ok::<(), xenvcpu_core::error::Error>(())
    /// ```
    pub fn pin_many(
        &mut self,
        reqs: &[PinRequest<'_>],
        force: bool,
    ) -> Result<Vec<Result<Pinning>>> {
        if force && !self.ver.has_force_flag() {
            return Err(Error::new(
                ErrorKind::NotSupported,
                format!(
                    "force needs Xen 4.7 or later (this is Xen {}.{})",
                    self.ver.major, self.ver.minor
                ),
            ));
        }
        let domains: std::collections::BTreeMap<u32, DomainInfo> =
            self.domains()?.into_iter().map(|d| (d.id, d)).collect();
        let mut maps: Vec<(Option<CpuMap>, Option<CpuMap>)> = Vec::with_capacity(reqs.len());
        let mut meta: Vec<(u32, u32)> = Vec::with_capacity(reqs.len()); // (pool, flags)
        for r in reqs {
            let (domid, vcpu) = (r.domid, r.vcpu);
            if r.hard.is_none() && r.soft.is_none() {
                return Err(Error::new(
                    ErrorKind::InvalidAffinity,
                    format!("nothing to pin for domain {domid} vCPU {vcpu}: give a hard and/or a soft affinity"),
                )
                .with_domain(domid)
                .with_vcpu(vcpu));
            }
            let d = domains.get(&domid).ok_or_else(|| Self::not_found(domid))?;
            if d.dying {
                return Err(Error::new(
                    ErrorKind::DomainDying,
                    format!("domain {domid} is being destroyed; its vCPUs cannot be pinned"),
                )
                .with_domain(domid));
            }
            Self::check_vcpu(d, vcpu)?;
            let h = r
                .hard
                .map(|m| self.check_map(m, "hard", domid, Some(vcpu)))
                .transpose()?;
            let s = r
                .soft
                .map(|m| self.check_map(m, "soft", domid, Some(vcpu)))
                .transpose()?;
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
            maps.push((h, s));
            meta.push((d.cpupool, flags));
        }
        let items: Vec<PinItem<'_>> = reqs
            .iter()
            .zip(&maps)
            .zip(&meta)
            .map(|((r, (h, s)), &(pool, flags))| PinItem {
                domid: r.domid,
                pool,
                vcpu: r.vcpu,
                hard: h.as_ref(),
                soft: s.as_ref(),
                flags,
            })
            .collect();
        self.batch_pin_items(&items)
    }

    /// Issue setvcpuaffinity for every item, batched; each item gets its own result.
    fn batch_pin_items(&mut self, items: &[PinItem<'_>]) -> Result<Vec<Result<Pinning>>> {
        Ok(self.batch_pin_probed(items, None)?.1)
    }

    /// [`Self::batch_pin_items`], with `probe`: a getdomaininfo of that domain as the first
    /// entry of the first batch (before any pin), returned with the results (the domain
    /// it found, or the errno). The errors of the pins name the probed domain's cpupool.
    #[allow(clippy::type_complexity)]
    fn batch_pin_probed(
        &mut self,
        items: &[PinItem<'_>],
        probe: Option<u32>,
    ) -> Result<(
        Option<std::result::Result<DomainInfo, i32>>,
        Vec<Result<Pinning>>,
    )> {
        let layout = BatchLayout::new(1, 1, 2, abi::bitmap_bytes(self.width));
        let mb = layout.map_len;
        let mut out = Vec::with_capacity(items.len());
        let mut pool_cpus: std::collections::BTreeMap<u32, String> = Default::default();
        // Effective maps usually equal what was asked (or each other): share their storage.
        let mut maps = MapCache::default();
        for it in items.iter().take(1) {
            for m in [it.soft, it.hard].into_iter().flatten() {
                maps.remember(m);
            }
        }
        let w = self.width as usize;
        // The byte form of the last map written, per kind: pinning every vCPU writes one map
        // many times, packed once and then copied.
        let mut packed: [Option<(CpuMap, Vec<u8>)>; 2] = [None, None];
        let per = layout.items_per_chunk();
        let mut probed = None;
        let mut pool_of_probed = None;
        let mut start = 0;
        while start < items.len() || (probe.is_some() && probed.is_none()) {
            // slot 0 of the first batch reads the probed domain, before any pin of it
            let lead = usize::from(probe.is_some() && probed.is_none());
            let take = (per - lead).min(items.len() - start);
            let part = &items[start..start + take];
            start += take;
            let c = layout.chunk(lead + take);
            self.t.reserve(c.bytes())?;
            let (base, a) = self.t.arena();
            let dv = self.ver.domctl;
            let bits = (mb * 8) as u32;
            if let (1, Some(domid)) = (lead, probe) {
                let b = c.block(0, 0);
                abi::domctl_header(&mut a[b..], domctl::GETDOMAININFO, dv, domid as u16);
                MulticallEntry {
                    op: abi::HYPERVISOR_DOMCTL,
                    result: 0,
                    args: [base + b as u64, 0, 0, 0, 0, 0],
                }
                .encode(&mut a[c.entry(0, 0)..]);
            }
            for (k, it) in part.iter().enumerate() {
                let i = lead + k;
                let b = c.block(i, 0);
                let (mh, ms) = (c.map(i, 0), c.map(i, 1));
                // separate input maps per entry: Xen writes the effective maps back into them
                // (a kind not set is not passed, so its bytes need no clearing)
                for (k, (m, off)) in [(it.hard, mh), (it.soft, ms)].into_iter().enumerate() {
                    let Some(m) = m else { continue };
                    let fresh = match &packed[k] {
                        Some((last, _)) => !last.shares_words(m),
                        None => true,
                    };
                    if fresh {
                        packed[k] = Some((m.clone(), m.to_bytes(Some(mb)).map_err(bad_map)?));
                    }
                    if let Some((_, bytes)) = &packed[k] {
                        a[off..off + mb].copy_from_slice(bytes);
                    }
                }
                let bm = |off: usize, on: bool| XenctlBitmap {
                    bitmap: if on { base + off as u64 } else { 0 },
                    nr_bits: if on { bits } else { 0 },
                    pad: 0,
                };
                let u =
                    abi::domctl_header(&mut a[b..], domctl::SETVCPUAFFINITY, dv, it.domid as u16);
                VcpuAffinity {
                    vcpu: it.vcpu,
                    flags: it.flags,
                    cpumap_hard: bm(mh, it.hard.is_some()),
                    cpumap_soft: bm(ms, it.soft.is_some()),
                }
                .encode(u);
                MulticallEntry {
                    op: abi::HYPERVISOR_DOMCTL,
                    result: 0,
                    args: [base + b as u64, 0, 0, 0, 0, 0],
                }
                .encode(&mut a[c.entry(i, 0)..]);
            }
            self.run_entries(c.entry_count())?;
            // First read every entry's own result and maps, then build errors: the error path
            // may issue lookups that reuse the arena.
            let a = self.t.arena().1;
            if lead == 1 {
                let r = entry_result(u64::get(&a[c.result(0, 0)..])).map(|_| {
                    DomainInfo::from_raw(&RawDomainInfo::decode(
                        &a[c.block(0, 0) + abi::DOMCTL_U..],
                    ))
                });
                if let (Ok(d), Some(domid)) = (&r, probe) {
                    if d.id == domid {
                        pool_of_probed = Some(d.cpupool);
                    }
                }
                probed = Some(r);
            }
            let raw: Vec<std::result::Result<Pinning, i32>> = part
                .iter()
                .enumerate()
                .map(|(k, it)| {
                    let i = lead + k;
                    let r = entry_result(u64::get(&a[c.result(i, 0)..]));
                    let (mh, ms) = (c.map(i, 0), c.map(i, 1));
                    r.map(|_| Pinning {
                        hard: it.hard.is_some().then(|| maps.read(&mut a[mh..], w, 0)),
                        soft: it.soft.is_some().then(|| maps.read(&mut a[ms..], w, 1)),
                    })
                })
                .collect();
            for (it, r) in part.iter().zip(raw) {
                let (domid, vcpu) = (it.domid, it.vcpu);
                let res = match r {
                    Ok(p) => Ok(p),
                    Err(libc::EINVAL) => {
                        let pool = match (probe, pool_of_probed) {
                            (Some(p), Some(pool)) if p == domid => pool,
                            _ => it.pool,
                        };
                        let cpus = match pool_cpus.get(&pool) {
                            Some(c) => c.clone(),
                            None => {
                                let c = self.pool_cpulist(pool);
                                pool_cpus.insert(pool, c.clone());
                                c
                            }
                        };
                        Err(Error::new(
                            ErrorKind::InvalidAffinity,
                            format!(
                                "domain {domid} vCPU {vcpu}: Xen refused {} (EINVAL): the hard \
                                 affinity must contain an online CPU of the domain's cpupool {}, \
                                 whose CPUs are {cpus}",
                                it.hard.map_or("the affinity".to_string(), |h| format!(
                                    "hard affinity {}",
                                    h.to_cpulist()
                                )),
                                pool,
                            ),
                        )
                        .with_errno(libc::EINVAL)
                        .with_domain(domid)
                        .with_vcpu(vcpu))
                    }
                    Err(e) => Err(self.vcpu_error(Errno(e), domid, vcpu, "pinning")),
                };
                out.push(res);
            }
        }
        Ok((probed, out))
    }

    fn pool_cpulist(&mut self, pool: u32) -> String {
        match self.cpupool_call(abi::cpupool_op::INFO, pool) {
            Ok((r, m)) if r.cpupool_id == pool && m.is_empty() => "(none)".to_string(),
            Ok((r, m)) if r.cpupool_id == pool => m.to_cpulist(),
            _ => "unknown".to_string(),
        }
    }
}
