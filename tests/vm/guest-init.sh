#!/bin/sh
# /init of the kTLS test VM: busybox sh as PID 1 (installed by build-initramfs.sh overlay).
#
# Sets up just enough of a system for kTLS tests (no network but loopback), runs
# /ktls-vm/guest.sh and reports its exit status on the console as
#     KTLS-VM-EXIT <rc> run=<nonce>
# which run-vm.sh turns into its own exit status. The nonce (from the host, per run) keeps a test
# that happens to print "KTLS-VM-EXIT" from faking the result. PID 1 must never exit (the kernel
# panics), so every path ends in poweroff -f.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH HOME=/root TERM=dumb TMPDIR=/tmp
umask 022

mount -t devtmpfs devtmpfs /dev 2>/dev/null
# If the initramfs had no /dev/console node, the kernel gave us no stdio; take it now.
[ -t 1 ] || exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
# No tmpfs on /tmp or /run: the root is already a tmpfs (the kernel unpacks the initramfs into
# one when no root= is given), and a mount would hide files the overlay put there, such as a
# build directory under /tmp.
mkdir -p /tmp /run
chmod 1777 /tmp
echo "ktls-vm: init started at uptime $(cut -d' ' -f1 /proc/uptime)s, kernel $(uname -r)"

nonce=$(cat /ktls-vm/nonce 2>/dev/null || echo none)
finish() {
  echo
  echo "KTLS-VM-EXIT $1 run=$nonce"
  sync
  poweroff -f
  sleep 5 # poweroff -f does not return; if it does, let the kernel's panic=-1 end the VM
  exit "$1"
}

cmdline_value() { # cmdline_value KEY: prints VALUE of KEY=VALUE on the kernel command line
  read -r cmdline </proc/cmdline
  for w in $cmdline; do
    case $w in "$1"=*) echo "${w#*=}" ;; esac
  done
}

# TLS certificates have validity periods; qemu's RTC normally gives the host's time, but do not
# rely on it: the host passes its clock as ktls_epoch= and we never run behind it.
host_epoch=$(cmdline_value ktls_epoch)
if [ -n "$host_epoch" ] && [ "$(date +%s)" -lt "$host_epoch" ]; then
  date -u -s "@$host_epoch" >/dev/null && echo "ktls-vm: clock set from host: $(date -u)"
fi

unset ktls_epoch # the kernel hands unknown KEY=VALUE parameters to init as environment
hostname ktls-vm
ip link set lo up || finish 120

# The kernel loads crypto templates (gcm, ctr, ghash ...) on demand when TLS_TX/TLS_RX is set, via
# the program named here; without it kTLS setup fails and OpenSSL silently stays in userspace.
echo /sbin/modprobe >/proc/sys/kernel/modprobe
if ! modprobe tls; then
  echo "ktls-vm: FATAL: cannot load the tls module"
  finish 121
fi
# Without the accelerated modules gcm(aes) is the generic C implementation and kTLS is slower than
# userspace OpenSSL; load what exists, report what is missing.
loaded="" missing=""
for m in aesni_intel ghash_clmulni_intel chacha_x86_64 poly1305_x86_64; do
  if modprobe -q "$m" 2>/dev/null && [ -d "/sys/module/$m" ]; then
    loaded="$loaded $m"
  else
    missing="$missing $m"
  fi
done
echo "ktls-vm: crypto modules loaded:${loaded:- none}; unavailable:${missing:- none}"
# The highest-priority gcm(aes) provider is what kTLS will use.
awk '/^name/ { name = $3 } /^driver/ { drv = $3 } /^priority/ && name == "gcm(aes)" {
       if ($3 > best) { best = $3; bdrv = drv } }
     END { print "ktls-vm: gcm(aes) driver: " (bdrv == "" ? "none registered yet" : bdrv " (priority " best ")") }' /proc/crypto

# Environment for the guest script: fixed flags, then what the host passed (/ktls-vm/env holds
# shell-quoted NAME=VALUE lines).
KTLS_VM_KERNEL=$(uname -r)
export KTLS_VM=1 KTLS_EXPECT_OFFLOAD=1 KTLS_VM_KERNEL
if [ -f /ktls-vm/env ]; then
  set -a
  # shellcheck disable=SC1091 # written by run-vm.sh at boot-image time
  . /ktls-vm/env
  set +a
fi

echo "ktls-vm: running guest script at uptime $(cut -d' ' -f1 /proc/uptime)s"
cd /root || finish 122
/bin/sh /ktls-vm/guest.sh
rc=$?
cd /
finish "$rc"
