//! The hypervisor side of the simulator: it decodes domctl, sysctl, xen_version and multicall
//! requests from the arena, exactly as laid out for the real hypervisor, and answers them.

use super::bitmap::{has, nbytes};
use super::host::{ran_ns, Dom, Map, SimHost, Vcpu, VcpuState};
use super::spec::GuestKind;
use crate::abi::{self, dominf, Field, InterfaceVersion, RawDomainInfo, RawPhysinfo};

impl SimHost {
    fn count_op(&mut self) -> std::result::Result<(), i32> {
        self.ops += 1;
        let n = self.ops;
        let mut i = 0;
        while i < self.removals.len() {
            if self.removals[i].0 == n {
                let id = self.removals.remove(i).1;
                self.forget_domain(id);
            } else {
                i += 1;
            }
        }
        if let Some(pos) = self.faults.iter().position(|f| f.0 == n) {
            return Err(self.faults.remove(pos).1);
        }
        Ok(())
    }

    fn cpu_time(v: &Vcpu, now: u64) -> u64 {
        if v.online {
            v.time_acc.saturating_add(ran_ns(v, now))
        } else {
            v.time_acc
        }
    }

    fn raw_info(&self, d: &Dom, now: u64) -> RawDomainInfo {
        let (mut n_online, mut any_running, mut all_blocked) = (0u32, false, true);
        for v in d.vcpus.iter().flatten().filter(|v| v.online) {
            n_online += 1;
            any_running |= v.state == VcpuState::Running;
            all_blocked &= v.state == VcpuState::Blocked;
        }
        let mut flags = 0;
        if d.dying {
            flags |= dominf::DYING;
        }
        if d.guest != GuestKind::Pv {
            // PVH and HVM guests are both HVM containers to the hypervisor
            flags |= dominf::HVM_GUEST;
        }
        if d.paused {
            flags |= dominf::PAUSED;
        }
        if let Some(code) = d.shutdown {
            flags |= dominf::SHUTDOWN | (u32::from(code) << dominf::SHUTDOWNSHIFT);
        }
        // running/blocked only when some vCPU is online (xen-interfaces.md §3.4 semantics)
        if n_online > 0 {
            if !d.paused && any_running {
                flags |= dominf::RUNNING;
            }
            if all_blocked {
                flags |= dominf::BLOCKED;
            }
        }
        let max_vcpu_id = d
            .vcpus
            .iter()
            .rposition(Option::is_some)
            .map_or(abi::NO_VCPU_ID, |i| i as u32);
        RawDomainInfo {
            domain: d.id,
            flags,
            tot_pages: d.pages,
            max_pages: d.pages,
            cpu_time: d
                .vcpus
                .iter()
                .flatten()
                .map(|v| Self::cpu_time(v, now))
                .sum(),
            nr_online_vcpus: n_online,
            max_vcpu_id,
            ssidref: 0,
            handle: d.uuid,
            cpupool: d.pool,
        }
    }

    /// Read a guest bitmap per xen-interfaces.md §3.6 (min of the two lengths; missing CPUs not allowed).
    fn read_bitmap(&self, mem: &Mem, bm: abi::XenctlBitmap) -> std::result::Result<Vec<u8>, i32> {
        let xen_bytes = nbytes(self.nr_cpu_ids);
        let mut out = vec![0u8; xen_bytes];
        let guest_bytes = (bm.nr_bits as usize).div_ceil(8);
        let n = guest_bytes.min(xen_bytes);
        if n == 0 {
            return Ok(out);
        }
        let src = mem.slice(bm.bitmap, n)?;
        out[..n].copy_from_slice(src);
        if guest_bytes <= xen_bytes && !bm.nr_bits.is_multiple_of(8) {
            out[n - 1] &= (1u8 << (bm.nr_bits % 8)) - 1;
        }
        let r = self.nr_cpu_ids % 8;
        if r != 0 {
            out[xen_bytes - 1] &= (1u8 << r) - 1;
        }
        Ok(out)
    }

    /// Write a bitmap to the guest per xen-interfaces.md §3.6 (min bytes, then zero-fill to nr_bits).
    fn write_bitmap(
        mem: &mut Mem,
        bm: abi::XenctlBitmap,
        m: &[u8],
    ) -> std::result::Result<(), i32> {
        let guest_bytes = (bm.nr_bits as usize).div_ceil(8);
        if guest_bytes == 0 {
            return Ok(());
        }
        let dst = mem.slice_mut(bm.bitmap, guest_bytes)?;
        let n = guest_bytes.min(m.len());
        dst[..n].copy_from_slice(&m[..n]);
        dst[n..].fill(0);
        Ok(())
    }

    /// [`SimHost::write_bitmap`] of the intersection of four maps, made in place.
    fn write_bitmap_and(
        mem: &mut Mem,
        bm: abi::XenctlBitmap,
        [a, b, c, d]: [&[u8]; 4],
    ) -> std::result::Result<(), i32> {
        let guest_bytes = (bm.nr_bits as usize).div_ceil(8);
        if guest_bytes == 0 {
            return Ok(());
        }
        let dst = mem.slice_mut(bm.bitmap, guest_bytes)?;
        let n = guest_bytes
            .min(a.len())
            .min(b.len())
            .min(c.len())
            .min(d.len());
        let both = dst[..n].iter_mut().zip(a).zip(b).zip(c).zip(d);
        for ((((out, a), b), c), d) in both {
            *out = a & b & c & d;
        }
        dst[n..].fill(0);
        Ok(())
    }

    fn domctl(&mut self, mem: &mut Mem, addr: u64) -> std::result::Result<u64, i32> {
        self.count_op()?;
        // A stack copy: the request block is read once per multicall entry.
        let mut block = [0u8; abi::XenDomctl::SIZE];
        block.copy_from_slice(mem.slice(addr, abi::XenDomctl::SIZE)?);
        let (cmd, ver, domid) = abi::read_domctl_header(&block);
        let iface = self.iface.ok_or(libc::EACCES)?;
        if ver != iface.domctl {
            return Err(libc::EACCES); // xen-interfaces.md §3.2: first check, −EACCES
        }
        let u = &block[abi::DOMCTL_U..];
        match cmd {
            abi::domctl::GETDOMAININFO => {
                if u32::from(domid) >= abi::DOMID_FIRST_RESERVED {
                    return Err(libc::EINVAL);
                }
                let found = if iface.getdomaininfo_returns_next() {
                    self.domains.range(domid..).next().map(|(_, d)| d)
                } else {
                    self.domains.get(&domid)
                };
                let d = found.ok_or(libc::ESRCH)?;
                let info = self.raw_info(d, self.now());
                let out = mem.slice_mut(addr, abi::XenDomctl::SIZE)?;
                info.domain.put(&mut out[8..]); // echoed into xen_domctl.domain (xen-interfaces.md §3.4)
                info.encode(&mut out[abi::DOMCTL_U..], iface.dominfo_size);
                Ok(0)
            }
            abi::domctl::GETVCPUINFO => {
                let now = self.now();
                let d = self.domains.get(&domid).ok_or(libc::ESRCH)?;
                let vcpu = u32::get(u);
                if vcpu as usize >= d.vcpus.len() {
                    return Err(libc::EINVAL);
                }
                let v = d.vcpus[vcpu as usize].as_ref().ok_or(libc::ESRCH)?;
                let mut r = abi::GetVcpuInfo {
                    vcpu,
                    online: u8::from(v.online),
                    blocked: u8::from(v.online && v.state == VcpuState::Blocked),
                    running: u8::from(v.online && v.state == VcpuState::Running && !d.paused),
                    cpu_time: Self::cpu_time(v, now),
                    cpu: v.cpu,
                    ..Default::default()
                };
                if self.leak_runstate {
                    // a read that raced a runstate update, on Xen before 4.13
                    self.vcpuinfo_answers += 1;
                    if self.vcpuinfo_answers.is_multiple_of(3) {
                        r.cpu_time |= abi::XEN_RUNSTATE_UPDATE;
                    }
                }
                r.encode(&mut mem.slice_mut(addr, abi::XenDomctl::SIZE)?[abi::DOMCTL_U..]);
                Ok(0)
            }
            abi::domctl::GETVCPUAFFINITY | abi::domctl::SETVCPUAFFINITY => {
                let a = abi::VcpuAffinity::decode(u);
                self.affinity(mem, cmd, domid, a, iface)
            }
            _ => Err(libc::ENOSYS),
        }
    }

    fn affinity(
        &mut self,
        mem: &mut Mem,
        cmd: u32,
        domid: u16,
        a: abi::VcpuAffinity,
        iface: InterfaceVersion,
    ) -> std::result::Result<u64, i32> {
        let d = self.domains.get(&domid).ok_or(libc::ESRCH)?;
        if a.vcpu as usize >= d.vcpus.len() {
            return Err(libc::EINVAL);
        }
        let v = d.vcpus[a.vcpu as usize].as_ref().ok_or(libc::ESRCH)?;
        let known = abi::VCPUAFFINITY_HARD
            | abi::VCPUAFFINITY_SOFT
            | if iface.has_force_flag() {
                abi::VCPUAFFINITY_FORCE
            } else {
                0
            };
        let hs = a.flags & (abi::VCPUAFFINITY_HARD | abi::VCPUAFFINITY_SOFT);
        if hs == 0 || a.flags & !known != 0 {
            return Err(libc::EINVAL);
        }
        let want_hard = a.flags & abi::VCPUAFFINITY_HARD != 0;
        let want_soft = a.flags & abi::VCPUAFFINITY_SOFT != 0;
        if (want_hard && a.cpumap_hard.bitmap == 0) || (want_soft && a.cpumap_soft.bitmap == 0) {
            return Err(libc::EINVAL);
        }
        if cmd == abi::domctl::GETVCPUAFFINITY {
            // configured maps, no intersection (xen-interfaces.md §3.6 get semantics)
            if want_hard {
                Self::write_bitmap(mem, a.cpumap_hard, &v.hard)?;
            }
            if want_soft {
                Self::write_bitmap(mem, a.cpumap_soft, &v.soft)?;
            }
            return Ok(0);
        }
        let pool = self
            .pool(d.pool)
            .map(|p| p.cpus.clone())
            .unwrap_or_else(|| self.full_map());
        let online = self.online.clone();
        let new_hard = if want_hard {
            Some(self.read_bitmap(mem, a.cpumap_hard)?)
        } else {
            None
        };
        let new_soft = if want_soft {
            Some(self.read_bitmap(mem, a.cpumap_soft)?)
        } else {
            None
        };
        let mut override_on = v.pin_override;
        if a.flags & abi::VCPUAFFINITY_FORCE != 0 {
            override_on = false;
        }
        if let Some(h) = &new_hard {
            let meets_pool = h
                .iter()
                .zip(pool.iter())
                .zip(online.iter())
                .any(|((h, p), o)| h & p & o != 0);
            if !meets_pool {
                return Err(libc::EINVAL);
            }
            if override_on {
                return Err(libc::EBUSY);
            }
        }
        // A map equal to the one the vCPU has, or to the previous vCPU's (pinning every vCPU
        // sets one map on each), is shared rather than stored again.
        let prev = a
            .vcpu
            .checked_sub(1)
            .and_then(|p| d.vcpus.get(p as usize))
            .and_then(Option::as_ref)
            .map(|p| (p.hard.clone(), p.soft.clone()));
        let share = |new: Vec<u8>, own: &Map, prev: Option<&Map>| -> Map {
            if own[..] == new[..] {
                own.clone()
            } else {
                match prev.filter(|p| p[..] == new[..]) {
                    Some(p) => p.clone(),
                    None => new.into(),
                }
            }
        };
        let d = self.domains.get_mut(&domid).expect("checked above");
        let v = d.vcpus[a.vcpu as usize].as_mut().expect("checked above");
        v.pin_override = override_on;
        if let Some(h) = new_hard {
            v.hard = share(h, &v.hard, prev.as_ref().map(|p| &p.0));
        }
        if let Some(s) = new_soft {
            v.soft = share(s, &v.soft, prev.as_ref().map(|p| &p.1));
        }
        // Effective maps, made where they go (nothing is built): hard ∩ pool online, and
        // soft ∩ pool online ∩ hard (within the effective hard, so also where a preferred CPU
        // is).
        let (hard, soft) = (&v.hard[..], &v.soft[..]);
        if !(has(hard, v.cpu) && has(&pool, v.cpu) && has(&online, v.cpu)) {
            // the lowest CPU of the intersection of four maps
            let lowest = |[a, b, c, d]: [&[u8]; 4]| {
                let all = a.iter().zip(b).zip(c).zip(d).enumerate();
                all.map(|(i, (((a, b), c), d))| (i, a & b & c & d))
                    .find(|&(_, m)| m != 0)
                    .map(|(i, m)| i as u32 * 8 + m.trailing_zeros())
            };
            v.cpu = lowest([soft, hard, &pool, &online])
                .or_else(|| lowest([hard, hard, &pool, &online]))
                .unwrap_or(v.cpu);
        }
        // written back: effective maps of the flagged kinds (xen-interfaces.md §3.6 item 4)
        if want_hard {
            Self::write_bitmap_and(mem, a.cpumap_hard, [hard, hard, &pool, &online])?;
        }
        if want_soft {
            Self::write_bitmap_and(mem, a.cpumap_soft, [soft, hard, &pool, &online])?;
        }
        Ok(0)
    }

    fn sysctl(&mut self, mem: &mut Mem, addr: u64) -> std::result::Result<u64, i32> {
        self.count_op()?;
        let now = self.now();
        let block = mem.slice(addr, abi::XenSysctl::SIZE)?.to_vec();
        let (cmd, ver) = abi::read_sysctl_header(&block);
        let iface = self.iface.ok_or(libc::EACCES)?;
        if ver != iface.sysctl {
            return Err(libc::EACCES);
        }
        let u = &block[abi::SYSCTL_U..];
        let out_u = abi::SYSCTL_U;
        match cmd {
            abi::sysctl::PHYSINFO => {
                let online: u32 = self.online.iter().map(|b| b.count_ones()).sum();
                let total: u64 = (self.mem_per_node >> 12) * u64::from(self.nodes);
                let used: u64 = self.domains.values().map(|d| d.pages).sum();
                let p = RawPhysinfo {
                    threads_per_core: self.threads_per_core,
                    cores_per_socket: self.cores_per_socket,
                    nr_cpus: online,
                    max_cpu_id: self.nr_cpu_ids - 1,
                    nr_nodes: self.nodes,
                    max_node_id: 63,
                    cpu_khz: self.cpu_khz,
                    capabilities: 1,
                    total_pages: total,
                    free_pages: total.saturating_sub(used),
                };
                p.encode(
                    &mut mem.slice_mut(addr, abi::XenSysctl::SIZE)?[out_u..],
                    iface.physinfo_layout(),
                );
                Ok(0)
            }
            abi::sysctl::GETDOMAININFOLIST => {
                let req = abi::GetDomainInfoList::decode(u);
                let stride = iface.dominfo_size;
                let mut n = 0u32;
                let ids: Vec<u16> = self
                    .domains
                    .range(req.first_domain..)
                    .take(req.max_domains as usize)
                    .map(|(id, _)| *id)
                    .collect();
                if !ids.is_empty() {
                    let buf = mem.slice_mut(req.buffer, ids.len() * stride)?;
                    for (i, id) in ids.iter().enumerate() {
                        let info = self.raw_info(&self.domains[id], now);
                        info.encode(&mut buf[i * stride..], stride);
                        n += 1;
                    }
                }
                let out = abi::GetDomainInfoList {
                    num_domains: n,
                    ..req
                };
                out.encode(&mut mem.slice_mut(addr, abi::XenSysctl::SIZE)?[out_u..]);
                Ok(0)
            }
            abi::sysctl::CPUTOPOINFO => {
                let mut req = abi::CpuTopoInfo::decode(u);
                let count = self
                    .topo
                    .iter()
                    .rposition(Option::is_some)
                    .map_or(0, |i| i + 1) as u32;
                if req.cputopo != 0 {
                    let k = count.min(req.num_cpus) as usize;
                    let buf = mem.slice_mut(req.cputopo, k * abi::CpuTopo::SIZE)?;
                    for (i, t) in self.topo.iter().take(k).enumerate() {
                        let inv = abi::XEN_INVALID_TOPO_ID;
                        let e = t.map_or(
                            abi::CpuTopo {
                                core: inv,
                                socket: inv,
                                node: inv,
                            },
                            |t| abi::CpuTopo {
                                core: t.core,
                                socket: t.socket,
                                node: t.node,
                            },
                        );
                        e.encode(&mut buf[i * abi::CpuTopo::SIZE..]);
                    }
                }
                req.num_cpus = count;
                req.encode(&mut mem.slice_mut(addr, abi::XenSysctl::SIZE)?[out_u..]);
                Ok(0)
            }
            abi::sysctl::CPUPOOL_OP => {
                let mut req = abi::CpupoolOp::decode(u);
                let map: Vec<u8> = match req.op {
                    abi::cpupool_op::INFO => {
                        let p = self
                            .pools
                            .iter()
                            .filter(|p| p.id >= req.cpupool_id)
                            .min_by_key(|p| p.id)
                            .ok_or(libc::ENOENT)?;
                        req.cpupool_id = p.id;
                        req.sched_id = p.sched_id;
                        req.n_dom = self.domains.values().filter(|d| d.pool == p.id).count() as u32;
                        p.cpus.to_vec()
                    }
                    abi::cpupool_op::FREEINFO => {
                        let mut m = self.online.to_vec();
                        for p in &self.pools {
                            for (a, b) in m.iter_mut().zip(p.cpus.iter()) {
                                *a &= !b;
                            }
                        }
                        m
                    }
                    _ => return Err(libc::ENOSYS),
                };
                if req.cpumap.bitmap != 0 {
                    Self::write_bitmap(mem, req.cpumap, &map)?;
                }
                req.encode(&mut mem.slice_mut(addr, abi::XenSysctl::SIZE)?[out_u..]);
                Ok(0)
            }
            _ => Err(libc::ENOSYS),
        }
    }

    fn dispatch(
        &mut self,
        mem: &mut Mem,
        op: u64,
        args: [u64; 6],
    ) -> std::result::Result<u64, i32> {
        match op {
            abi::HYPERVISOR_DOMCTL => self.domctl(mem, args[0]),
            abi::HYPERVISOR_SYSCTL => self.sysctl(mem, args[0]),
            abi::HYPERVISOR_XEN_VERSION => match args[0] {
                abi::XENVER_VERSION => {
                    Ok(u64::from(self.release.0) << 16 | u64::from(self.release.1))
                }
                1 => {
                    // XENVER_extraversion: 16-byte string (xen-interfaces.md §2)
                    let s = format!(".{}", self.release.2);
                    let out = mem.slice_mut(args[1], 16)?;
                    out.fill(0);
                    out[..s.len()].copy_from_slice(s.as_bytes());
                    Ok(0)
                }
                _ => Err(libc::ENOSYS),
            },
            _ => Err(libc::ENOSYS),
        }
    }

    pub(super) fn hypercall(
        &mut self,
        mem: &mut Mem,
        op: u64,
        a: [u64; 5],
    ) -> std::result::Result<u64, i32> {
        self.tick();
        self.hypercalls += 1;
        let n = self.hypercalls;
        if let Some(pos) = self.hc_faults.iter().position(|f| f.0 == n) {
            return Err(self.hc_faults.remove(pos).1);
        }
        if op != abi::HYPERVISOR_MULTICALL {
            return self.dispatch(mem, op, [a[0], a[1], a[2], a[3], a[4], 0]);
        }
        if let Some(e) = self.multicall_errno {
            return Err(e);
        }
        // xen-interfaces.md §10: arg0 = entry array, arg1 = count; each entry gets its own result
        let n = a[1] as usize;
        mem.slice(
            a[0],
            n.checked_mul(abi::MulticallEntry::SIZE)
                .ok_or(libc::EFAULT)?,
        )?;
        for i in 0..n {
            let at = a[0] + (i * abi::MulticallEntry::SIZE) as u64;
            let mut e = abi::MulticallEntry::decode(mem.slice(at, abi::MulticallEntry::SIZE)?);
            if e.op == abi::HYPERVISOR_MULTICALL {
                e.result = (-i64::from(libc::EINVAL)) as u64;
            } else {
                e.result = match self.dispatch(mem, e.op, e.args) {
                    Ok(r) => r,
                    Err(errno) => (-i64::from(errno)) as u64,
                };
            }
            e.encode(mem.slice_mut(at, abi::MulticallEntry::SIZE)?);
        }
        Ok(0)
    }
}

/// Guest memory as the simulated Xen sees it: the transport's arena at its base address.
pub(super) struct Mem<'a> {
    pub(super) base: u64,
    pub(super) bytes: &'a mut [u8],
}

impl Mem<'_> {
    fn range(&self, addr: u64, len: usize) -> std::result::Result<std::ops::Range<usize>, i32> {
        let off = addr.checked_sub(self.base).ok_or(libc::EFAULT)? as usize;
        let end = off.checked_add(len).ok_or(libc::EFAULT)?;
        if end > self.bytes.len() {
            return Err(libc::EFAULT); // not hypercall memory: what Xen reports (xen-interfaces.md §1.5)
        }
        Ok(off..end)
    }
    fn slice(&self, addr: u64, len: usize) -> std::result::Result<&[u8], i32> {
        let r = self.range(addr, len)?;
        Ok(&self.bytes[r])
    }
    fn slice_mut(&mut self, addr: u64, len: usize) -> std::result::Result<&mut [u8], i32> {
        let r = self.range(addr, len)?;
        Ok(&mut self.bytes[r])
    }
}
