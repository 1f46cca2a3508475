//! Raw-byte tests of the simulator: requests are laid out by hand, as privcmd users would.

use super::*;
use crate::abi::{self, domctl, sysctl, Field, RawDomainInfo, VcpuAffinity, XenctlBitmap};
use crate::error::Errno;
use crate::transport::Transport;

const V: u32 = 0x15; // Xen 4.17 (xen-interfaces.md §3.2)

const D: SimBase = SimBase::Default;
const S: SimBase = SimBase::Scale;

fn sim(base: SimBase, params: &[(&str, &str)]) -> SimTransport {
    let mut t = SimTransport::new(SimHost::new(&spec::test_spec(base, params)).unwrap());
    t.reserve(64 * 1024).unwrap();
    t
}

fn domctl_call(t: &mut SimTransport) -> std::result::Result<u64, Errno> {
    t.hypercall(abi::HYPERVISOR_DOMCTL, [SIM_ARENA_BASE, 0, 0, 0, 0])
}

fn sysctl_call(t: &mut SimTransport) -> std::result::Result<u64, Errno> {
    t.hypercall(abi::HYPERVISOR_SYSCTL, [SIM_ARENA_BASE, 0, 0, 0, 0])
}

/// setvcpuaffinity/getvcpuaffinity with hand-sized bitmaps at 1024 (hard) and 2048 (soft).
fn affinity(
    t: &mut SimTransport,
    cmd: u32,
    (dom, vcpu): (u16, u32),
    flags: u32,
    hard: &[u8],
    soft: &[u8],
    nr_bits: u32,
) -> std::result::Result<(Vec<u8>, Vec<u8>), Errno> {
    let a = t.arena().1;
    let u = abi::domctl_header(a, cmd, V, dom);
    VcpuAffinity {
        vcpu,
        flags,
        cpumap_hard: XenctlBitmap {
            bitmap: SIM_ARENA_BASE + 1024,
            nr_bits,
            pad: 0,
        },
        cpumap_soft: XenctlBitmap {
            bitmap: SIM_ARENA_BASE + 2048,
            nr_bits,
            pad: 0,
        },
    }
    .encode(u);
    a[1024..2048 + 1024].fill(0xEE);
    a[1024..1024 + hard.len()].copy_from_slice(hard);
    a[2048..2048 + soft.len()].copy_from_slice(soft);
    domctl_call(t)?;
    let a = t.arena().1;
    Ok((a[1024..1024 + 16].to_vec(), a[2048..2048 + 16].to_vec()))
}

#[test]
fn wrong_interface_version_is_eacces() {
    let mut t = sim(D, &[]);
    abi::domctl_header(t.arena().1, domctl::GETDOMAININFO, 0x14, 0);
    assert_eq!(domctl_call(&mut t), Err(Errno(libc::EACCES)));
    abi::sysctl_header(t.arena().1, sysctl::PHYSINFO, 0x16);
    assert_eq!(sysctl_call(&mut t), Err(Errno(libc::EACCES)));
    abi::sysctl_header(t.arena().1, sysctl::PHYSINFO, V);
    assert_eq!(sysctl_call(&mut t), Ok(0));
    abi::domctl_header(t.arena().1, 999, V, 0);
    assert_eq!(domctl_call(&mut t), Err(Errno(libc::ENOSYS)));
    // unknown release: everything is EACCES, xen_version still answers
    lock(&t.handle()).set_release(4, 22, 0);
    abi::sysctl_header(t.arena().1, sysctl::PHYSINFO, V);
    assert_eq!(sysctl_call(&mut t), Err(Errno(libc::EACCES)));
    let v = t.hypercall(abi::HYPERVISOR_XEN_VERSION, [0; 5]).unwrap();
    assert_eq!((v >> 16, v & 0xffff), (4, 22));
}

#[test]
fn addresses_outside_the_arena_are_efault() {
    let mut t = sim(D, &[]);
    assert_eq!(
        t.hypercall(abi::HYPERVISOR_DOMCTL, [0x1000, 0, 0, 0, 0]),
        Err(Errno(libc::EFAULT))
    );
    let end = SIM_ARENA_BASE + t.arena().1.len() as u64 - 10;
    assert_eq!(
        t.hypercall(abi::HYPERVISOR_SYSCTL, [end, 0, 0, 0, 0]),
        Err(Errno(libc::EFAULT))
    );
    assert_eq!(t.hypercall(99, [0; 5]), Err(Errno(libc::ENOSYS)));
}

#[test]
fn getdomaininfo_writes_exactly_the_versions_stride() {
    for (version, stride) in [("4.17", 112), ("4.15", 104), ("4.9", 96)] {
        let mut t = sim(D, &[("version", version)]);
        let v = lock(&t.handle()).interface().unwrap();
        assert_eq!(v.dominfo_size, stride);
        let a = t.arena().1;
        a.fill(0xAB);
        abi::domctl_header(a, domctl::GETDOMAININFO, v.domctl, 1);
        domctl_call(&mut t).unwrap();
        let a = t.arena().1;
        assert_eq!(
            &a[16 + stride..144],
            &vec![0u8; 128 - stride][..],
            "{version}: rest of the union zeroed by the header"
        );
        assert_eq!(a[144], 0xAB, "{version}: nothing past the block");
        let r = RawDomainInfo::decode(&a[16..]);
        assert_eq!((r.domain, r.max_vcpu_id, r.nr_online_vcpus), (1, 3, 4));
        // list: stride-spaced elements, num_domains copied back
        let a = t.arena().1;
        let u = abi::sysctl_header(a, sysctl::GETDOMAININFOLIST, v.sysctl);
        abi::GetDomainInfoList {
            first_domain: 1,
            max_domains: 2,
            buffer: SIM_ARENA_BASE + 4096,
            ..Default::default()
        }
        .encode(u);
        a[4096..8192].fill(0xCD);
        sysctl_call(&mut t).unwrap();
        let a = t.arena().1;
        assert_eq!(abi::GetDomainInfoList::decode(&a[8..]).num_domains, 2);
        assert_eq!(RawDomainInfo::decode(&a[4096..]).domain, 1);
        assert_eq!(RawDomainInfo::decode(&a[4096 + stride..]).domain, 2);
        assert_eq!(
            a[4096 + 2 * stride],
            0xCD,
            "{version}: max_domains respected"
        );
    }
}

#[test]
fn bitmap_length_rules() {
    // xen-interfaces.md §3.6: Xen reads min(guest, xen) bytes; shorter guest maps mask bits above nr_bits;
    // output copies min bytes then zero-fills the guest buffer up to ceil(nr_bits/8).
    let mut t = sim(D, &[]); // 64 CPUs = 8 bytes
    let both = abi::VCPUAFFINITY_HARD | abi::VCPUAFFINITY_SOFT;
    // guest map of 12 bits: bits 12-15 of byte 1 are ignored
    let (h, _) = affinity(
        &mut t,
        domctl::SETVCPUAFFINITY,
        (0, 0),
        abi::VCPUAFFINITY_HARD,
        &[0, 0xF1],
        &[],
        12,
    )
    .unwrap();
    assert_eq!(&h[..2], &[0, 0x01]);
    assert_eq!(
        h[2], 0xEE,
        "guest buffer is 2 bytes: nothing written past it"
    );
    // guest map of 128 bits (16 bytes): extra bytes ignored on input, zero-filled on output
    let mut wide = [0u8; 16];
    wide[0] = 0x0F;
    wide[12] = 0xFF;
    let (h, s) = affinity(
        &mut t,
        domctl::SETVCPUAFFINITY,
        (0, 0),
        both,
        &wide,
        &wide,
        128,
    )
    .unwrap();
    assert_eq!(h, [0x0F, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(s, h);
    // get returns the configured maps, zero-filled to the guest size
    let (h, s) = affinity(&mut t, domctl::GETVCPUAFFINITY, (0, 0), both, &[], &[], 128).unwrap();
    assert_eq!(h[0], 0x0F);
    assert!(h[1..].iter().all(|&b| b == 0));
    assert_eq!(s[0], 0x0F);
    // nr_bits = 0 → nothing copied (and for set: an empty hard map → EINVAL)
    let (h, _) = affinity(
        &mut t,
        domctl::GETVCPUAFFINITY,
        (0, 0),
        abi::VCPUAFFINITY_HARD,
        &[],
        &[],
        0,
    )
    .unwrap();
    assert_eq!(h[0], 0xEE);
    assert_eq!(
        affinity(
            &mut t,
            domctl::SETVCPUAFFINITY,
            (0, 0),
            abi::VCPUAFFINITY_HARD,
            &[0xFF],
            &[],
            0
        ),
        Err(Errno(libc::EINVAL))
    );
}

#[test]
fn affinity_errno_cases() {
    let mut t = sim(D, &[]);
    let h = abi::VCPUAFFINITY_HARD;
    let one = [1u8; 8];
    let call = |t: &mut SimTransport, dom, vcpu, flags| {
        affinity(
            t,
            domctl::SETVCPUAFFINITY,
            (dom, vcpu),
            flags,
            &one,
            &one,
            64,
        )
    };
    assert_eq!(call(&mut t, 0, 0, 0), Err(Errno(libc::EINVAL)), "no flags");
    assert_eq!(
        call(&mut t, 0, 0, 8),
        Err(Errno(libc::EINVAL)),
        "unknown flag"
    );
    assert_eq!(
        call(&mut t, 0, 4, h),
        Err(Errno(libc::EINVAL)),
        "vcpu >= max"
    );
    assert_eq!(call(&mut t, 9, 0, h), Err(Errno(libc::ESRCH)), "no domain");
    lock(&t.handle()).drop_vcpu_slot(0, 2).unwrap();
    assert_eq!(call(&mut t, 0, 2, h), Err(Errno(libc::ESRCH)), "empty slot");
    // NULL handle for a flagged map
    let a = t.arena().1;
    let u = abi::domctl_header(a, domctl::SETVCPUAFFINITY, V, 0);
    VcpuAffinity {
        vcpu: 0,
        flags: h,
        ..Default::default()
    }
    .encode(u);
    assert_eq!(domctl_call(&mut t), Err(Errno(libc::EINVAL)));
    // getvcpuinfo errnos (xen-interfaces.md §3.5)
    let u = abi::domctl_header(t.arena().1, domctl::GETVCPUINFO, V, 0);
    4u32.put(u);
    assert_eq!(domctl_call(&mut t), Err(Errno(libc::EINVAL)));
    let u = abi::domctl_header(t.arena().1, domctl::GETVCPUINFO, V, 0);
    2u32.put(u);
    assert_eq!(domctl_call(&mut t), Err(Errno(libc::ESRCH)));
    abi::domctl_header(t.arena().1, domctl::GETDOMAININFO, V, 0x7FF0);
    assert_eq!(
        domctl_call(&mut t),
        Err(Errno(libc::EINVAL)),
        "reserved domid"
    );
}

#[test]
fn multicall_runs_every_entry_with_its_own_result() {
    let mut t = sim(D, &[]);
    let base = SIM_ARENA_BASE;
    let a = t.arena().1;
    // entry 0: getvcpuinfo(dom 1, vcpu 0) → ok; entry 1: vcpu 9 → EINVAL; entry 2: bad op
    for (i, vcpu) in [0u32, 9].into_iter().enumerate() {
        let off = 1024 + i * 144;
        let u = abi::domctl_header(&mut a[off..], domctl::GETVCPUINFO, V, 1);
        vcpu.put(u);
        abi::MulticallEntry {
            op: abi::HYPERVISOR_DOMCTL,
            result: 7,
            args: [base + off as u64, 0, 0, 0, 0, 0],
        }
        .encode(&mut a[i * 64..]);
    }
    abi::MulticallEntry {
        op: 77,
        result: 7,
        args: [0; 6],
    }
    .encode(&mut a[128..]);
    let before = lock(&t.handle()).hypercalls();
    assert_eq!(
        t.hypercall(abi::HYPERVISOR_MULTICALL, [base, 3, 0, 0, 0]),
        Ok(0)
    );
    assert_eq!(lock(&t.handle()).hypercalls() - before, 1);
    let a = t.arena().1;
    let res: Vec<i64> = (0..3).map(|i| u64::get(&a[i * 64 + 8..]) as i64).collect();
    assert_eq!(
        res,
        vec![0, -i64::from(libc::EINVAL), -i64::from(libc::ENOSYS)]
    );
    assert_eq!(abi::GetVcpuInfo::decode(&a[1024 + 16..]).online, 1);
    lock(&t.handle()).refuse_multicall(Some(libc::ENOSYS));
    assert_eq!(
        t.hypercall(abi::HYPERVISOR_MULTICALL, [base, 3, 0, 0, 0]),
        Err(Errno(libc::ENOSYS))
    );
}

#[test]
fn fault_injection_counts_ops() {
    let mut t = sim(D, &[]);
    let h = t.handle();
    lock(&h).fail_nth(2, libc::EIO);
    abi::sysctl_header(t.arena().1, sysctl::PHYSINFO, V);
    assert_eq!(sysctl_call(&mut t), Ok(0));
    abi::sysctl_header(t.arena().1, sysctl::PHYSINFO, V);
    assert_eq!(sysctl_call(&mut t), Err(Errno(libc::EIO)));
    abi::sysctl_header(t.arena().1, sysctl::PHYSINFO, V);
    assert_eq!(sysctl_call(&mut t), Ok(0), "fires once");
    lock(&h).remove_domain_at(1, 1);
    abi::domctl_header(t.arena().1, domctl::GETDOMAININFO, V, 1);
    domctl_call(&mut t).unwrap();
    assert_eq!(
        RawDomainInfo::decode(&t.arena().1[16..]).domain,
        2,
        "4.17: next domain after removed 1"
    );
}

#[test]
fn cputopoinfo_and_cpupool_semantics() {
    let mut t = sim(
        S,
        &[
            ("cpus", "8"),
            ("max_cpus", "16"),
            ("offline", "3"),
            ("domains", "1"),
            ("vcpus", "1"),
        ],
    );
    let u = abi::sysctl_header(t.arena().1, sysctl::CPUTOPOINFO, V);
    abi::CpuTopoInfo::default().encode(u);
    sysctl_call(&mut t).unwrap();
    assert_eq!(
        abi::CpuTopoInfo::decode(&t.arena().1[8..]).num_cpus,
        8,
        "highest present + 1"
    );
    // a smaller array: filled partially, num_cpus tells the wanted count
    let u = abi::sysctl_header(t.arena().1, sysctl::CPUTOPOINFO, V);
    abi::CpuTopoInfo {
        num_cpus: 4,
        pad: 0,
        cputopo: SIM_ARENA_BASE + 1024,
    }
    .encode(u);
    t.arena().1[1024..1024 + 64].fill(0xEE);
    sysctl_call(&mut t).unwrap();
    let a = t.arena().1;
    assert_eq!(abi::CpuTopoInfo::decode(&a[8..]).num_cpus, 8);
    assert_eq!(
        abi::CpuTopo::decode(&a[1024 + 3 * 12..]).core,
        abi::XEN_INVALID_TOPO_ID,
        "offline cpu 3"
    );
    assert_eq!(a[1024 + 48], 0xEE, "only 4 entries written");
    // cpupool INFO returns the first pool with id >= asked
    let mut t = sim(D, &[]);
    let u = abi::sysctl_header(t.arena().1, sysctl::CPUPOOL_OP, V);
    abi::CpupoolOp {
        op: abi::cpupool_op::INFO,
        cpupool_id: 1,
        ..Default::default()
    }
    .encode(u);
    sysctl_call(&mut t).unwrap();
    let r = abi::CpupoolOp::decode(&t.arena().1[8..]);
    assert_eq!(
        (r.cpupool_id, r.sched_id, r.n_dom),
        (1, abi::sched::CREDIT, 1)
    );
    let u = abi::sysctl_header(t.arena().1, sysctl::CPUPOOL_OP, V);
    abi::CpupoolOp {
        op: abi::cpupool_op::INFO,
        cpupool_id: 2,
        ..Default::default()
    }
    .encode(u);
    assert_eq!(sysctl_call(&mut t), Err(Errno(libc::ENOENT)));
}

#[test]
fn host_specs() {
    let build = |base: SimBase, p: &[(&str, &str)]| {
        let q = p
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        HostSpec::build(&base, &q)
    };
    assert!(build(D, &[]).is_ok());
    assert!(build(D, &[("follow", "never"), ("delay_ms", "5")]).is_ok());
    assert!(build(S, &[("cpus", "64"), ("domains", "3")]).is_ok());
    let e = build(D, &[("bogus", "1")]).unwrap_err();
    assert!(e.message.contains("\"bogus\""), "{}", e.message);
    // a scale parameter on the built-in host is named, not silently ignored
    let e = build(D, &[("cpus", "8")]).unwrap_err();
    assert!(e.message.contains("scale host"), "{}", e.message);
    let h = SimHost::new(&build(D, &[]).unwrap()).unwrap();
    assert_eq!(h.nr_cpu_ids(), 64);
    assert_eq!(h.domain_names()[3], (3, "batch".to_string()));
    assert_eq!(h.pool_name(1).as_deref(), Some("batch-pool"));
}

#[test]
fn hypercall_level_faults() {
    let mut t = sim(D, &[]);
    lock(&t.handle()).fail_nth_hypercall(2, libc::EFAULT);
    assert!(t.hypercall(abi::HYPERVISOR_XEN_VERSION, [0; 5]).is_ok());
    assert_eq!(
        t.hypercall(abi::HYPERVISOR_XEN_VERSION, [0; 5]),
        Err(Errno(libc::EFAULT))
    );
    assert!(t.hypercall(abi::HYPERVISOR_XEN_VERSION, [0; 5]).is_ok());
}
