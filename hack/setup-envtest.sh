#!/usr/bin/env bash
# Builds the envtest control plane (kube-apiserver and etcd) from the Go module proxy and caches
# it outside the repository. Prints the directory to use as KUBEBUILDER_ASSETS.
#
# Release download sites may be unreachable, so the binaries are compiled from their Go modules:
# kube-apiserver from k8s.io/kubernetes (hack/lib/k8s-build.sh) and etcd from
# go.etcd.io/etcd/server/v3. The first run takes 7 to 12 minutes on two cores; later runs find
# the cache and return at once.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-1.37.2}
ETCD_VERSION=${ETCD_VERSION:-3.6.16}
CACHE_ROOT=${HERALD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/herald}
DEST="$CACHE_ROOT/k8s/$K8S_VERSION"

log() { echo "setup-envtest: $*" >&2; }
# shellcheck source=hack/lib/k8s-build.sh
. "$(dirname "$0")/lib/k8s-build.sh"

build_kube_apiserver() {
	local work=$1
	log "building kube-apiserver v$K8S_VERSION (7 to 12 minutes on two cores)"
	mkdir -p "$work/apiserver"
	k8s_module "$work/apiserver" herald.local/kube-apiserver
	cd "$work/apiserver"
	cat >main.go <<'GO'
package main

import (
	"os"

	_ "time/tzdata"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
GO
	k8s_build "$DEST.tmp/kube-apiserver" .
}

build_etcd() {
	local work=$1
	log "building etcd v$ETCD_VERSION"
	mkdir -p "$work/etcd"
	cd "$work/etcd"
	cat >go.mod <<GOMOD
module herald.local/etcd

go 1.26

require go.etcd.io/etcd/server/v3 v$ETCD_VERSION
GOMOD
	cat >main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
GO
	GOFLAGS=-mod=mod go mod tidy >&2
	CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$DEST.tmp/etcd" . >&2
}

if [ -x "$DEST/kube-apiserver" ] && [ -x "$DEST/etcd" ]; then
	echo "$DEST"
	exit 0
fi

command -v go >/dev/null || { log "go is not on PATH"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$DEST.tmp"
[ -x "$DEST.tmp/etcd" ] || (build_etcd "$work")
[ -x "$DEST.tmp/kube-apiserver" ] || (build_kube_apiserver "$work")
"$DEST.tmp/kube-apiserver" --version >&2
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
log "cached in $DEST"
echo "$DEST"
