//! Host-wide reads: physinfo, CPU topology, cpupools and the online CPUs.
use super::*;

impl Xen {
    // ----- host ---------------------------------------------------------------------------------

    /// sysctl physinfo (xen-interfaces.md §4.2).
    pub fn physinfo(&mut self) -> Result<PhysInfo> {
        self.t.reserve(BLOCK)?;
        let v = self.ver.sysctl;
        abi::sysctl_header(self.t.arena().1, sysctl::PHYSINFO, v);
        self.sysctl_at(0)
            .map_err(|e| self.errno_error(e, "sysctl physinfo"))?;
        let layout = self.ver.physinfo_layout();
        Ok(RawPhysinfo::decode(
            &self.t.arena().1[abi::SYSCTL_U..],
            layout,
        ))
    }

    /// Per-CPU topology (xen-interfaces.md §4.3), `width()` entries; `None` for CPUs Xen reports nothing for.
    pub fn topology(&mut self) -> Result<Vec<Option<CpuTopology>>> {
        // first call with a NULL handle: how many entries Xen has
        self.t.reserve(BLOCK)?;
        let v = self.ver.sysctl;
        let u = abi::sysctl_header(self.t.arena().1, sysctl::CPUTOPOINFO, v);
        CpuTopoInfo::default().encode(u);
        self.sysctl_at(0)
            .map_err(|e| self.errno_error(e, "sysctl cputopoinfo"))?;
        let n = CpuTopoInfo::decode(&self.t.arena().1[abi::SYSCTL_U..]).num_cpus as usize;
        let arr = BLOCK;
        self.t.reserve(arr + n * abi::CpuTopo::SIZE)?;
        let base = self.arena_base();
        let u = abi::sysctl_header(self.t.arena().1, sysctl::CPUTOPOINFO, v);
        CpuTopoInfo {
            num_cpus: n as u32,
            pad: 0,
            cputopo: base + arr as u64,
        }
        .encode(u);
        self.sysctl_at(0)
            .map_err(|e| self.errno_error(e, "sysctl cputopoinfo"))?;
        let got =
            (CpuTopoInfo::decode(&self.t.arena().1[abi::SYSCTL_U..]).num_cpus as usize).min(n);
        let inv = |x: u32| (x != abi::XEN_INVALID_TOPO_ID).then_some(x);
        let a = &self.t.arena().1[arr..];
        let mut out: Vec<Option<CpuTopology>> = (0..got)
            .map(|i| {
                let t = abi::CpuTopo::decode(&a[i * abi::CpuTopo::SIZE..]);
                let c = CpuTopology {
                    core: inv(t.core),
                    socket: inv(t.socket),
                    node: inv(t.node),
                };
                (c.core.is_some() || c.socket.is_some() || c.node.is_some()).then_some(c)
            })
            .collect();
        out.resize(self.width().max(got), None);
        Ok(out)
    }

    pub(super) fn cpupool_call(
        &mut self,
        op: u32,
        id: u32,
    ) -> std::result::Result<(CpupoolOp, CpuMap), Errno> {
        let mb = abi::bitmap_bytes(self.width);
        self.t
            .reserve(BLOCK + mb)
            .map_err(|_| Errno(libc::ENOMEM))?;
        let base = self.arena_base();
        let v = self.ver.sysctl;
        let u = abi::sysctl_header(self.t.arena().1, sysctl::CPUPOOL_OP, v);
        CpupoolOp {
            op,
            cpupool_id: id,
            cpumap: XenctlBitmap {
                bitmap: base + BLOCK as u64,
                nr_bits: (mb * 8) as u32,
                pad: 0,
            },
            ..Default::default()
        }
        .encode(u);
        self.t.arena().1[BLOCK..BLOCK + mb].fill(0);
        self.sysctl_at(0)?;
        let a = self.t.arena().1;
        let r = CpupoolOp::decode(&a[abi::SYSCTL_U..]);
        let map = self.map_from_arena(BLOCK);
        Ok((r, map))
    }

    /// Read a `width`-wide map at arena offset `off`, masking bits beyond the width.
    pub(super) fn map_from_arena(&mut self, off: usize) -> CpuMap {
        let w = self.width as usize;
        let mb = w.div_ceil(8);
        let a = &mut self.t.arena().1[off..off + mb];
        if w % 8 != 0 {
            a[mb - 1] &= (1u8 << (w % 8)) - 1;
        }
        CpuMap::from_bytes(a, Some(w)).expect("masked to width")
    }

    /// Every cpupool (xen-interfaces.md §4.5: INFO returns the first pool with id ≥ the asked
    /// one).
    ///
    /// ```
    /// use xenvcpu_core::{ops::Xen, sim::HostSpec};
    ///
    /// let mut xen = Xen::open_sim(&HostSpec::default_host())?;
    /// let pools: Vec<(u32, String)> = xen
    ///     .cpupools()?
    ///     .into_iter()
    ///     .map(|p| (p.id, p.cpus.to_cpulist()))
    ///     .collect();
    /// assert_eq!(pools, [(0, "0-47".to_string()), (1, "48-63".to_string())]);
    /// # Ok::<(), xenvcpu_core::error::Error>(())
    /// ```
    pub fn cpupools(&mut self) -> Result<Vec<CpupoolInfo>> {
        let mut out = Vec::new();
        let mut next = 0u32;
        loop {
            match self.cpupool_call(abi::cpupool_op::INFO, next) {
                Ok((r, cpus)) => {
                    out.push(CpupoolInfo {
                        id: r.cpupool_id,
                        sched_id: r.sched_id,
                        n_dom: r.n_dom,
                        cpus,
                    });
                    match r.cpupool_id.checked_add(1) {
                        Some(n) => next = n,
                        None => break,
                    }
                }
                Err(Errno(libc::ENOENT)) => break,
                Err(e) => return Err(self.errno_error(e, "sysctl cpupool_op info")),
            }
        }
        Ok(out)
    }

    /// Online pCPUs: the union of every cpupool's CPUs and the free CPUs (FREEINFO).
    pub fn online_cpus(&mut self) -> Result<CpuMap> {
        let mut m = CpuMap::new(self.width()).map_err(bad_map)?;
        for p in self.cpupools()? {
            m = m.union(&p.cpus).map_err(bad_map)?;
        }
        match self.cpupool_call(abi::cpupool_op::FREEINFO, 0) {
            Ok((_, free)) => m = m.union(&free).map_err(bad_map)?,
            Err(e) => return Err(self.errno_error(e, "sysctl cpupool_op freeinfo")),
        }
        Ok(m)
    }
}
