#!/bin/bash
# PID 1 of the lab's Xen dom0 (kernel argument init=/xenvcpu-lab/dom0-init.sh).
#
# Starts the minimum Xen userspace (modules, xenfs, oxenstored, xen-init-dom0,
# xenconsoled), mounts the two 9p shares the harness gives us, starts the PV
# guest "domu", installs the project's wheel, runs the `xen` tests with pytest
# and powers the emulated machine off.  Everything is printed on hvc0, which
# Xen forwards to com1, which qemu hands to tests/xen/harness.py.
#
# Shares:  /mnt/host  the project checkout (9p tag "host", read-only)
#          /mnt/out   the run's writable directory (9p tag "out"):
#                     lab.env (written by the harness), dist/*.whl (the wheel),
#                     junit.xml, pytest.log, pytest.rc, lab.log (written here)
# Lines starting with "XENVCPU-LAB:" are milestones the harness looks for.
# /usr/sbin/xl, xenstored & co are xen-utils-wrapper scripts: put the real binaries first
export PATH=/usr/lib/xen-4.17/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LANG=C.UTF-8 HOME=/root
exec </dev/console >/dev/console 2>&1 || true

mark() { echo "XENVCPU-LAB: $* (uptime $(cut -d' ' -f1 /proc/uptime)s)"; }
run() { echo "+ $*"; "$@"; local rc=$?; [ $rc = 0 ] || echo "  -> rc=$rc"; return $rc; }
finish() {
    mark "poweroff ($1)"
    sync
    busybox poweroff -f
    sleep 20
    echo o > /proc/sysrq-trigger
    sleep 3600
}
# domU console log from xenconsoled has CRLF line endings: strip the CRs first
wait_domu_log() {
    local i
    for i in $(seq 1 "$2"); do
        tr -d '\r' < /var/log/xen/console/guest-domu.log 2>/dev/null | grep -Eq "$1" && return 0
        sleep 1
    done
    echo "timeout after $2 s waiting for /$1/ on the domu console"; return 1
}

mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys  || mount -t sysfs sysfs /sys
mountpoint -q /dev  || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mountpoint -q /dev/pts || mount -t devpts devpts /dev/pts
mountpoint -q /run || mount -t tmpfs tmpfs /run
mountpoint -q /tmp || mount -t tmpfs tmpfs /tmp
mount -o remount,rw / 2>/dev/null
hostname xenvcpu-dom0
ip link set lo up  # the exporter's tests serve and scrape on 127.0.0.1
mark "dom0 userspace reached"
echo "kernel $(uname -r); dom0 cpus online $(cat /sys/devices/system/cpu/online)"

# --- Xen userspace ---------------------------------------------------------
# privcmd, evtchn, gntdev and xenfs are modules in Debian's kernel
for m in xenfs xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xen-blkback 9pnet_virtio 9p; do
    modprobe "$m" || echo "modprobe $m failed"
done
mountpoint -q /proc/xen || mount -t xenfs xenfs /proc/xen
mkdir -p /run/xen /run/xenstored /var/log/xen/console /var/lib/xen /var/lib/xenstored /var/run/xen
run oxenstored --pid-file /run/xenstore.pid
for i in $(seq 1 30); do xenstore-read / >/dev/null 2>&1 && break; sleep 1; done
run xen-init-dom0
run xenconsoled --pid-file /run/xenconsoled.pid --log=guest
mark "xenstored up"

# --- shares ----------------------------------------------------------------
mkdir -p /mnt/host /mnt/out
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,ro host /mnt/host || { mark "ERROR: 9p host share"; finish no-host-share; }
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 out /mnt/out || { mark "ERROR: 9p out share"; finish no-out-share; }
# lab.env: settings from the harness (XENVCPU_PYTEST_ARGS, XENVCPU_TEST_TIMEOUT, XENVCPU_SHELL, XENVCPU_NO_DOMU)
[ -r /mnt/out/lab.env ] && . /mnt/out/lab.env
exec > >(tee -a /mnt/out/lab.log) 2>&1
mark "shares mounted"

# --- the PV guest and the project -----------------------------------------------
# The guest is built (xl create takes ~15 s under TCG) and boots while the wheel is installed.
if [ "${XENVCPU_NO_DOMU:-0}" != 1 ]; then
    run xl create /xenvcpu-lab/domu.cfg &
    DOMU_CREATE=$!
fi
# The disk is a qemu snapshot: installing into the system is thrown away at poweroff.
WHEEL=$(ls /mnt/out/dist/*.whl 2>/dev/null | head -1)
if [ -n "$WHEEL" ] && run python3 /xenvcpu-lab/install_wheel.py "$WHEEL"; then
    mark "wheel installed: ${WHEEL##*/}"
else
    mark "ERROR: no wheel installed (/mnt/out/dist: $(ls /mnt/out/dist 2>&1))"
fi
if [ "${XENVCPU_NO_DOMU:-0}" != 1 ]; then
    # domu-init.sh reports its online CPUs on its console
    if wait "$DOMU_CREATE" && wait_domu_log '^DOMU online=0-1$' 240; then
        mark "domu up"
    else
        mark "ERROR: domu did not come up"
        tr -d '\r' < /var/log/xen/console/guest-domu.log 2>/dev/null | tail -20
    fi
fi
run xl list
run xl vcpu-list

# --- the tests ---------------------------------------------------------------
export XENVCPU_LAB=1 PYTHONDONTWRITEBYTECODE=1
if [ "${XENVCPU_SHELL:-0}" = 1 ]; then
    mark "interactive shell (exit to power off)"
    echo "checkout: /mnt/host (read-only); results: /mnt/out"
    echo "run e.g.: python3 -m pytest -p no:cacheprovider -m xen tests/xen -k pin"
    export HYPOTHESIS_STORAGE_DIRECTORY=/tmp/hypothesis
    cd /mnt/host && setsid -c bash -i </dev/console >/dev/console 2>&1
    finish shell-exit
fi

mark "pytest start"
# From the checkout (read-only) with its own pytest configuration, so node ids read as on the
# host; hypothesis keeps its database in /tmp instead of the cwd.
cd /mnt/host
eval "set -- ${XENVCPU_PYTEST_ARGS:-tests/xen}"  # shell-quoted by the harness
HYPOTHESIS_STORAGE_DIRECTORY=/tmp/hypothesis timeout -k 10 "${XENVCPU_TEST_TIMEOUT:-600}" \
    python3 -m pytest -p no:cacheprovider -m xen -rA -v --color=no \
        --junitxml=/mnt/out/junit.xml "$@" 2>&1 | tee /mnt/out/pytest.log
rc=${PIPESTATUS[0]}
echo "$rc" > /mnt/out/pytest.rc
sync
mark "pytest done rc=$rc"

if [ "${XENVCPU_NO_DOMU:-0}" != 1 ]; then
    tr -d '\r' < /var/log/xen/console/guest-domu.log > /mnt/out/domu-console.log 2>/dev/null
    echo "--- domu console (tail; all of it in domu-console.log)"
    tail -8 /mnt/out/domu-console.log
fi
echo "--- xl dmesg (tail)"
xl dmesg | tail -10
echo "XENVCPU-LAB-DONE rc=$rc"
finish done
