#!/bin/busybox sh
# PID 1 of the lab's guests "domu" (PV), "domu-pvh" and "domu-hvm" (a busybox
# initramfs, no disk, no network; xenlab_guest=<kind> on the kernel command line).
#
# Linux does not bring new vCPUs online by itself: when the toolstack raises the
# count -- cpu/N/availability=online in xenstore for PV and PVH, an ACPI CPU
# hotplug event from the device model for HVM -- the kernel only marks the CPU
# present, and userspace -- normally a udev rule -- writes 1 to
# /sys/devices/system/cpu/cpuN/online.  This loop plays that udev rule and
# reports the online set on the console whenever it changes ("DOMU online=0-1").
# Lowering the count (PV, PVH) is done by the kernel alone.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
kind=$(sed -n 's/.*xenlab_guest=\([a-z]*\).*/\1/p' /proc/cmdline)
echo "DOMU-UP guest=${kind:-pv} kernel=$(uname -r) uptime=$(cut -d' ' -f1 /proc/uptime)"
last=
while true; do
    for c in /sys/devices/system/cpu/cpu[0-9]*; do
        if [ "$(cat "$c/online" 2>/dev/null)" = 0 ]; then
            echo 1 > "$c/online" && echo "DOMU onlined ${c##*/}"
        fi
    done
    now=$(cat /sys/devices/system/cpu/online)
    if [ "$now" != "$last" ]; then echo "DOMU online=$now"; last=$now; fi
    sleep 1
done
