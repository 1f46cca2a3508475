//! Compiles `abi_check.c` against Debian's `libxen-dev` 4.17 headers, runs it, and compares
//! every size, offset and constant it prints with the Rust mirrors in `xenvcpu_core::abi`
//! (the 4.17 layouts: domctl 0x15 / sysctl 0x15, xen-interfaces.md §3.2).
//!
//! Missing headers are a failure, not a skip: CI installs `libxen-dev`.

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::path::Path;
use std::process::Command;
use xenvcpu_core::abi::{self, *};

fn c_values() -> BTreeMap<String, u64> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/abi_check.c");
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let exe = out_dir.join("xenvcpu_abi_check");
    if !Path::new("/usr/include/xen/domctl.h").exists() {
        panic!(
            "Xen public headers not found (/usr/include/xen/domctl.h): run \
             `apt-get install libxen-dev` (Debian 12: Xen 4.17); CI installs it"
        );
    }
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let r = Command::new(&cc)
        .args(["-std=gnu11", "-Wall", "-Werror", "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc:?}: {e}"));
    let stderr = String::from_utf8_lossy(&r.stderr);
    if !r.status.success() {
        if stderr.contains("xen/") && stderr.contains("No such file") {
            panic!("Xen headers missing: run `apt-get install libxen-dev`\n{stderr}");
        }
        panic!("abi_check.c does not compile:\n{stderr}");
    }
    let run = Command::new(&exe).output().expect("run abi_check");
    assert!(run.status.success());
    String::from_utf8(run.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(' ').expect("key value");
            (k.to_string(), v.parse::<u64>().expect("number"))
        })
        .collect()
}

fn rust_values() -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    macro_rules! size {
        ($c:literal, $t:ty) => {
            m.insert(format!("size.{}", $c), size_of::<$t>() as u64);
        };
    }
    macro_rules! off {
        ($c:literal, $t:ty, $($f:ident),*) => {
            $( m.insert(format!("off.{}.{}", $c, stringify!($f)), offset_of!($t, $f) as u64); )*
        };
    }
    macro_rules! konst {
        ($($c:literal = $v:expr),* $(,)?) => {
            $( m.insert(format!("const.{}", $c), u64::from($v)); )*
        };
    }
    size!("xen_domctl", XenDomctl);
    off!("xen_domctl", XenDomctl, cmd, interface_version, domain, u);
    size!("xen_sysctl", XenSysctl);
    off!("xen_sysctl", XenSysctl, cmd, interface_version, u);
    size!("xen_domctl_getdomaininfo", GetDomainInfoV14);
    off!(
        "xen_domctl_getdomaininfo",
        GetDomainInfoV14,
        domain,
        pad1,
        flags,
        tot_pages,
        max_pages,
        outstanding_pages,
        shr_pages,
        paged_pages,
        shared_info_frame,
        cpu_time,
        nr_online_vcpus,
        max_vcpu_id,
        ssidref,
        handle,
        cpupool,
        gpaddr_bits,
        pad2
    );
    m.insert(
        "off.xen_domctl_getdomaininfo.arch_config.emulation_flags".into(),
        offset_of!(GetDomainInfoV14, emulation_flags) as u64,
    );
    m.insert(
        "off.xen_domctl_getdomaininfo.arch_config.misc_flags".into(),
        offset_of!(GetDomainInfoV14, misc_flags) as u64,
    );
    size!("xen_domctl_getvcpuinfo", GetVcpuInfo);
    off!(
        "xen_domctl_getvcpuinfo",
        GetVcpuInfo,
        vcpu,
        online,
        blocked,
        running,
        cpu_time,
        cpu
    );
    size!("xen_domctl_vcpuaffinity", VcpuAffinity);
    off!(
        "xen_domctl_vcpuaffinity",
        VcpuAffinity,
        vcpu,
        flags,
        cpumap_hard,
        cpumap_soft
    );
    size!("xenctl_bitmap", XenctlBitmap);
    off!("xenctl_bitmap", XenctlBitmap, bitmap, nr_bits);
    size!("xen_domctl_max_vcpus", MaxVcpus);
    off!("xen_domctl_max_vcpus", MaxVcpus, max);
    size!("xen_sysctl_getdomaininfolist", GetDomainInfoList);
    off!(
        "xen_sysctl_getdomaininfolist",
        GetDomainInfoList,
        first_domain,
        max_domains,
        buffer,
        num_domains
    );
    size!("xen_sysctl_physinfo", PhysinfoV417);
    off!(
        "xen_sysctl_physinfo",
        PhysinfoV417,
        threads_per_core,
        cores_per_socket,
        nr_cpus,
        max_cpu_id,
        nr_nodes,
        max_node_id,
        cpu_khz,
        capabilities,
        arch_capabilities,
        pad,
        total_pages,
        free_pages,
        scrub_pages,
        outstanding_pages,
        max_mfn,
        hw_cap
    );
    size!("xen_sysctl_cputopoinfo", CpuTopoInfo);
    off!("xen_sysctl_cputopoinfo", CpuTopoInfo, num_cpus, cputopo);
    size!("xen_sysctl_cputopo", CpuTopo);
    off!("xen_sysctl_cputopo", CpuTopo, core, socket, node);
    size!("xen_sysctl_numainfo", NumaInfo);
    off!(
        "xen_sysctl_numainfo",
        NumaInfo,
        num_nodes,
        meminfo,
        distance
    );
    size!("xen_sysctl_meminfo", MemInfo);
    off!("xen_sysctl_meminfo", MemInfo, memsize, memfree);
    size!("xen_sysctl_cpupool_op", CpupoolOp);
    off!(
        "xen_sysctl_cpupool_op",
        CpupoolOp,
        op,
        cpupool_id,
        sched_id,
        domid,
        cpu,
        n_dom,
        cpumap
    );
    size!("privcmd_hypercall", PrivcmdHypercall);
    off!("privcmd_hypercall", PrivcmdHypercall, op, arg);
    size!("multicall_entry", MulticallEntry);
    off!("multicall_entry", MulticallEntry, op, result, args);

    let v417 = InterfaceVersion::for_release(4, 17).unwrap();
    konst!(
        "XEN_DOMCTL_INTERFACE_VERSION" = v417.domctl,
        "XEN_SYSCTL_INTERFACE_VERSION" = v417.sysctl,
        "IOCTL_PRIVCMD_HYPERCALL" = IOCTL_PRIVCMD_HYPERCALL,
        "__HYPERVISOR_multicall" = HYPERVISOR_MULTICALL,
        "__HYPERVISOR_xen_version" = HYPERVISOR_XEN_VERSION,
        "__HYPERVISOR_sysctl" = HYPERVISOR_SYSCTL,
        "__HYPERVISOR_domctl" = HYPERVISOR_DOMCTL,
        "XENVER_version" = XENVER_VERSION,
        "XEN_DOMCTL_pausedomain" = domctl::PAUSEDOMAIN,
        "XEN_DOMCTL_unpausedomain" = domctl::UNPAUSEDOMAIN,
        "XEN_DOMCTL_getdomaininfo" = domctl::GETDOMAININFO,
        "XEN_DOMCTL_setvcpuaffinity" = domctl::SETVCPUAFFINITY,
        "XEN_DOMCTL_getvcpuinfo" = domctl::GETVCPUINFO,
        "XEN_DOMCTL_max_vcpus" = domctl::MAX_VCPUS,
        "XEN_DOMCTL_getvcpuaffinity" = domctl::GETVCPUAFFINITY,
        "XEN_SYSCTL_physinfo" = sysctl::PHYSINFO,
        "XEN_SYSCTL_sched_id" = sysctl::SCHED_ID,
        "XEN_SYSCTL_getdomaininfolist" = sysctl::GETDOMAININFOLIST,
        "XEN_SYSCTL_cputopoinfo" = sysctl::CPUTOPOINFO,
        "XEN_SYSCTL_numainfo" = sysctl::NUMAINFO,
        "XEN_SYSCTL_cpupool_op" = sysctl::CPUPOOL_OP,
        "XEN_SYSCTL_CPUPOOL_OP_CREATE" = cpupool_op::CREATE,
        "XEN_SYSCTL_CPUPOOL_OP_DESTROY" = cpupool_op::DESTROY,
        "XEN_SYSCTL_CPUPOOL_OP_INFO" = cpupool_op::INFO,
        "XEN_SYSCTL_CPUPOOL_OP_ADDCPU" = cpupool_op::ADDCPU,
        "XEN_SYSCTL_CPUPOOL_OP_RMCPU" = cpupool_op::RMCPU,
        "XEN_SYSCTL_CPUPOOL_OP_MOVEDOMAIN" = cpupool_op::MOVEDOMAIN,
        "XEN_SYSCTL_CPUPOOL_OP_FREEINFO" = cpupool_op::FREEINFO,
        "XEN_SCHEDULER_CREDIT" = sched::CREDIT,
        "XEN_SCHEDULER_CREDIT2" = sched::CREDIT2,
        "XEN_SCHEDULER_ARINC653" = sched::ARINC653,
        "XEN_VCPUAFFINITY_HARD" = VCPUAFFINITY_HARD,
        "XEN_VCPUAFFINITY_SOFT" = VCPUAFFINITY_SOFT,
        "XEN_VCPUAFFINITY_FORCE" = VCPUAFFINITY_FORCE,
        "XEN_DOMINF_dying" = dominf::DYING,
        "XEN_DOMINF_hvm_guest" = dominf::HVM_GUEST,
        "XEN_DOMINF_shutdown" = dominf::SHUTDOWN,
        "XEN_DOMINF_paused" = dominf::PAUSED,
        "XEN_DOMINF_blocked" = dominf::BLOCKED,
        "XEN_DOMINF_running" = dominf::RUNNING,
        "XEN_DOMINF_debugged" = dominf::DEBUGGED,
        "XEN_DOMINF_xs_domain" = dominf::XS_DOMAIN,
        "XEN_DOMINF_hap" = dominf::HAP,
        "XEN_DOMINF_shutdownshift" = dominf::SHUTDOWNSHIFT,
        "XEN_DOMINF_shutdownmask" = dominf::SHUTDOWNMASK,
        "DOMID_FIRST_RESERVED" = DOMID_FIRST_RESERVED,
        "DOMID_INVALID" = DOMID_INVALID,
        "XEN_INVALID_CORE_ID" = XEN_INVALID_TOPO_ID,
        "XEN_INVALID_SOCKET_ID" = XEN_INVALID_TOPO_ID,
        "XEN_INVALID_NODE_ID" = XEN_INVALID_TOPO_ID,
        "XEN_INVALID_MEM_SZ" = XEN_INVALID_MEM_SZ,
        "XEN_INVALID_MAX_VCPU_ID" = abi::NO_VCPU_ID,
    );
    m
}

#[test]
fn rust_abi_matches_libxen_dev_4_17_headers() {
    let c = c_values();
    let r = rust_values();
    let mut problems = Vec::new();
    for (k, cv) in &c {
        match r.get(k) {
            Some(rv) if rv == cv => {}
            Some(rv) => problems.push(format!("{k}: C {cv}, Rust {rv}")),
            None => problems.push(format!("{k}: printed by C ({cv}) but not compared in Rust")),
        }
    }
    for k in r.keys().filter(|k| !c.contains_key(*k)) {
        problems.push(format!("{k}: Rust value has no C counterpart"));
    }
    assert!(
        problems.is_empty(),
        "ABI mismatches:\n{}",
        problems.join("\n")
    );
    assert!(c.len() > 130, "only {} values compared", c.len());
}
