#!/usr/bin/env bash
# Installs, from Debian's packages, what the local cluster's node needs and the machine lacks:
# containerd, runc, the CNI plugins, iptables and iproute2. Installs nothing when all are there.
exec "$(dirname "$0")/debian-deps.sh" node-deps containerd:containerd ctr:containerd runc:runc \
	/usr/lib/cni/bridge:containernetworking-plugins iptables:iptables ip:iproute2
