#!/usr/bin/env bash
# Installs, from Debian's packages, what the local cluster's node needs and the machine lacks:
# containerd, runc, the CNI plugins, iptables and iproute2. Installs nothing when all are there.
set -euo pipefail
missing=()
for need in containerd:containerd ctr:containerd runc:runc /usr/lib/cni/bridge:containernetworking-plugins \
	iptables:iptables ip:iproute2; do
	command -v "${need%%:*}" >/dev/null || missing+=("${need#*:}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "node-deps: ${missing[*]} missing; install them as root: apt-get install -y ${missing[*]}" >&2
	exit 1
fi
echo "node-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >&2
