//! What resets a domain's placement on the simulated host: save + restore (a new domid, the
//! creation spec), cpupool-migrate (affinity reset to all), cpupool-cpu-remove (broken
//! affinity reset to all). Checked through the hypercall path, as a tool would see it.

use super::spec::test_spec;
use super::*;
use crate::cpumap::CpuMap;
use crate::error::ErrorKind;
use crate::ops::Xen;

fn open(params: &[(&str, &str)]) -> Xen {
    let x = Xen::open_sim(&test_spec(SimBase::Default, params)).unwrap();
    lock(x.sim().unwrap()).freeze_clock(true);
    x
}

fn map(list: &str) -> CpuMap {
    CpuMap::parse(list, 64, None).unwrap()
}

fn hard(x: &mut Xen, domid: u32) -> Vec<String> {
    let v = x.vcpus(domid).unwrap();
    v.iter().map(|v| v.hard.to_cpulist()).collect()
}

fn soft(x: &mut Xen, domid: u32) -> Vec<String> {
    let v = x.vcpus(domid).unwrap();
    v.iter().map(|v| v.soft.to_cpulist()).collect()
}

#[test]
fn restore_brings_a_domain_back_as_created_under_a_new_id() {
    let mut x = open(&[]);
    let h = x.sim().unwrap().clone();
    let before = x.domain(1).unwrap();
    x.pin(1, 2, Some(&map("5")), Some(&map("5")), false)
        .unwrap();
    lock(&h).set_availability(1, &[true, true]).unwrap();
    lock(&h).advance(std::time::Duration::from_secs(1));
    lock(&h).cpupool_migrate(1, 1).unwrap();
    lock(&h).set_pin_override(1, 0, true).unwrap();
    assert_eq!(x.domain(1).unwrap().nr_online_vcpus, 2);

    let id = lock(&h).restore_domain("web").unwrap();
    assert_eq!(id, 4, "the lowest free id above every id used so far");
    assert_eq!(x.domain(1).unwrap_err().kind, ErrorKind::DomainNotFound);
    let d = x.domain(4).unwrap();
    assert_eq!(d.uuid, before.uuid);
    assert_eq!((d.cpupool, d.max_vcpus, d.nr_online_vcpus), (0, 4, 4));
    assert_eq!(
        hard(&mut x, 4),
        ["2", "3", "0-63", "0-63"],
        "the creation pins"
    );
    assert_eq!(soft(&mut x, 4), ["0-7"; 4]);
    assert_eq!(lock(&h).availability(4), Some(vec![true; 4]));
    // the override went with the old domain
    x.pin(4, 0, Some(&map("6")), None, false).unwrap();
    let names = lock(&h).domain_names();
    assert_eq!(names.last(), Some(&(4, "web".to_string())));

    // again: above every id used so far, not the freed 1
    assert_eq!(lock(&h).restore_domain("web").unwrap(), 5);
    assert_eq!(hard(&mut x, 5)[0], "2");
    // a domain that vanished comes back by its name
    lock(&h).remove_domain(2).unwrap();
    assert_eq!(lock(&h).restore_domain("db").unwrap(), 6);
    assert_eq!(hard(&mut x, 6), ["16-31"; 8]);
    assert_eq!(x.domain(6).unwrap().nr_online_vcpus, 6);
    // and one removed midway through a batch, too
    lock(&h).remove_domain_at(1, 6);
    assert!(x.domain(6).is_err());
    assert_eq!(lock(&h).restore_domain("db").unwrap(), 7);

    let e = lock(&h).restore_domain("nobody").unwrap_err();
    assert_eq!(e.kind, ErrorKind::DomainNotFound);
    assert!(e.message.contains("web (5)"), "{}", e.message);
    let e = lock(&h).restore_domain("Domain-0").unwrap_err();
    assert_eq!(e.kind, ErrorKind::Other);
    assert!(e.message.contains("control domain"), "{}", e.message);
}

#[test]
fn new_domids_wrap_to_the_lowest_free_one() {
    let mut spec = test_spec(SimBase::Default, &[]);
    let top = (crate::abi::DOMID_FIRST_RESERVED - 1) as u16;
    spec.domains.push(DomSpec::new(top, "last", 1));
    let mut h = SimHost::new(&spec).unwrap();
    // web's id 1 is freed by the save, and is the first free one from 1
    assert_eq!(h.restore_domain("web").unwrap(), 1);
    assert_eq!(h.restore_domain("db").unwrap(), 2);
    assert_eq!(h.restore_domain("last").unwrap(), 4);
}

#[test]
fn cpupool_migrate_resets_affinity_to_all() {
    let mut x = open(&[]);
    let h = x.sim().unwrap().clone();
    x.pin(2, 0, Some(&map("16")), Some(&map("17")), false)
        .unwrap();
    // to its own pool: nothing changes
    lock(&h).cpupool_migrate(2, 0).unwrap();
    assert_eq!(hard(&mut x, 2)[0], "16");
    lock(&h).cpupool_migrate(2, 1).unwrap();
    assert_eq!(x.domain(2).unwrap().cpupool, 1);
    assert_eq!(hard(&mut x, 2), ["0-63"; 8]);
    assert_eq!(soft(&mut x, 2), ["0-63"; 8]);
    let cpus: Vec<Option<u32>> = x.vcpus(2).unwrap().iter().map(|v| v.cpu).collect();
    assert_eq!(
        &cpus[..6],
        [Some(48), Some(49), Some(50), Some(51), Some(52), Some(53)]
    );
    let pools = x.cpupools().unwrap();
    assert_eq!((pools[0].n_dom, pools[1].n_dom), (2, 2));
    // a pin now lands in the new pool's CPUs
    let p = x.pin(2, 0, Some(&map("40-55")), None, false).unwrap();
    assert_eq!(p.hard.unwrap().to_cpulist(), "48-55");

    let e = lock(&h).cpupool_migrate(2, 7).unwrap_err();
    assert_eq!((e.kind, e.errno), (ErrorKind::Other, Some(libc::ENOENT)));
    assert!(
        e.message.contains("0 (Pool-0), 1 (batch-pool)"),
        "{}",
        e.message
    );
    assert_eq!(
        lock(&h).cpupool_migrate(9, 1).unwrap_err().kind,
        ErrorKind::DomainNotFound
    );
    lock(&h).set_pin_override(1, 3, true).unwrap();
    let e = lock(&h).cpupool_migrate(1, 1).unwrap_err();
    assert_eq!((e.kind, e.vcpu), (ErrorKind::AffinityBusy, Some(3)));
    assert_eq!(x.domain(1).unwrap().cpupool, 0, "refused: nothing moved");
}

#[test]
fn removing_a_pool_cpu_breaks_only_affinities_left_without_a_cpu() {
    let mut x = open(&[]);
    let h = x.sim().unwrap().clone();
    x.pin(1, 2, Some(&map("47")), Some(&map("47")), false)
        .unwrap();
    x.pin(1, 3, Some(&map("46-47")), None, false).unwrap();
    lock(&h).pool_remove_cpu(0, 47).unwrap();
    assert_eq!(hard(&mut x, 1), ["2", "3", "0-63", "46-47"]);
    assert_eq!(soft(&mut x, 1)[2], "47", "soft affinity is kept");
    let v = x.vcpus(1).unwrap();
    assert_ne!(v[2].cpu, Some(47));
    assert_eq!(v[3].cpu, Some(46));
    assert_eq!(x.cpupools().unwrap()[0].cpus.to_cpulist(), "0-46");
    // CPU 47 is free now: a pin onto it alone has no CPU of the pool
    let e = x.pin(1, 0, Some(&map("47")), None, false).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidAffinity);

    let err = |pool, cpu| lock(&h).pool_remove_cpu(pool, cpu).unwrap_err();
    assert_eq!(err(0, 0).errno, Some(libc::EINVAL));
    assert_eq!(err(0, 47).errno, Some(libc::EADDRNOTAVAIL));
    assert_eq!(err(0, 50).errno, Some(libc::EADDRNOTAVAIL));
    assert_eq!(err(5, 1).errno, Some(libc::ENOENT));
    let e = err(0, 64);
    assert_eq!(e.kind, ErrorKind::CpuListError);
    assert!(e.message.contains("0-63"), "{}", e.message);
    // the last CPU of a pool with a live domain
    for c in 48..63 {
        lock(&h).pool_remove_cpu(1, c).unwrap();
    }
    assert_eq!(err(1, 63).errno, Some(libc::EBUSY));
    assert_eq!(hard(&mut x, 3), ["0-63"; 16]);
    // with a domain being destroyed only, it moves to pool 0
    lock(&h).set_dying(3, true).unwrap();
    lock(&h).pool_remove_cpu(1, 63).unwrap();
    assert_eq!(x.domain(3).unwrap().cpupool, 0);
    // a restore into a pool without CPUs is refused, and changes nothing
    lock(&h).remove_domain(3).unwrap();
    let e = lock(&h).restore_domain("batch").unwrap_err();
    assert_eq!(e.errno, Some(libc::ENODEV));
}

#[test]
fn an_override_on_an_affinity_to_break_refuses_the_removal() {
    let mut x = open(&[]);
    let h = x.sim().unwrap().clone();
    x.pin(1, 2, Some(&map("40")), None, false).unwrap();
    lock(&h).set_pin_override(1, 2, true).unwrap();
    let e = lock(&h).pool_remove_cpu(0, 40).unwrap_err();
    assert_eq!(
        (e.kind, e.errno, e.vcpu),
        (ErrorKind::AffinityBusy, Some(libc::EADDRINUSE), Some(2))
    );
    assert_eq!(x.cpupools().unwrap()[0].cpus.to_cpulist(), "0-47");
    // an override elsewhere does not matter
    lock(&h).set_pin_override(1, 2, false).unwrap();
    lock(&h).set_pin_override(1, 3, true).unwrap();
    lock(&h).pool_remove_cpu(0, 40).unwrap();
}
