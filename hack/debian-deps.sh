#!/usr/bin/env bash
# Usage: hack/debian-deps.sh WHAT COMMAND:PACKAGE...
# Installs from Debian's packages each PACKAGE whose COMMAND (or file) the machine lacks, as
# root; otherwise it prints the apt-get command and fails. Installs nothing when all are there.
set -euo pipefail
what=$1
shift
missing=()
for need in "$@"; do
	have=${need%%:*}
	command -v "$have" >/dev/null || [ -e "$have" ] || missing+=("${need#*:}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "$what: ${missing[*]} missing; install them as root: apt-get install -y ${missing[*]}" >&2
	exit 1
fi
echo "$what: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >&2
