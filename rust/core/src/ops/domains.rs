//! The domain list (paged getdomaininfolist) and exact lookups of one domain.
use super::*;

impl Xen {
    // ----- domains ------------------------------------------------------------------------------

    /// Every domain, paged through getdomaininfolist at the version's stride (xen-interfaces.md §3.8).
    pub fn domains(&mut self) -> Result<Vec<DomainInfo>> {
        let stride = self.ver.dominfo_size;
        let buf = BLOCK;
        self.t.reserve(buf + DOMAIN_PAGE * stride)?;
        let mut out = Vec::new();
        let mut first: u32 = 0;
        loop {
            let base = self.arena_base();
            let v = self.ver.sysctl;
            let u = abi::sysctl_header(self.t.arena().1, sysctl::GETDOMAININFOLIST, v);
            GetDomainInfoList {
                first_domain: first as u16,
                max_domains: DOMAIN_PAGE as u32,
                buffer: base + buf as u64,
                ..Default::default()
            }
            .encode(u);
            self.sysctl_at(0)
                .map_err(|e| self.errno_error(e, "sysctl getdomaininfolist"))?;
            let a = self.t.arena().1;
            let n = (GetDomainInfoList::decode(&a[abi::SYSCTL_U..]).num_domains as usize)
                .min(DOMAIN_PAGE);
            for i in 0..n {
                out.push(DomainInfo::from_raw(&RawDomainInfo::decode(
                    &a[buf + i * stride..],
                )));
            }
            match out.last() {
                Some(last) if n == DOMAIN_PAGE && last.id + 1 < abi::DOMID_FIRST_RESERVED => {
                    first = last.id + 1
                }
                _ => break,
            }
        }
        Ok(out)
    }

    /// Exact lookup of one domain (xen-interfaces.md §3.4: Xen ≤ 4.17 answers with the *next* domain, so
    /// the returned id is checked).
    pub fn domain(&mut self, domid: u32) -> Result<DomainInfo> {
        if domid >= abi::DOMID_FIRST_RESERVED {
            return Err(Self::not_found(domid));
        }
        match self.raw_getdomaininfo(domid as u16) {
            Ok(r) if u32::from(r.domain) == domid => Ok(DomainInfo::from_raw(&r)),
            Ok(_) | Err(Errno(libc::ESRCH)) => Err(Self::not_found(domid)),
            Err(e) => Err(self
                .errno_error(e, "domctl getdomaininfo")
                .with_domain(domid)),
        }
    }
}
