/*
 * nohv_shim.c -- LD_PRELOAD shim so that Debian's oxenstored (Xen 4.17) runs as an
 * ordinary process on a host without Xen, for xenvcpu's xenstore client tests.
 *
 * With --no-domain-init, oxenstored still touches three things at start-up that
 * need a hypervisor or a privilege:
 *   1. setrlimit(RLIMIT_NOFILE) up to /proc/sys/fs/nr_open -> EPERM without
 *      CAP_SYS_RESOURCE: we clamp the request to the current hard limit;
 *   2. xc_interface_open() (libxenctrl, /dev/xen/privcmd): we return a dummy handle;
 *   3. libxenevtchn (bind VIRQ_DOM_EXC): we hand out the read end of a pipe that
 *      never becomes readable, so no event ever "fires".
 * Nothing that needs a real domain (INTRODUCE, @releaseDomain) can work; plain
 * reads, writes, directories, transactions, watches and permissions all do.
 *
 * Build: gcc -shared -fPIC -O2 -Wall -o nohv_shim.so nohv_shim.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

struct shim_evtchn {
    int pipe_rd;
    int pipe_wr;
};

void *xenevtchn_open(void *logger, unsigned int flags)
{
    struct shim_evtchn *ev;
    int fds[2];

    (void)logger;
    (void)flags;
    ev = malloc(sizeof(*ev));
    if (ev == NULL)
        return NULL;
    if (pipe(fds) != 0) {
        free(ev);
        return NULL;
    }
    ev->pipe_rd = fds[0];
    ev->pipe_wr = fds[1];
    return ev;
}

int xenevtchn_close(void *handle)
{
    struct shim_evtchn *ev = handle;

    if (ev != NULL) {
        close(ev->pipe_rd);
        close(ev->pipe_wr);
        free(ev);
    }
    return 0;
}

int xenevtchn_fd(void *handle)
{
    return ((struct shim_evtchn *)handle)->pipe_rd;
}

/* Any positive number will do as a local port. */
int xenevtchn_bind_virq(void *handle, unsigned int virq)
{
    (void)handle;
    return 100 + (int)virq;
}

int xenevtchn_pending(void *handle)
{
    (void)handle;
    errno = EAGAIN; /* nothing is ever pending */
    return -1;
}

int xenevtchn_unmask(void *handle, uint32_t port) { (void)handle; (void)port; return 0; }
int xenevtchn_notify(void *handle, uint32_t port) { (void)handle; (void)port; return 0; }
int xenevtchn_unbind(void *handle, uint32_t port) { (void)handle; (void)port; return 0; }
int xenevtchn_restrict(void *handle, uint16_t domid) { (void)handle; (void)domid; return 0; }

int xenevtchn_bind_interdomain(void *handle, uint32_t domid, uint32_t port)
{
    (void)handle;
    (void)domid;
    (void)port;
    errno = ENOSYS; /* there are no other domains */
    return -1;
}

static char shim_xc_handle;

void *xc_interface_open(void *logger, void *dombuild_logger, unsigned int flags)
{
    (void)logger;
    (void)dombuild_logger;
    (void)flags;
    return &shim_xc_handle;
}

int xc_interface_close(void *handle)
{
    (void)handle;
    return 0;
}

int setrlimit(__rlimit_resource_t resource, const struct rlimit *limit)
{
    static int (*next_setrlimit)(__rlimit_resource_t, const struct rlimit *);
    struct rlimit now, asked = *limit;

    if (next_setrlimit == NULL)
        next_setrlimit = (int (*)(__rlimit_resource_t, const struct rlimit *))
            dlsym(RTLD_NEXT, "setrlimit");
    if (resource == RLIMIT_NOFILE && getrlimit(resource, &now) == 0) {
        if (asked.rlim_max > now.rlim_max)
            asked.rlim_max = now.rlim_max;
        if (asked.rlim_cur > asked.rlim_max)
            asked.rlim_cur = asked.rlim_max;
    }
    return next_setrlimit(resource, &asked);
}
