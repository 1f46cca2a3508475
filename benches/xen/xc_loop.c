/*
 * The libxenctrl baseline of the lab benchmarks: what a C tool built on libxenctrl does to
 * read or pin every vCPU of a domain - one xc_vcpu_getinfo plus one xc_vcpu_getaffinity
 * (hard and soft) per vCPU, or one xc_vcpu_setaffinity per vCPU. Each libxc call is one
 * ioctl and one trap into Xen, with its buffers bounced through hypercall memory.
 *
 *   xc_loop DOMID CPU_A CPU_B
 *
 * then, one command per line on stdin (a worker, so process start-up and
 * xc_interface_open are paid once, not per measurement):
 *   info ROUNDS   read every vCPU ROUNDS times
 *   pin ROUNDS    pin every vCPU (hard) to CPU_A, then CPU_B, ... ROUNDS times
 * Each answers "ok vcpus=<n> rounds=<r> ns_per_round=<t> checksum=<c>" (the checksum is
 * the sum of online flags, pCPUs and map bits, so the work cannot be optimised away).
 *
 * Built against Debian's libxen-dev 4.17 (xenctrl.h) with: cc -O2 xc_loop.c -lxenctrl
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xenctrl.h>

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int run(xc_interface *xch, uint32_t domid, int nvcpus, int maplen, int pin,
               int rounds, xc_cpumap_t maps[2], xc_cpumap_t hard, xc_cpumap_t soft)
{
    long long checksum = 0;
    long long t0 = now_ns();
    for (int r = 0; r < rounds; r++) {
        for (int v = 0; v < nvcpus; v++) {
            if (pin) {
                if (xc_vcpu_setaffinity(xch, domid, v, maps[r % 2], NULL,
                                        XEN_VCPUAFFINITY_HARD)) {
                    perror("xc_vcpu_setaffinity");
                    return 1;
                }
                checksum += maps[r % 2][0];
                continue;
            }
            xc_vcpuinfo_t vi;
            if (xc_vcpu_getinfo(xch, domid, (uint32_t)v, &vi) ||
                xc_vcpu_getaffinity(xch, domid, v, hard, soft,
                                    XEN_VCPUAFFINITY_HARD | XEN_VCPUAFFINITY_SOFT)) {
                perror("xc_vcpu_getinfo/getaffinity");
                return 1;
            }
            checksum += vi.online + (vi.online ? vi.cpu : 0);
            for (int i = 0; i < maplen; i++)
                checksum += __builtin_popcount(hard[i]) + __builtin_popcount(soft[i]);
        }
    }
    long long t = now_ns() - t0;
    printf("ok vcpus=%d rounds=%d ns_per_round=%lld checksum=%lld\n", nvcpus, rounds,
           rounds ? t / rounds : 0, checksum);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s DOMID CPU_A CPU_B (then 'info N' / 'pin N' lines)\n",
                argv[0]);
        return 2;
    }
    uint32_t domid = (uint32_t)atoi(argv[1]);
    int a = atoi(argv[2]), b = atoi(argv[3]);
    xc_interface *xch = xc_interface_open(NULL, NULL, 0);
    if (!xch) {
        perror("xc_interface_open");
        return 1;
    }
    xc_dominfo_t di;
    if (xc_domain_getinfo(xch, domid, 1, &di) != 1 || di.domid != domid) {
        fprintf(stderr, "no domain %u\n", domid);
        return 1;
    }
    int nvcpus = (int)di.max_vcpu_id + 1;
    int maplen = (xc_get_max_cpus(xch) + 7) / 8;
    xc_cpumap_t hard = xc_cpumap_alloc(xch), soft = xc_cpumap_alloc(xch);
    xc_cpumap_t maps[2] = { xc_cpumap_alloc(xch), xc_cpumap_alloc(xch) };
    if (!hard || !soft || !maps[0] || !maps[1])
        return 1;
    maps[0][a / 8] |= (uint8_t)(1u << (a % 8));
    maps[1][b / 8] |= (uint8_t)(1u << (b % 8));
    printf("ready vcpus=%d maplen=%d\n", nvcpus, maplen);
    fflush(stdout);
    char cmd[16];
    int rounds;
    while (scanf("%15s %d", cmd, &rounds) == 2) {
        int pin = !strcmp(cmd, "pin");
        if (!pin && strcmp(cmd, "info")) {
            fprintf(stderr, "unknown command %s\n", cmd);
            return 2;
        }
        if (run(xch, domid, nvcpus, maplen, pin, rounds, maps, hard, soft))
            return 1;
    }
    xc_interface_close(xch);
    return 0;
}
