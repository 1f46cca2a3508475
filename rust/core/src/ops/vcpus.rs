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
        let mut r = self.batch_vcpu_list(&[(domid, vcpu)])?;
        r.pop().expect("one request")
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
        let results = self.batch_vcpu_list(&list)?;
        let mut out: Vec<DomainVcpus> = Vec::with_capacity(reqs.len());
        let mut it = results.into_iter();
        for &(domid, n) in reqs {
            let rs: Vec<Result<VcpuInfo>> = it.by_ref().take(n as usize).collect();
            out.push((domid, Self::collect_domain(domid, rs)));
        }
        Ok(out)
    }

    /// Fold per-vCPU results of one domain: all ESRCH → the domain is gone; a single missing
    /// slot (ESRCH) is skipped; any other error fails the domain with that vCPU's error.
    fn collect_domain(domid: u32, rs: Vec<Result<VcpuInfo>>) -> Result<Vec<VcpuInfo>> {
        let srch = |r: &Result<VcpuInfo>| matches!(r, Err(e) if e.errno == Some(libc::ESRCH));
        if !rs.is_empty() && rs.iter().all(srch) {
            return Err(Self::not_found(domid));
        }
        let mut v = Vec::with_capacity(rs.len());
        for r in rs {
            match r {
                Ok(i) => v.push(i),
                Err(e) if e.errno == Some(libc::ESRCH) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(v)
    }

    /// Read (domid, vcpu) pairs, each with two multicall entries (getvcpuinfo and
    /// getvcpuaffinity, both maps), in batches that fit the arena target.
    fn batch_vcpu_list(&mut self, list: &[(u32, u32)]) -> Result<Vec<Result<VcpuInfo>>> {
        let layout = BatchLayout::new(2, 2, 2, abi::bitmap_bytes(self.width));
        let bits = (layout.map_len * 8) as u32;
        let mut out = Vec::with_capacity(list.len());
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
                a[c.maps_of(i)].fill(0);
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
            for (i, &(domid, vcpu)) in part.iter().enumerate() {
                let a = self.t.arena().1;
                let r_info = entry_result(u64::get(&a[c.result(i, 0)..]));
                let r_aff = entry_result(u64::get(&a[c.result(i, 1)..]));
                let res = match r_info.and(r_aff) {
                    Err(e) => Err(self.vcpu_error(Errno(e), domid, vcpu, "reading")),
                    Ok(_) => {
                        let gi = GetVcpuInfo::decode(&a[c.block(i, 0) + abi::DOMCTL_U..]);
                        let hard = self.map_from_arena(c.map(i, 0));
                        let soft = self.map_from_arena(c.map(i, 1));
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
                out.push(res);
            }
        }
        Ok(out)
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
