use super::*;
use crate::ops::PinRequest;
use crate::sim::spec::test_spec as spec;
use crate::sim::{lock, Follow, SimBase, VcpuState};
use std::path::Path;

const D: SimBase = SimBase::Default;
const S: SimBase = SimBase::Scale;

fn open(base: SimBase, params: &[(&str, &str)]) -> Xen {
    let x = Xen::open_sim(&spec(base, params)).unwrap_or_else(|e| panic!("{params:?}: {e}"));
    lock(x.sim().unwrap()).freeze_clock(true);
    x
}

fn map(list: &str, width: usize) -> CpuMap {
    CpuMap::parse(list, width, None).unwrap()
}

fn ops(x: &Xen) -> u64 {
    lock(x.sim().unwrap()).ops()
}

fn calls(x: &Xen) -> u64 {
    lock(x.sim().unwrap()).hypercalls()
}

#[test]
fn default_host_physinfo_and_version() {
    let mut x = open(D, &[]);
    let v = x.version();
    assert_eq!(
        (v.major, v.minor, v.domctl, v.sysctl, v.dominfo_size),
        (4, 17, 0x15, 0x15, 112)
    );
    assert_eq!(x.width(), 64);
    let p = x.physinfo().unwrap();
    assert_eq!(
        (
            p.nr_cpus,
            p.max_cpu_id,
            p.threads_per_core,
            p.cores_per_socket
        ),
        (64, 63, 2, 16)
    );
    assert_eq!((p.nr_nodes, p.cpu_khz), (2, 2_400_000));
    assert_eq!(x.transport_name(), "sim");
}

#[test]
fn default_host_domains() {
    let mut x = open(D, &[]);
    let ds = x.domains().unwrap();
    assert_eq!(
        ds.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    assert_eq!(
        ds.iter().map(|d| d.max_vcpus).collect::<Vec<_>>(),
        vec![4, 4, 8, 16]
    );
    assert_eq!(
        ds.iter().map(|d| d.nr_online_vcpus).collect::<Vec<_>>(),
        vec![4, 4, 6, 12]
    );
    assert_eq!(ds[0].uuid, [0; 16]);
    assert_ne!(ds[1].uuid, ds[2].uuid);
    assert_eq!(ds[1].uuid_string().len(), 36);
    assert!(ds[2].hvm && !ds[1].hvm);
    assert_eq!(ds[3].cpupool, 1);
    assert!(ds.iter().all(|d| !d.dying && !d.shutdown));
    let names = lock(x.sim().unwrap()).domain_names();
    assert_eq!(names[0], (0, "Domain-0".to_string()));
    assert_eq!(
        names.iter().map(|n| n.1.as_str()).collect::<Vec<_>>(),
        ["Domain-0", "web", "db", "batch"]
    );
    // exact lookup equals the list entry
    assert_eq!(x.domain(2).unwrap(), ds[2]);
}

#[test]
fn exact_lookup_checks_the_returned_id_on_417() {
    let mut x = open(D, &[]);
    assert!(x.version().getdomaininfo_returns_next());
    lock(x.sim().unwrap()).remove_domain(2).unwrap();
    // Xen 4.17 answers getdomaininfo(2) with domain 3: must still be "not found"
    let e = x.domain(2).unwrap_err();
    assert_eq!((e.kind, e.domain), (ErrorKind::DomainNotFound, Some(2)));
    assert_eq!(x.domain(99).unwrap_err().kind, ErrorKind::DomainNotFound);
    let before = ops(&x);
    assert_eq!(
        x.domain(0x7FF0).unwrap_err().kind,
        ErrorKind::DomainNotFound
    );
    assert_eq!(
        ops(&x),
        before,
        "reserved ids are rejected without a hypercall"
    );
}

#[test]
fn exact_lookup_on_418_uses_esrch() {
    let mut x = open(D, &[("version", "4.18")]);
    assert!(!x.version().getdomaininfo_returns_next());
    assert_eq!(x.version().domctl, 0x16);
    lock(x.sim().unwrap()).remove_domain(2).unwrap();
    assert_eq!(x.domain(2).unwrap_err().kind, ErrorKind::DomainNotFound);
    assert_eq!(x.domain(3).unwrap().id, 3);
}

#[test]
fn vcpus_of_default_guests_in_one_batch() {
    let mut x = open(D, &[]);
    let c0 = calls(&x);
    let web = x.vcpus(1).unwrap();
    assert_eq!(calls(&x) - c0, 2, "getdomaininfo + one multicall");
    assert_eq!(web.len(), 4);
    assert_eq!(web[0].hard.to_cpulist(), "2");
    assert_eq!(web[1].hard.to_cpulist(), "3");
    assert_eq!(web[2].hard.to_cpulist(), "0-63");
    assert_eq!(web[0].soft.to_cpulist(), "0-7");
    assert_eq!(web[0].cpu, Some(2));
    assert!(web.iter().all(|v| v.online && v.hard.width() == 64));
    let db = x.vcpus(2).unwrap();
    assert_eq!(db.len(), 8);
    assert_eq!(db[6].state(), VcpuRunState::Offline);
    assert_eq!(db[6].cpu, None);
    assert_eq!(db[0].hard.to_cpulist(), "16-31");
    assert!(db[..6]
        .iter()
        .all(|v| v.online && v.cpu.is_some_and(|c| (16..32).contains(&c))));
    let states: std::collections::HashSet<_> = x
        .snapshot()
        .unwrap()
        .into_iter()
        .flat_map(|(_, r)| r.unwrap())
        .map(|v| v.state())
        .collect();
    for s in [
        VcpuRunState::Offline,
        VcpuRunState::Running,
        VcpuRunState::Blocked,
        VcpuRunState::Runnable,
    ] {
        assert!(states.contains(&s), "default host shows {s:?}");
    }
    assert_eq!(x.vcpu(2, 7).unwrap().number, 7);
    assert_eq!(x.vcpu(2, 8).unwrap_err().kind, ErrorKind::VcpuNotFound);
}

#[test]
fn cpu_time_advances_with_time_only_when_online() {
    let mut x = open(D, &[]);
    let a = x.vcpus(2).unwrap();
    let d0 = x.domain(2).unwrap().cpu_time_ns;
    lock(x.sim().unwrap()).advance(Duration::from_secs(2));
    let b = x.vcpus(2).unwrap();
    assert!(b[0].cpu_time_ns > a[0].cpu_time_ns);
    assert_eq!(
        b[7].cpu_time_ns, a[7].cpu_time_ns,
        "offline vCPU does not run"
    );
    assert!(x.domain(2).unwrap().cpu_time_ns > d0);
}

#[test]
fn pin_returns_effective_maps_and_get_returns_configured() {
    let mut x = open(D, &[]);
    // db lives in pool 0 = CPUs 0-47
    let p = x
        .pin(2, 1, Some(&map("40-50", 64)), Some(&map("0-45", 64)), false)
        .unwrap();
    assert_eq!(p.hard.unwrap().to_cpulist(), "40-47");
    assert_eq!(p.soft.unwrap().to_cpulist(), "40-45");
    let v = x.vcpu(2, 1).unwrap();
    assert_eq!(v.hard.to_cpulist(), "40-50");
    assert_eq!(v.soft.to_cpulist(), "0-45");
    assert!(v.cpu.is_some_and(|c| (40..=47).contains(&c)));
    // only soft: hard untouched, effective soft = soft ∩ pool ∩ hard
    let p = x.pin(2, 1, None, Some(&map("44-63", 64)), false).unwrap();
    assert_eq!(p.hard, None);
    assert_eq!(p.soft.unwrap().to_cpulist(), "44-47");
    assert_eq!(x.vcpu(2, 1).unwrap().hard.to_cpulist(), "40-50");
}

#[test]
fn disjoint_soft_is_accepted_and_effective_soft_is_empty() {
    // xen-interfaces.md §11: hard 0-1, soft 2-3 → accepted; get returns the configured soft
    let mut x = open(D, &[]);
    let p = x
        .pin(0, 1, Some(&map("0-1", 64)), Some(&map("2-3", 64)), false)
        .unwrap();
    assert!(p.soft.unwrap().is_empty());
    assert_eq!(x.vcpu(0, 1).unwrap().soft.to_cpulist(), "2-3");
}

#[test]
fn hard_outside_the_pool_is_invalid_affinity_naming_the_pool_cpus() {
    let mut x = open(D, &[]);
    let before = x.vcpu(2, 0).unwrap();
    let e = x
        .pin(2, 0, Some(&map("48-63", 64)), None, false)
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidAffinity);
    assert_eq!(
        (e.errno, e.domain, e.vcpu),
        (Some(libc::EINVAL), Some(2), Some(0))
    );
    assert!(e.message.contains("0-47"), "{}", e.message);
    assert_eq!(x.vcpu(2, 0).unwrap(), before, "nothing changed");
    // pool 1 domain: the message names pool 1's CPUs
    let e = x.pin(3, 0, Some(&map("0-3", 64)), None, false).unwrap_err();
    assert!(e.message.contains("48-63"), "{}", e.message);
}

#[test]
fn bad_input_is_rejected_before_any_hypercall() {
    let mut x = open(D, &[]);
    let n = ops(&x);
    let wide = CpuMap::from_cpus([1, 100], 128).unwrap();
    let e = x.pin(2, 0, Some(&wide), None, false).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidAffinity);
    assert!(
        e.message.contains("0-63") && e.message.contains("100"),
        "{}",
        e.message
    );
    let e = x
        .pin(2, 0, Some(&CpuMap::new(64).unwrap()), None, false)
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidAffinity);
    let e = x.pin(2, 0, None, None, false).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidAffinity);
    let e = x.pin_all(2, Some(&wide), None, false).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidAffinity);
    assert_eq!(ops(&x), n, "no hypercall for invalid maps");
    // a wider map whose CPUs all exist is fine (resized to the host width)
    let ok = CpuMap::from_cpus([5], 256).unwrap();
    assert_eq!(
        x.pin(2, 0, Some(&ok), None, false)
            .unwrap()
            .hard
            .unwrap()
            .to_cpulist(),
        "5"
    );
    // vCPU out of range: only the read-only lookup happened, nothing was set
    let before = x.vcpus(2).unwrap();
    let e = x.pin(2, 8, Some(&map("0", 64)), None, false).unwrap_err();
    assert_eq!(
        (e.kind, e.domain, e.vcpu),
        (ErrorKind::VcpuNotFound, Some(2), Some(8))
    );
    assert!(e.message.contains("valid vCPUs are 0-7"), "{}", e.message);
    assert_eq!(x.vcpus(2).unwrap(), before);
    assert_eq!(
        x.pin(42, 0, Some(&map("0", 64)), None, false)
            .unwrap_err()
            .kind,
        ErrorKind::DomainNotFound
    );
}

#[test]
fn pin_override_gives_affinity_busy_until_forced() {
    let mut x = open(D, &[]);
    lock(x.sim().unwrap()).set_pin_override(1, 2, true).unwrap();
    let e = x.pin(1, 2, Some(&map("4-5", 64)), None, false).unwrap_err();
    assert_eq!(
        (e.kind, e.errno),
        (ErrorKind::AffinityBusy, Some(libc::EBUSY))
    );
    assert!(e.message.contains("force"), "{}", e.message);
    assert_eq!(e.kind_name(), "AffinityBusy");
    assert_eq!(x.vcpu(1, 2).unwrap().hard.to_cpulist(), "0-63");
    let p = x.pin(1, 2, Some(&map("4-5", 64)), None, true).unwrap();
    assert_eq!(p.hard.unwrap().to_cpulist(), "4-5");
    // override cleared: no force needed any more
    x.pin(1, 2, Some(&map("6", 64)), None, false).unwrap();
}

#[test]
fn force_is_not_supported_before_4_7() {
    let mut x = open(D, &[("version", "4.6")]);
    let e = x.pin(1, 0, Some(&map("1", 64)), None, true).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotSupported);
}

#[test]
fn dying_domain() {
    let mut x = open(D, &[]);
    lock(x.sim().unwrap()).set_dying(3, true).unwrap();
    assert!(x.domain(3).unwrap().dying);
    let e = x.pin(3, 0, Some(&map("50", 64)), None, false).unwrap_err();
    assert_eq!((e.kind, e.domain), (ErrorKind::DomainDying, Some(3)));
    assert_eq!(
        x.pin_all(3, Some(&map("50", 64)), None, false)
            .unwrap_err()
            .kind,
        ErrorKind::DomainDying
    );
}

#[test]
fn pin_all_sets_every_vcpu_and_reports_each() {
    let mut x = open(D, &[]);
    let c0 = calls(&x);
    let r = x
        .pin_all(3, Some(&map("50-55", 64)), Some(&map("50-51", 64)), false)
        .unwrap();
    assert_eq!(calls(&x) - c0, 2, "lookup + one multicall for 16 vCPUs");
    assert_eq!(r.len(), 16);
    assert!(r
        .iter()
        .all(|(_, p)| p.as_ref().unwrap().hard.as_ref().unwrap().to_cpulist() == "50-55"));
    let vs = x.vcpus(3).unwrap();
    assert!(vs
        .iter()
        .all(|v| v.hard.to_cpulist() == "50-55" && v.soft.to_cpulist() == "50-51"));
}

#[test]
fn one_failing_vcpu_does_not_hide_the_others() {
    let mut x = open(D, &[]);
    lock(x.sim().unwrap()).drop_vcpu_slot(2, 3).unwrap();
    let r = x.pin_all(2, Some(&map("20-23", 64)), None, false).unwrap();
    for (v, res) in &r {
        if *v == 3 {
            let e = res.as_ref().unwrap_err();
            assert_eq!(
                (e.kind, e.vcpu, e.errno),
                (ErrorKind::VcpuNotFound, Some(3), Some(libc::ESRCH))
            );
        } else {
            assert_eq!(
                res.as_ref().unwrap().hard.as_ref().unwrap().to_cpulist(),
                "20-23"
            );
        }
    }
    // reading skips the missing slot but keeps the rest
    let vs = x.vcpus(2).unwrap();
    assert_eq!(
        vs.iter().map(|v| v.number).collect::<Vec<_>>(),
        vec![0, 1, 2, 4, 5, 6, 7]
    );
    // a per-entry fault on one entry fails only that vCPU
    let mut x = open(D, &[]);
    lock(x.sim().unwrap()).fail_nth(2 + 3, libc::EBUSY); // lookup, then entry for vCPU 3 is op 5
    let r = x.pin_all(3, Some(&map("48", 64)), None, false).unwrap();
    let bad: Vec<u32> = r
        .iter()
        .filter(|(_, p)| p.is_err())
        .map(|(v, _)| *v)
        .collect();
    assert_eq!(bad, vec![3]);
    assert_eq!(r[3].1.as_ref().unwrap_err().kind, ErrorKind::AffinityBusy);
}

#[test]
fn refused_multicall_falls_back_to_single_calls_with_same_results() {
    let mut a = open(D, &[]);
    let mut b = open(D, &[]);
    lock(b.sim().unwrap()).refuse_multicall(Some(libc::ENOSYS));
    // same simulated clock offset: freeze CPU time differences out by comparing maps/states
    let va = a.vcpus(3).unwrap();
    let c0 = calls(&b);
    let vb = b.vcpus(3).unwrap();
    assert!(!b.multicall_enabled());
    assert_eq!(
        calls(&b) - c0,
        1 + 1 + 32,
        "lookup, refused batch, 2 singles per vCPU"
    );
    let strip = |v: &[VcpuInfo]| {
        v.iter()
            .map(|i| (i.number, i.online, i.cpu, i.hard.clone(), i.soft.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&va), strip(&vb));
    let c1 = calls(&b);
    b.vcpus(1).unwrap();
    assert_eq!(calls(&b) - c1, 1 + 8, "no more batch attempts after ENOSYS");
    let p = b.pin(2, 0, Some(&map("40-60", 64)), None, false).unwrap();
    assert_eq!(p.hard.unwrap().to_cpulist(), "40-47");
    // EINVAL refusal behaves the same
    let mut c = open(D, &[]);
    lock(c.sim().unwrap()).refuse_multicall(Some(libc::EINVAL));
    assert_eq!(c.vcpus(2).unwrap().len(), 8);
    assert!(!c.multicall_enabled());
}

#[test]
fn errno_mapping_of_failed_calls() {
    for (errno, kind) in [
        (libc::EACCES, ErrorKind::InterfaceMismatch),
        (libc::EPERM, ErrorKind::PermissionDenied),
        (libc::ENOSYS, ErrorKind::NotSupported),
        (libc::EIO, ErrorKind::Other),
    ] {
        let mut x = open(D, &[]);
        lock(x.sim().unwrap()).fail_nth(1, errno);
        let e = x.physinfo().unwrap_err();
        assert_eq!((e.kind, e.errno), (kind, Some(errno)), "{}", e.message);
    }
    let x = open(D, &[]);
    let e = x.errno_error(Errno(libc::EPERM), "sysctl physinfo");
    assert!(e
        .message
        .contains("run as root in the control domain (dom0)"));
    let e = x.errno_error(Errno(libc::EACCES), "domctl");
    assert!(e.message.contains("0x15"), "{}", e.message);
}

#[test]
fn domain_removed_between_calls() {
    let mut x = open(D, &[]);
    // vcpus(2): op 1 = lookup, the batch follows; remove it right before the batch
    lock(x.sim().unwrap()).remove_domain_at(2, 2);
    let e = x.vcpus(2).unwrap_err();
    assert_eq!((e.kind, e.domain), (ErrorKind::DomainNotFound, Some(2)));
    // bulk: domain 2 vanishes after the list was read, before its first vCPU (the list
    // page, then two entries per vCPU of Domain-0 and web); the others still answer
    let mut x = open(D, &[]);
    lock(x.sim().unwrap()).remove_domain_at(1 + 2 * 4 + 2 * 4 + 1, 2);
    let r = x.snapshot().unwrap();
    assert_eq!(
        r.iter().map(|x| x.0.id).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    assert_eq!(r[1].1.as_ref().unwrap().len(), 4);
    assert_eq!(r[2].1.as_ref().unwrap_err().kind, ErrorKind::DomainNotFound);
    assert_eq!(r[3].1.as_ref().unwrap().len(), 16);
}

#[test]
fn unknown_xen_version_is_a_typed_error_naming_it() {
    let e = Xen::open_sim(&spec(D, &[("version", "4.22")])).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InterfaceMismatch);
    assert!(e.message.contains("Xen 4.22"), "{}", e.message);
    assert_eq!(e.kind_name(), "InterfaceMismatch");
    let e = Xen::open_sim(&spec(D, &[("version", "4.5")])).unwrap_err();
    assert!(e.message.contains("Xen 4.5"));
}

#[test]
fn xen_4_10_split_is_probed() {
    let x = open(D, &[("version", "4.10.0")]);
    assert_eq!((x.version().domctl, x.version().dominfo_size), (0x0e, 96));
    let mut x = open(D, &[("version", "4.10.2")]);
    assert_eq!((x.version().domctl, x.version().dominfo_size), (0x0f, 104));
    assert_eq!(x.domains().unwrap().len(), 4);
}

#[test]
fn every_supported_release_gives_the_same_answers() {
    let reference = {
        let mut x = open(D, &[]);
        (
            x.physinfo().unwrap(),
            x.domains().unwrap().len(),
            x.vcpus(2).unwrap().len(),
        )
    };
    for minor in 6..=21 {
        let uri = format!("4.{minor}");
        let mut x = open(D, &[("version", &uri)]);
        assert_eq!(x.version().minor, minor);
        let p = x.physinfo().unwrap();
        assert_eq!(
            (p.nr_cpus, p.max_cpu_id, p.cpu_khz, p.total_pages),
            (64, 63, reference.0.cpu_khz, reference.0.total_pages),
            "{uri}"
        );
        let ds = x.domains().unwrap();
        assert_eq!(ds.len(), reference.1, "{uri}");
        assert_eq!(ds[3].cpupool, 1, "{uri}: cpupool read at the shared offset");
        assert_eq!(ds[2].max_vcpus, 8, "{uri}");
        assert_eq!(x.vcpus(2).unwrap().len(), reference.2, "{uri}");
        let p = x.pin(2, 0, Some(&map("1-2", 64)), None, false).unwrap();
        assert_eq!(p.hard.unwrap().to_cpulist(), "1-2", "{uri}");
    }
}

#[test]
fn sparse_cpu_ids_and_topology() {
    let mut x = open(
        S,
        &[
            ("cpus", "16"),
            ("offline", "4-7"),
            ("max_cpus", "24"),
            ("domains", "2"),
            ("vcpus", "2"),
            ("sockets", "2"),
            ("nodes", "2"),
        ],
    );
    let p = x.physinfo().unwrap();
    assert_eq!((p.nr_cpus, p.max_cpu_id), (12, 23));
    assert_eq!(x.width(), 24);
    let t = x.topology().unwrap();
    assert_eq!(t.len(), 24);
    assert_eq!(
        t[0],
        Some(CpuTopology {
            core: Some(0),
            socket: Some(0),
            node: Some(0)
        })
    );
    assert_eq!(
        t[9],
        Some(CpuTopology {
            core: Some(0),
            socket: Some(1),
            node: Some(1)
        })
    );
    assert_eq!(t[4].unwrap().core, None, "offline CPU: no core id");
    assert_eq!(t[20], None, "not present");
    assert_eq!(x.online_cpus().unwrap().to_cpulist(), "0-3,8-15");
    let v = x.vcpus(1).unwrap();
    assert_eq!(v[0].hard.width(), 24);
    let p = x.pin(1, 0, Some(&map("2-10", 24)), None, false).unwrap();
    assert_eq!(
        p.hard.unwrap().to_cpulist(),
        "2-3,8-10",
        "offline CPUs are not effective"
    );
    let e = x.pin(1, 0, Some(&map("4-7", 24)), None, false).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidAffinity);
}

#[test]
fn cpupools_and_topology() {
    let mut x = open(D, &[]);
    let p = x.cpupools().unwrap();
    assert_eq!(p.len(), 2);
    assert_eq!(
        (p[0].id, p[0].sched_id, p[0].n_dom, p[0].cpus.to_cpulist()),
        (0, 6, 3, "0-47".to_string())
    );
    assert_eq!(
        (p[1].id, p[1].sched_id, p[1].n_dom, p[1].cpus.to_cpulist()),
        (1, 5, 1, "48-63".to_string())
    );
    assert_eq!(x.online_cpus().unwrap().to_cpulist(), "0-63");
    let t = x.topology().unwrap();
    assert_eq!(
        t[63],
        Some(CpuTopology {
            core: Some(15),
            socket: Some(1),
            node: Some(1)
        })
    );
}

#[test]
fn scale_host_snapshot() {
    let mut x = open(
        S,
        &[
            ("cpus", "4096"),
            ("nodes", "4"),
            ("domains", "1000"),
            ("vcpus", "8"),
        ],
    );
    assert_eq!(x.width(), 4096);
    let c0 = calls(&x);
    let snap = x.snapshot().unwrap();
    let used = calls(&x) - c0;
    assert_eq!(snap.len(), 1001);
    let n: usize = snap.iter().map(|(_, r)| r.as_ref().unwrap().len()).sum();
    assert_eq!(n, 4 + 8000);
    // 4 list pages + ~8004·2 entries in 256 KiB chunks: far fewer traps than 16008 domctls
    assert!(used < 200, "{used} hypercalls");
    let d = &snap[20];
    assert_eq!(
        d.0.nr_online_vcpus, 4,
        "every 5th guest has half its vCPUs online"
    );
    assert_eq!(
        d.1.as_ref().unwrap()[0].hard.count(),
        1024,
        "every 4th guest is pinned to a node"
    );
    let (per, _) = bench_snapshot(&mut x, 1).unwrap();
    assert_eq!(per, 8004);
    assert!(
        x.t.arena().1.len() <= crate::privcmd::BUFDEV_DEFAULT_LIMIT,
        "the arena stays within /dev/xen/hypercall's default per-file limit"
    );
}

#[test]
fn sixty_five_thousand_cpus() {
    let mut x = open(
        S,
        &[
            ("cpus", "65536"),
            ("nodes", "8"),
            ("domains", "2"),
            ("vcpus", "2"),
        ],
    );
    assert_eq!(x.width(), 65536);
    let m = CpuMap::from_cpus([65535], 65536).unwrap();
    let p = x.pin(1, 1, Some(&m), None, false).unwrap();
    assert_eq!(p.hard.unwrap().to_cpulist(), "65535");
    let v = x.vcpu(1, 1).unwrap();
    assert_eq!(v.cpu, Some(65535));
    assert_eq!(v.soft.count(), 65536);
}

#[test]
fn availability_is_followed_after_the_delay_or_never() {
    let mut x = open(D, &[("delay_ms", "1000")]);
    let h = x.sim().unwrap().clone();
    lock(&h).set_availability(2, &[true; 8]).unwrap();
    assert_eq!(x.domain(2).unwrap().nr_online_vcpus, 6, "not yet");
    assert_eq!(lock(&h).availability(2).unwrap(), vec![true; 8]);
    lock(&h).advance(Duration::from_millis(1001));
    assert_eq!(x.domain(2).unwrap().nr_online_vcpus, 8);
    lock(&h).set_availability(2, &[true, true]).unwrap();
    lock(&h).advance(Duration::from_secs(2));
    assert_eq!(x.domain(2).unwrap().nr_online_vcpus, 2);
    assert_eq!(x.vcpus(2).unwrap()[5].state(), VcpuRunState::Offline);
    lock(&h).set_follow(Follow::Never);
    lock(&h).set_availability(2, &[true; 4]).unwrap();
    lock(&h).advance(Duration::from_secs(60));
    assert_eq!(x.domain(2).unwrap().nr_online_vcpus, 2);
    let e = lock(&h).set_availability(2, &[true; 9]).unwrap_err();
    assert_eq!(e.kind, ErrorKind::VcpuCountError);
    assert_eq!(
        lock(&h).set_availability(2, &[false; 8]).unwrap_err().kind,
        ErrorKind::VcpuCountError
    );
    assert_eq!(
        lock(&h).set_availability(9, &[true]).unwrap_err().kind,
        ErrorKind::DomainNotFound
    );
    let mut y = open(D, &[("delay_ms", "0")]);
    lock(y.sim().unwrap())
        .set_availability(3, &[true; 16])
        .unwrap();
    assert_eq!(y.domain(3).unwrap().nr_online_vcpus, 16, "immediate");
}

#[test]
fn domain_flags_decoded() {
    let mut x = open(D, &[]);
    {
        let mut h = lock(x.sim().unwrap());
        h.set_shutdown(1, Some(3)).unwrap();
        for v in 0..4 {
            h.set_vcpu_state(1, v, VcpuState::Blocked).unwrap();
        }
    }
    let d = x.domain(1).unwrap();
    assert!(d.shutdown && d.blocked && !d.running);
    assert_eq!(d.shutdown_code, Some(3));
    lock(x.sim().unwrap())
        .set_vcpu_state(1, 2, VcpuState::Running)
        .unwrap();
    let d = x.domain(1).unwrap();
    assert!(d.running && !d.blocked);
    lock(x.sim().unwrap()).set_availability(1, &[true]).ok();
}

#[test]
fn toml_host() {
    let dir = std::env::temp_dir().join(format!("xenvcpu-toml-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("host.toml");
    std::fs::write(
        &f,
        r#"
[host]
cpus = 8
sockets = 1
threads = 2
nodes = 1
version = "4.19"
offline = "7"

[[pool]]
id = 2
name = "rt"
sched = "credit"
cpus = "4-5"

[[domain]]
id = 0
name = "Domain-0"
vcpus = 2

[[domain]]
id = 7
name = "rt-guest"
vcpus = 3
online = "0-1"
pool = 2
uuid = "00112233-4455-6677-8899-aabbccddeeff"
"#,
    )
    .unwrap();
    let mut x =
        Xen::open_sim(&HostSpec::build(&SimBase::Toml(f.clone()), &Default::default()).unwrap())
            .unwrap();
    assert_eq!(x.version().minor, 19);
    let ds = x.domains().unwrap();
    assert_eq!(ds.iter().map(|d| d.id).collect::<Vec<_>>(), vec![0, 7]);
    assert_eq!(ds[1].uuid_string(), "00112233-4455-6677-8899-aabbccddeeff");
    assert_eq!(
        (ds[1].nr_online_vcpus, ds[1].max_vcpus, ds[1].cpupool),
        (2, 3, 2)
    );
    let pools = x.cpupools().unwrap();
    assert_eq!(
        pools
            .iter()
            .map(|p| (p.id, p.cpus.to_cpulist()))
            .collect::<Vec<_>>(),
        vec![(0, "0-3,6".to_string()), (2, "4-5".to_string())]
    );
    assert_eq!(
        lock(x.sim().unwrap()).domain_names()[1],
        (7, "rt-guest".to_string())
    );
    let e = x.pin(7, 0, Some(&map("0-3", 8)), None, false).unwrap_err();
    assert!(e.message.contains("4-5"), "{}", e.message);
    let missing = SimBase::Toml(dir.join("missing.toml"));
    let e = HostSpec::build(&missing, &Default::default()).unwrap_err();
    assert!(e.message.contains("missing.toml"), "{}", e.message);
}

#[test]
fn privcmd_on_a_non_privcmd_fd_is_no_hypervisor() {
    let t = Privcmd::open_paths(Path::new("/dev/null"), None, None).unwrap();
    let e = Xen::with_transport(Box::new(t), None).unwrap_err();
    assert_eq!(
        (e.kind, e.errno),
        (ErrorKind::NoHypervisor, Some(libc::ENOTTY))
    );
    assert_eq!(e.kind_name(), "NoHypervisor");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// effective hard = requested ∩ pool online; EINVAL (InvalidAffinity) exactly when empty;
    /// effective soft = soft ∩ pool ∩ hard; get returns what was configured.
    #[test]
    fn pin_matches_xen_rules(hard in proptest::collection::vec(0u64..64, 0..12),
                             soft in proptest::collection::vec(0u64..64, 0..12),
                             vcpu in 0u32..8) {
        let mut x = open(D, &[]);
        let pool = map("0-47", 64);
        let h = CpuMap::from_cpus(hard.iter().copied(), 64).unwrap();
        let s = CpuMap::from_cpus(soft.iter().copied(), 64).unwrap();
        let before = x.vcpu(2, vcpu).unwrap();
        let r = x.pin(2, vcpu, Some(&h), Some(&s), false);
        let eff_h = h.intersection(&pool).unwrap();
        if eff_h.is_empty() {
            let e = r.unwrap_err();
            proptest::prop_assert_eq!(e.kind, ErrorKind::InvalidAffinity);
            proptest::prop_assert_eq!(x.vcpu(2, vcpu).unwrap(), before);
        } else {
            let p = r.unwrap();
            proptest::prop_assert_eq!(p.hard.unwrap(), eff_h);
            proptest::prop_assert_eq!(p.soft.unwrap(), s.intersection(&pool).unwrap().intersection(&h).unwrap());
            let now = x.vcpu(2, vcpu).unwrap();
            proptest::prop_assert_eq!(now.hard, h);
            proptest::prop_assert_eq!(now.soft, s);
        }
    }
}

#[test]
fn batching_off_gives_the_same_answers_with_one_call_per_domctl() {
    let mut x = open(D, &[]);
    let batched = x.snapshot().unwrap();
    x.set_batching(false);
    let c0 = calls(&x);
    let single = x.snapshot().unwrap();
    assert_eq!(calls(&x) - c0, 1 + 2 * (4 + 4 + 8 + 16));
    assert_eq!(batched, single, "frozen clock: identical results");
    x.set_batching(true);
    assert!(x.multicall_enabled());
}

#[test]
fn xen_is_send() {
    fn is_send<T: Send>() {}
    is_send::<Xen>();
    is_send::<Error>();
}

#[test]
fn open_privcmd_without_xen_is_no_hypervisor() {
    if !Path::new(crate::privcmd::DEV_PRIVCMD).exists()
        && !Path::new(crate::privcmd::PROC_PRIVCMD).exists()
    {
        let e = Xen::open_privcmd().unwrap_err();
        assert_eq!(
            (e.kind, e.errno),
            (ErrorKind::NoHypervisor, Some(libc::ENOENT))
        );
    }
}

#[test]
fn paused_domain_reports_no_running_vcpu() {
    let mut x = open(D, &[]);
    lock(x.sim().unwrap()).set_paused(0, true).unwrap();
    let d = x.domain(0).unwrap();
    assert!(d.paused && !d.running);
    assert!(x.vcpus(0).unwrap().iter().all(|v| !v.running));
}

#[test]
fn open_time_errors() {
    // xen_version refused (e.g. a restricted privcmd fd): PermissionDenied with the fix
    let mut host = SimHost::new(&spec(D, &[])).unwrap();
    host.fail_nth_hypercall(1, libc::EPERM);
    let e = Xen::with_transport(Box::new(SimTransport::new(host)), None).unwrap_err();
    assert_eq!(
        (e.kind, e.errno),
        (ErrorKind::PermissionDenied, Some(libc::EPERM))
    );
    assert!(e.message.contains("dom0"));
    // 4.10 where neither candidate is accepted: InterfaceMismatch listing both
    let mut host = SimHost::new(&spec(D, &[("version", "4.10.0")])).unwrap();
    host.fail_nth(2, libc::EACCES); // probe 1 (0x0f) fails by itself, probe 2 (0x0e) injected
    let e = Xen::with_transport(Box::new(SimTransport::new(host)), None).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InterfaceMismatch);
    assert!(
        e.message.contains("0x0f") && e.message.contains("0x0e"),
        "{}",
        e.message
    );
    // sysctl refused at open (physinfo): InterfaceMismatch naming the versions used
    let mut host = SimHost::new(&spec(D, &[])).unwrap();
    host.fail_nth(1, libc::EACCES);
    let e = Xen::with_transport(Box::new(SimTransport::new(host)), None).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InterfaceMismatch);
    assert!(e.message.contains("Xen 4.17"), "{}", e.message);
}

#[test]
fn pin_all_errors_do_not_clobber_other_entries_results() {
    // every vCPU refused: each gets InvalidAffinity naming the pool, nothing changes
    let mut y = open(D, &[]);
    let before = y.vcpus(2).unwrap();
    let r = y.pin_all(2, Some(&map("48-63", 64)), None, false).unwrap();
    assert_eq!(r.len(), 8);
    for (v, res) in &r {
        let e = res.as_ref().unwrap_err();
        assert_eq!(
            (e.kind, e.vcpu),
            (ErrorKind::InvalidAffinity, Some(*v)),
            "{e:?}"
        );
        assert!(e.message.contains("0-47"), "{}", e.message);
    }
    assert_eq!(y.vcpus(2).unwrap(), before);
    // a big domain with one early failure: later entries keep their own results
    let mut x = open(S, &[("cpus", "64"), ("domains", "1"), ("vcpus", "64")]);
    lock(x.sim().unwrap()).fail_nth(2, libc::EINVAL); // lookup, then vCPU 0's entry
    lock(x.sim().unwrap()).drop_vcpu_slot(1, 40).unwrap();
    let r = x.pin_all(1, Some(&map("0-3", 64)), None, false).unwrap();
    assert_eq!(r.len(), 64);
    for (v, res) in &r {
        match v {
            0 => assert_eq!(res.as_ref().unwrap_err().kind, ErrorKind::InvalidAffinity),
            40 => assert_eq!(res.as_ref().unwrap_err().kind, ErrorKind::VcpuNotFound),
            _ => assert_eq!(
                res.as_ref().unwrap().hard.as_ref().unwrap().to_cpulist(),
                "0-3",
                "vCPU {v}"
            ),
        }
    }
}

#[test]
fn pin_many_batches_across_domains_and_validates_first() {
    let mut x = open(D, &[]);
    let (a, b) = (map("0-7", 64), map("16-23", 64));
    let reqs: Vec<PinRequest> = (0..4)
        .map(|v| PinRequest {
            domid: 1,
            vcpu: v,
            hard: Some(&a),
            soft: None,
        })
        .chain((0..8).map(|v| PinRequest {
            domid: 2,
            vcpu: v,
            hard: Some(&b),
            soft: Some(&b),
        }))
        .collect();
    let c0 = calls(&x);
    let r = x.pin_many(&reqs, false).unwrap();
    // one domain list, one batch for all twelve pins
    assert_eq!(calls(&x) - c0, 2);
    assert!(r.iter().all(Result::is_ok));
    assert_eq!(x.vcpu(1, 3).unwrap().hard, a);
    assert_eq!(x.vcpu(2, 7).unwrap().soft, b);
    // a bad request anywhere: nothing changes
    let before = x.snapshot().unwrap();
    for bad in [
        PinRequest {
            domid: 1,
            vcpu: 4,
            hard: Some(&b),
            soft: None,
        },
        PinRequest {
            domid: 2,
            vcpu: 8,
            hard: Some(&a),
            soft: None,
        },
    ] {
        let e = x.pin_many(&[reqs[0], bad], false).unwrap_err();
        assert!(
            matches!(e.kind, ErrorKind::VcpuNotFound | ErrorKind::InvalidAffinity)
                || e.domain == Some(1),
            "{e:?}"
        );
    }
    let e = x
        .pin_many(
            &[PinRequest {
                domid: 77,
                vcpu: 0,
                hard: Some(&a),
                soft: None,
            }],
            false,
        )
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::DomainNotFound);
    let empty = CpuMap::new(64).unwrap();
    let e = x
        .pin_many(
            &[PinRequest {
                domid: 1,
                vcpu: 0,
                hard: Some(&empty),
                soft: None,
            }],
            false,
        )
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidAffinity);
    assert_eq!(x.snapshot().unwrap(), before);
}

#[test]
fn pin_many_a_domain_gone_midway_fails_only_its_own_pins() {
    let mut x = open(D, &[]);
    let a = map("0-7", 64);
    let reqs: Vec<PinRequest> = [(1, 0), (2, 0), (2, 1), (0, 0)]
        .into_iter()
        .map(|(d, v)| PinRequest {
            domid: d,
            vcpu: v,
            hard: Some(&a),
            soft: None,
        })
        .collect();
    // the list is op 1; domain 2 vanishes before the batch's first entry
    lock(x.sim().unwrap()).remove_domain_at(2, 2);
    let r = x.pin_many(&reqs, false).unwrap();
    assert!(r[0].is_ok() && r[3].is_ok(), "{r:?}");
    for e in [&r[1], &r[2]] {
        assert_eq!(e.as_ref().unwrap_err().errno, Some(libc::ESRCH));
    }
}
