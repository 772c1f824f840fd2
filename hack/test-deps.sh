#!/usr/bin/env bash
# Installs, from Debian's packages, what the tests drive besides Go and Redis and the machine
# lacks: a real browser (chromium, headless) and what the client examples need (nodejs and tsc,
# python3). Installs nothing when all are there.
set -euo pipefail
missing=()
for need in chromium:chromium node:nodejs tsc:node-typescript python3:python3; do
	command -v "${need%%:*}" >/dev/null || missing+=("${need#*:}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "test-deps: ${missing[*]} missing; install them as root: apt-get install -y ${missing[*]}" >&2
	exit 1
fi
echo "test-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >&2
