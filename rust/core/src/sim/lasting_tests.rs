//! Lasting hosts: one host in a state file, seen by every handle that opens it.

use super::spec::test_spec;
use super::*;
use crate::cpumap::CpuMap;
use crate::error::ErrorKind;
use crate::ops::Xen;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A directory of its own, removed afterwards.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "xenvcpu-state-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn file(&self) -> PathBuf {
        self.0.join("host.json")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn spec(params: &[(&str, &str)]) -> HostSpec {
    test_spec(SimBase::Default, params)
}

fn open(path: &Path) -> Xen {
    Xen::open_sim_state(&spec(&[]), path).unwrap()
}

fn map(list: &str) -> CpuMap {
    CpuMap::parse(list, 64, None).unwrap()
}

fn hard(x: &mut Xen, domid: u32) -> Vec<String> {
    let v = x.vcpus(domid).unwrap();
    v.iter().map(|v| v.hard.to_cpulist()).collect()
}

/// The state as its file would hold it.
fn state_of(h: &SimHandle, path: &Path) -> Vec<u8> {
    let g = lock(h);
    state::encode(&g, &state::describe(&spec(&[]))).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

#[test]
fn two_handles_see_one_host() {
    let dir = TempDir::new();
    let path = dir.file();
    let mut a = open(&path);
    assert!(path.exists(), "made from the description");
    let mut b = open(&path);
    a.pin(1, 2, Some(&map("5")), None, false).unwrap();
    assert_eq!(hard(&mut b, 1)[2], "5");
    let (ha, hb) = (a.sim().unwrap().clone(), b.sim().unwrap().clone());
    assert_eq!(ha.state_path().as_deref(), Some(path.as_path()));
    let id = hb.with(|h| h.restore_domain("web")).unwrap().unwrap();
    assert_eq!(id, 4);
    assert!(a.domain(1).is_err());
    assert_eq!(hard(&mut a, 4)[2], "0-63");
    // faults injected through one handle fire on the other's calls
    ha.with(|h| h.fail_nth(1, libc::EBUSY)).unwrap();
    assert_eq!(b.domain(0).unwrap_err().errno, Some(libc::EBUSY));
    assert!(a.domain(0).is_ok(), "fired once");
    // everything else too: clock, pending follow-ups, pools, counters, release
    ha.with(|h| {
        h.freeze_clock(true);
        h.advance(Duration::from_secs(3));
        h.set_follow(Follow::After(Duration::from_secs(10)));
        h.set_availability(4, &[true]).unwrap();
        h.cpupool_migrate(2, 1).unwrap();
        h.pool_remove_cpu(0, 47).unwrap();
        h.set_pin_override(3, 1, true).unwrap();
        h.refuse_multicall(Some(libc::ENOSYS));
        h.remove_domain_at(100, 3);
        h.set_release(4, 17, 9);
    })
    .unwrap();
    hb.with(|_| ()).unwrap();
    assert_eq!(state_of(&ha, &path), state_of(&hb, &path));
    let (ops, calls) = hb.with(|h| (h.ops(), h.hypercalls())).unwrap();
    assert_eq!(
        ha.with(|h| (h.ops(), h.hypercalls())).unwrap(),
        (ops, calls)
    );
    // the pending follow-up happens for every handle once its time has come
    hb.with(|h| h.advance(Duration::from_secs(10))).unwrap();
    assert_eq!(a.domain(4).unwrap().nr_online_vcpus, 1);
    // a third handle, opened now, loads all of it
    let c = open(&path);
    let hc = c.sim().unwrap().clone();
    hc.with(|_| ()).unwrap();
    ha.with(|_| ()).unwrap();
    assert_eq!(state_of(&hc, &path), state_of(&ha, &path));
    assert_eq!(hc.with(|h| h.release).unwrap(), (4, 17, 9));
}

#[test]
fn the_clock_lasts_across_handles_frozen_or_running() {
    let dir = TempDir::new();
    let path = dir.file();
    let a = open(&path);
    let ha = a.sim().unwrap().clone();
    ha.with(|h| {
        h.freeze_clock(true);
        h.advance(Duration::from_secs(5));
    })
    .unwrap();
    let t = ha.with(|h| h.now()).unwrap();
    drop(a);
    std::thread::sleep(Duration::from_millis(20));
    let b = open(&path);
    let hb = b.sim().unwrap().clone();
    assert_eq!(hb.with(|h| h.now()).unwrap(), t, "frozen");
    hb.with(|h| h.freeze_clock(false)).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let later = open(&path);
    let t2 = later.sim().unwrap().with(|h| h.now()).unwrap();
    assert!(t2 >= t + 20_000_000, "running on wall time: {t2} vs {t}");
}

#[test]
fn concurrent_writers_lose_no_update() {
    let dir = TempDir::new();
    let path = dir.file();
    let first = open(&path);
    first.sim().unwrap().with(|h| h.freeze_clock(true)).unwrap();
    let (threads, rounds) = (4, 25);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                // each its own handle: its own lock file description, as another process has
                let x = open(&path);
                let h = x.sim().unwrap().clone();
                for _ in 0..rounds {
                    h.with(|h| h.advance(Duration::from_nanos(1))).unwrap();
                }
            });
        }
    });
    let h = first.sim().unwrap();
    let (offset, frozen) = h.with(|h| (h.offset_ns, h.frozen_at)).unwrap();
    assert!(frozen.is_some());
    assert_eq!(offset, threads * rounds);
}

#[test]
fn a_missing_file_is_a_fresh_host() {
    let dir = TempDir::new();
    let path = dir.file();
    let mut a = open(&path);
    a.pin(1, 2, Some(&map("5")), None, false).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(hard(&mut a, 1)[2], "0-63");
    assert!(path.exists());
}

#[test]
fn another_description_is_refused_by_name() {
    let dir = TempDir::new();
    let path = dir.file();
    drop(open(&path));
    for (params, says) in [
        (&[("version", "4.10")][..], "made for Xen 4.17.5"),
        (&[("offline", "60-63")], "offline CPUs"),
        (&[("follow", "never")], "follow"),
    ] {
        let e = Xen::open_sim_state(&spec(params), &path).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Other);
        assert!(e.message.contains(says), "{params:?}: {}", e.message);
        assert!(e.message.contains("another description"), "{}", e.message);
    }
    let scale = test_spec(SimBase::Scale, &[("cpus", "8")]);
    let e = Xen::open_sim_state(&scale, &path).unwrap_err();
    assert!(e.message.contains("sockets"), "{}", e.message);
    let e = Xen::open_sim_state(&spec(&[]), Path::new("relative.json")).unwrap_err();
    assert!(e.message.contains("absolute"), "{}", e.message);
}

/// A valid state file with one value replaced: the first `from` after `after`.
fn edited_after(path: &Path, after: &str, from: &str, to: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(path).unwrap();
    let at = text
        .find(after)
        .unwrap_or_else(|| panic!("{after} not in the state"));
    let (head, tail) = text.split_at(at);
    assert!(tail.contains(from), "{from} not in the state");
    format!("{head}{}", tail.replacen(from, to, 1)).into_bytes()
}

/// The same, in the host's state (after its description).
fn edited(path: &Path, from: &str, to: &str) -> Vec<u8> {
    edited_after(path, "\"clock\":", from, to)
}

#[test]
fn corrupt_or_hostile_state_files_are_typed_errors() {
    let dir = TempDir::new();
    let path = dir.file();
    let mut a = open(&path);
    let good = std::fs::read(&path).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("garbage", b"\x00\xffnot json".to_vec()),
        ("a number", b"42".to_vec()),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("deep", "[".repeat(100_000).into_bytes()),
        (
            "another format",
            edited_after(&path, "{", "xenvcpu-sim-state/1", "xenvcpu-sim-state/9"),
        ),
        (
            "unknown field",
            edited(&path, "\"ops\":", "\"bogus\":1,\"ops\":"),
        ),
        (
            "a vCPU on no CPU of the host",
            edited(&path, "\"cpu\":0,", "\"cpu\":64,"),
        ),
        (
            "a CPU beyond the host",
            edited(&path, "\"hard\":\"0-63\"", "\"hard\":\"0-64\""),
        ),
        (
            "a huge range",
            edited(&path, "\"hard\":\"0-63\"", "\"hard\":\"0-4294967295\""),
        ),
        (
            "ranges going down",
            edited(&path, "\"hard\":\"0-63\"", "\"hard\":\"8-9,1\""),
        ),
        (
            "a negative count",
            edited(&path, "\"ops\":", "\"ops\":-1,\"y\":"),
        ),
        (
            "no pool 0",
            edited(
                &path,
                "{\"id\":0,\"name\":\"Pool-0\"",
                "{\"id\":9,\"name\":\"Pool-0\"",
            ),
        ),
        (
            "two pools 1",
            edited(
                &path,
                "{\"id\":0,\"name\":\"Pool-0\"",
                "{\"id\":1,\"name\":\"Pool-0\"",
            ),
        ),
        (
            "pools sharing CPUs",
            edited(&path, "\"cpus\":\"48-63\"", "\"cpus\":\"40-63\""),
        ),
        (
            "a bad name",
            edited(&path, "\"name\":\"web\"", "\"name\":\"\""),
        ),
        (
            "a bad state",
            edited(&path, "\"state\":\"running\"", "\"state\":\"dancing\""),
        ),
        ("a bad uuid", edited(&path, "\"uuid\":\"", "\"uuid\":\"zz")),
        (
            "too fast",
            edited(&path, "\"rate_permille\":900", "\"rate_permille\":1001"),
        ),
        (
            "a reserved domid",
            edited(&path, "\"last_domid\":3", "\"last_domid\":32752"),
        ),
        (
            "no vCPUs",
            edited(&path, "\"vcpus\":[{", "\"vcpus\":[],\"v\":[{"),
        ),
        (
            "a short online set",
            edited(
                &path,
                "\"availability\":\"0-3\"",
                "\"availability\":\"0-4\"",
            ),
        ),
        (
            "a guest of no kind",
            edited(&path, "\"guest\":\"pv\"", "\"guest\":\"xx\""),
        ),
    ];
    for (what, bytes) in &cases {
        std::fs::write(&path, bytes).unwrap();
        let e = Xen::open_sim_state(&spec(&[]), &path).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Other, "{what}: {}", e.message);
        assert!(e.message.contains("state file"), "{what}: {}", e.message);
        assert!(e.message.len() < 1000, "{what}: a short message");
        // a handle already open fails its next call with the same error, typed
        let r = a.domain(0);
        assert!(r.is_err(), "{what}");
        let e = a.take_transport_error().expect("the state file's error");
        assert!(e.message.contains("state file"), "{what}: {}", e.message);
    }
    // too large: refused before it is read
    let big = std::fs::File::create(&path).unwrap();
    big.set_len(MAX_STATE_BYTES + 1).unwrap();
    let e = Xen::open_sim_state(&spec(&[]), &path).unwrap_err();
    assert!(e.message.contains("more than"), "{}", e.message);
    // not a regular file
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    let e = Xen::open_sim_state(&spec(&[]), &path).unwrap_err();
    assert!(e.message.contains("state file"), "{}", e.message);
    std::fs::remove_dir(&path).unwrap();
    // repaired: the file is made afresh
    assert!(a.domain(0).is_ok());
}

#[test]
fn a_lock_held_too_long_is_a_typed_error_and_fails_fast() {
    let dir = TempDir::new();
    let path = dir.file();
    let mut a = open(&path);
    let mut lockpath = path.clone().into_os_string();
    lockpath.push(".lock");
    let holder = std::fs::File::open(&lockpath).unwrap();
    holder.lock().unwrap();
    let t0 = std::time::Instant::now();
    assert_eq!(a.snapshot().unwrap_err().errno, Some(libc::EIO));
    // a lower bound only: it waited for the lock as long as promised
    let waited = t0.elapsed();
    assert!(waited >= STATE_LOCK_WAIT, "{waited:?}");
    // until the error is taken, hypercalls fail (EIO) without trying the lock again, and
    // the error kept is still the first one
    assert_eq!(a.vcpus(3).unwrap_err().errno, Some(libc::EIO));
    let e = a.take_transport_error().unwrap();
    assert_eq!(
        (e.kind, e.errno),
        (ErrorKind::Other, Some(libc::EWOULDBLOCK))
    );
    assert!(e.message.contains("for more than 5 s"), "{}", e.message);
    assert!(a.take_transport_error().is_none(), "taken once");
    holder.unlock().unwrap();
    assert!(a.snapshot().is_ok());
    assert_eq!(a.sim().unwrap().with(|h| h.nr_cpu_ids()).unwrap(), 64);
}
