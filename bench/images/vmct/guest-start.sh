#!/bin/sh
# Guest-side preparation before the vm-container agent (or the guest test run) starts: the VM
# harness's init shim has mounted /proc, /sys, /dev and the pure cgroup v2 hierarchy; this loads the
# kernel modules the container runtime needs (the guest disk carries them for the guest kernel's
# version under /lib/modules) and makes the runtime directories Debian's systemd would make.
set -e
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mkdir -p /run/lock /run/isobench
modprobe -a overlay veth bridge nf_tables nft_chain_nat nft_nat nft_masq nft_ct nft_fib_inet nft_fib_ipv4
exec "$@"
