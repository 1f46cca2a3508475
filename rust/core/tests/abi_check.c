/*
 * Prints sizes, offsets and constants of the Xen public headers (Debian libxen-dev 4.17)
 * that xenvcpu mirrors in rust/core/src/abi.rs. tests/abi_c.rs compiles and runs this and
 * compares every line with the Rust values. Output: "<key> <decimal value>" per line.
 */
#define __XEN_TOOLS__ 1
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <linux/types.h>
#include <xen/xen.h>
#include <xen/domctl.h>
#include <xen/sysctl.h>
#include <xen/version.h>
#include <xen/sys/privcmd.h>

#define SZ(name, type) printf("size.%s %zu\n", name, sizeof(type))
#define OFF(name, type, field) printf("off.%s.%s %zu\n", name, #field, offsetof(type, field))
#define K(name) printf("const.%s %llu\n", #name, (unsigned long long)(name))

int main(void)
{
    SZ("xen_domctl", struct xen_domctl);
    OFF("xen_domctl", struct xen_domctl, cmd);
    OFF("xen_domctl", struct xen_domctl, interface_version);
    OFF("xen_domctl", struct xen_domctl, domain);
    OFF("xen_domctl", struct xen_domctl, u);

    SZ("xen_sysctl", struct xen_sysctl);
    OFF("xen_sysctl", struct xen_sysctl, cmd);
    OFF("xen_sysctl", struct xen_sysctl, interface_version);
    OFF("xen_sysctl", struct xen_sysctl, u);

    SZ("xen_domctl_getdomaininfo", struct xen_domctl_getdomaininfo);
#define GDI(f) OFF("xen_domctl_getdomaininfo", struct xen_domctl_getdomaininfo, f)
    GDI(domain); GDI(pad1); GDI(flags); GDI(tot_pages); GDI(max_pages); GDI(outstanding_pages);
    GDI(shr_pages); GDI(paged_pages); GDI(shared_info_frame); GDI(cpu_time);
    GDI(nr_online_vcpus); GDI(max_vcpu_id); GDI(ssidref); GDI(handle); GDI(cpupool);
    GDI(gpaddr_bits); GDI(pad2); GDI(arch_config.emulation_flags); GDI(arch_config.misc_flags);

    SZ("xen_domctl_getvcpuinfo", struct xen_domctl_getvcpuinfo);
#define GVI(f) OFF("xen_domctl_getvcpuinfo", struct xen_domctl_getvcpuinfo, f)
    GVI(vcpu); GVI(online); GVI(blocked); GVI(running); GVI(cpu_time); GVI(cpu);

    SZ("xen_domctl_vcpuaffinity", struct xen_domctl_vcpuaffinity);
#define VA(f) OFF("xen_domctl_vcpuaffinity", struct xen_domctl_vcpuaffinity, f)
    VA(vcpu); VA(flags); VA(cpumap_hard); VA(cpumap_soft);

    SZ("xenctl_bitmap", struct xenctl_bitmap);
    OFF("xenctl_bitmap", struct xenctl_bitmap, bitmap);
    OFF("xenctl_bitmap", struct xenctl_bitmap, nr_bits);

    SZ("xen_domctl_max_vcpus", struct xen_domctl_max_vcpus);
    OFF("xen_domctl_max_vcpus", struct xen_domctl_max_vcpus, max);

    SZ("xen_sysctl_getdomaininfolist", struct xen_sysctl_getdomaininfolist);
#define GDL(f) OFF("xen_sysctl_getdomaininfolist", struct xen_sysctl_getdomaininfolist, f)
    GDL(first_domain); GDL(max_domains); GDL(buffer); GDL(num_domains);

    SZ("xen_sysctl_physinfo", struct xen_sysctl_physinfo);
#define PI(f) OFF("xen_sysctl_physinfo", struct xen_sysctl_physinfo, f)
    PI(threads_per_core); PI(cores_per_socket); PI(nr_cpus); PI(max_cpu_id); PI(nr_nodes);
    PI(max_node_id); PI(cpu_khz); PI(capabilities); PI(arch_capabilities); PI(pad);
    PI(total_pages); PI(free_pages); PI(scrub_pages); PI(outstanding_pages); PI(max_mfn);
    PI(hw_cap);

    SZ("xen_sysctl_cputopoinfo", struct xen_sysctl_cputopoinfo);
    OFF("xen_sysctl_cputopoinfo", struct xen_sysctl_cputopoinfo, num_cpus);
    OFF("xen_sysctl_cputopoinfo", struct xen_sysctl_cputopoinfo, cputopo);
    SZ("xen_sysctl_cputopo", struct xen_sysctl_cputopo);
    OFF("xen_sysctl_cputopo", struct xen_sysctl_cputopo, core);
    OFF("xen_sysctl_cputopo", struct xen_sysctl_cputopo, socket);
    OFF("xen_sysctl_cputopo", struct xen_sysctl_cputopo, node);

    SZ("xen_sysctl_numainfo", struct xen_sysctl_numainfo);
    OFF("xen_sysctl_numainfo", struct xen_sysctl_numainfo, num_nodes);
    OFF("xen_sysctl_numainfo", struct xen_sysctl_numainfo, meminfo);
    OFF("xen_sysctl_numainfo", struct xen_sysctl_numainfo, distance);
    SZ("xen_sysctl_meminfo", struct xen_sysctl_meminfo);
    OFF("xen_sysctl_meminfo", struct xen_sysctl_meminfo, memsize);
    OFF("xen_sysctl_meminfo", struct xen_sysctl_meminfo, memfree);

    SZ("xen_sysctl_cpupool_op", struct xen_sysctl_cpupool_op);
#define CP(f) OFF("xen_sysctl_cpupool_op", struct xen_sysctl_cpupool_op, f)
    CP(op); CP(cpupool_id); CP(sched_id); CP(domid); CP(cpu); CP(n_dom); CP(cpumap);

    SZ("privcmd_hypercall", privcmd_hypercall_t);
    OFF("privcmd_hypercall", privcmd_hypercall_t, op);
    OFF("privcmd_hypercall", privcmd_hypercall_t, arg);

    SZ("multicall_entry", struct multicall_entry);
    OFF("multicall_entry", struct multicall_entry, op);
    OFF("multicall_entry", struct multicall_entry, result);
    OFF("multicall_entry", struct multicall_entry, args);

    K(XEN_DOMCTL_INTERFACE_VERSION); K(XEN_SYSCTL_INTERFACE_VERSION);
    K(IOCTL_PRIVCMD_HYPERCALL);
    K(__HYPERVISOR_multicall); K(__HYPERVISOR_xen_version); K(__HYPERVISOR_sysctl);
    K(__HYPERVISOR_domctl); K(XENVER_version);
    K(XEN_DOMCTL_pausedomain); K(XEN_DOMCTL_unpausedomain); K(XEN_DOMCTL_getdomaininfo);
    K(XEN_DOMCTL_setvcpuaffinity); K(XEN_DOMCTL_getvcpuinfo); K(XEN_DOMCTL_max_vcpus);
    K(XEN_DOMCTL_getvcpuaffinity);
    K(XEN_SYSCTL_physinfo); K(XEN_SYSCTL_sched_id); K(XEN_SYSCTL_getdomaininfolist);
    K(XEN_SYSCTL_cputopoinfo); K(XEN_SYSCTL_numainfo); K(XEN_SYSCTL_cpupool_op);
    K(XEN_SYSCTL_CPUPOOL_OP_CREATE); K(XEN_SYSCTL_CPUPOOL_OP_DESTROY);
    K(XEN_SYSCTL_CPUPOOL_OP_INFO); K(XEN_SYSCTL_CPUPOOL_OP_ADDCPU);
    K(XEN_SYSCTL_CPUPOOL_OP_RMCPU); K(XEN_SYSCTL_CPUPOOL_OP_MOVEDOMAIN);
    K(XEN_SYSCTL_CPUPOOL_OP_FREEINFO);
    K(XEN_SCHEDULER_CREDIT); K(XEN_SCHEDULER_CREDIT2); K(XEN_SCHEDULER_ARINC653);
    K(XEN_VCPUAFFINITY_HARD); K(XEN_VCPUAFFINITY_SOFT); K(XEN_VCPUAFFINITY_FORCE);
    K(XEN_DOMINF_dying); K(XEN_DOMINF_hvm_guest); K(XEN_DOMINF_shutdown);
    K(XEN_DOMINF_paused); K(XEN_DOMINF_blocked); K(XEN_DOMINF_running);
    K(XEN_DOMINF_debugged); K(XEN_DOMINF_xs_domain); K(XEN_DOMINF_hap);
    K(XEN_DOMINF_shutdownshift); K(XEN_DOMINF_shutdownmask);
    K(DOMID_FIRST_RESERVED); K(DOMID_INVALID);
    K(XEN_INVALID_CORE_ID); K(XEN_INVALID_SOCKET_ID); K(XEN_INVALID_NODE_ID);
    K(XEN_INVALID_MEM_SZ); K(XEN_INVALID_MAX_VCPU_ID);
    return 0;
}
