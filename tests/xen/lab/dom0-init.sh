#!/bin/bash
# PID 1 of the lab's Xen dom0 (kernel argument init=/xenvcpu-lab/dom0-init.sh).
#
# Starts the minimum Xen userspace (modules, xenfs, oxenstored, xen-init-dom0,
# xenconsoled), mounts the two 9p shares the harness gives us, starts the guests
# (the PV guest "domu"; on request also the PVH "domu-pvh" and the HVM "domu-hvm"),
# installs the project's wheel, runs the `xen` tests with pytest and powers the
# emulated machine off.  Everything is printed on hvc0, which
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
# The guests the harness asked for (XENVCPU_GUESTS in lab.env, XEN_TEST_GUESTS on the host):
# kind -> xl domain name; each one's config is /xenvcpu-lab/<name>.cfg.
guest_name() { case $1 in pv) echo domu;; pvh) echo domu-pvh;; hvm) echo domu-hvm;; *) return 1;; esac; }
# xenconsoled writes guest-<name>.log for the PV console (PV, PVH); the HVM guest's emulated
# serial port goes to the same path through qemu (serial="file:..." in domu-hvm.cfg)
console_log() { echo "/var/log/xen/console/guest-$1.log"; }
# guest console logs have CRLF line endings: strip the CRs first
wait_guest_log() {
    local i log; log=$(console_log "$1")
    for i in $(seq 1 "$3"); do
        tr -d '\r' < "$log" 2>/dev/null | grep -Eq "$2" && return 0
        # on_crash = "destroy": a guest that crashed is gone, waiting longer is pointless
        if [ $((i % 5)) = 0 ] && ! xl domid "$1" >/dev/null 2>&1; then
            echo "the domain $1 is gone after $i s (crashed? its console follows)"; return 1
        fi
        sleep 1
    done
    echo "timeout after $3 s waiting for /$2/ on the $1 console"; return 1
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
# lab.env: settings from the harness (XENVCPU_PYTEST_ARGS, XENVCPU_TEST_TIMEOUT, XENVCPU_SHELL,
# XENVCPU_GUESTS, XENVCPU_GUEST_TIMEOUT)
[ -r /mnt/out/lab.env ] && . /mnt/out/lab.env
GUESTS=${XENVCPU_GUESTS-pv}
GUESTS=${GUESTS//,/ }
export XENVCPU_GUESTS="$GUESTS"  # the pytest fixtures skip guests that were not started
exec > >(tee -a /mnt/out/lab.log) 2>&1
mark "shares mounted"

# --- the guests and the project -------------------------------------------------------
# Each guest is built (xl create of the PV guest takes ~15 s under TCG) and boots while the
# wheel is installed.  They are created one after the other (in the background), so the
# cheap PV guest is up first.
if [ -n "$GUESTS" ]; then
    (
        for kind in $GUESTS; do
            name=$(guest_name "$kind") || { echo "unknown guest kind $kind"; continue; }
            run xl create "/xenvcpu-lab/$name.cfg" || mark "ERROR: xl create $name failed"
            mark "$name created"
        done
    ) &
    CREATE=$!
fi
# The disk is a qemu snapshot: installing into the system is thrown away at poweroff.
WHEEL=$(ls /mnt/out/dist/*.whl 2>/dev/null | head -1)
if [ -n "$WHEEL" ] && run python3 /xenvcpu-lab/install_wheel.py "$WHEEL"; then
    mark "wheel installed: ${WHEEL##*/}"
else
    mark "ERROR: no wheel installed (/mnt/out/dist: $(ls /mnt/out/dist 2>&1))"
fi
if [ -n "$GUESTS" ]; then
    wait "$CREATE"
    # domu-init.sh reports its online CPUs on its console
    for kind in $GUESTS; do
        name=$(guest_name "$kind") || continue
        if wait_guest_log "$name" '^DOMU online=0-1$' "${XENVCPU_GUEST_TIMEOUT:-240}"; then
            mark "$name up"
        else
            mark "ERROR: $name did not come up"
            # quoted with a prefix, so the harness does not take a guest's panic for dom0's
            tr -d '\r' < "$(console_log "$name")" 2>/dev/null | tail -20 | sed "s/^/[guest $name] /"
            tr -d '\r' < "$(console_log "$name")" > "/mnt/out/$name-console.log" 2>/dev/null
        fi
    done
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

for kind in $GUESTS; do
    name=$(guest_name "$kind") || continue
    tr -d '\r' < "$(console_log "$name")" > "/mnt/out/$name-console.log" 2>/dev/null
    echo "--- $name console (tail; all of it in $name-console.log)"
    tail -8 "/mnt/out/$name-console.log" | sed "s/^/[guest $name] /"
done
ls /var/log/xen/qemu-dm-*.log >/dev/null 2>&1 && cp /var/log/xen/qemu-dm-*.log /mnt/out/
echo "--- xl dmesg (tail)"
xl dmesg | tail -10
echo "XENVCPU-LAB-DONE rc=$rc"
finish done
