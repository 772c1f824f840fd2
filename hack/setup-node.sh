#!/usr/bin/env bash
# Builds what a real node needs beside the envtest control plane (hack/setup-envtest.sh):
# kube-controller-manager, kube-scheduler, kubelet and kube-proxy from k8s.io/kubernetes, and
# CoreDNS (cluster DNS for Service names), all from the Go module proxy, cached in the same
# directory as kube-apiserver and etcd. Prints that directory.
#
# The four Kubernetes components are mains of one throw-away module (hack/lib/k8s-build.sh, as
# kube-apiserver), built by one `go build` so their shared packages compile once; with the same
# flags as kube-apiserver's build, Go's build cache shares most of that work too. CoreDNS is built with only the plugins a cluster
# needs (kubernetes, cache, errors, and bind to listen on the node's address only; no forward:
# nothing here resolves names off the machine).
# Cold: about 3 minutes on two cores after kube-apiserver; later runs return at once.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-1.37.2}
COREDNS_VERSION=${COREDNS_VERSION:-1.15.0}
CACHE_ROOT=${HERALD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/herald}
DEST="$CACHE_ROOT/k8s/$K8S_VERSION"
COMPONENTS=(kube-controller-manager kube-scheduler kubelet kube-proxy)

log() { echo "setup-node: $*" >&2; }
# shellcheck source=hack/lib/k8s-build.sh
. "$(dirname "$0")/lib/k8s-build.sh"

# main_of prints the main package of a component: upstream's cmd/<name>/<name>.go, unchanged in
# substance (a cobra command run by component-base's cli).
main_of() {
	local pkg=$1 ctor=$2 ctx=
	case $ctor in *context.*) ctx='"context"' ;; esac
	cat <<GO
package main

import (
	$ctx
	"os"

	_ "time/tzdata"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/$pkg/app"
)

func main() {
	os.Exit(cli.Run(app.$ctor))
}
GO
}

build_kubernetes() {
	local work=$1
	log "building ${COMPONENTS[*]} v$K8S_VERSION"
	mkdir -p "$work/node"
	k8s_module "$work/node" herald.local/node
	cd "$work/node"
	mkdir -p cmd/kube-controller-manager cmd/kube-scheduler cmd/kubelet cmd/kube-proxy
	main_of kube-controller-manager 'NewControllerManagerCommand()' >cmd/kube-controller-manager/main.go
	main_of kube-scheduler 'NewSchedulerCommand()' >cmd/kube-scheduler/main.go
	main_of kubelet 'NewKubeletCommand(context.Background())' >cmd/kubelet/main.go
	main_of kube-proxy 'NewProxyCommand()' >cmd/kube-proxy/main.go
	k8s_build "$DEST.node.tmp/" ./cmd/...
}

build_coredns() {
	local work=$1
	log "building coredns v$COREDNS_VERSION"
	mkdir -p "$work/coredns"
	cd "$work/coredns"
	cat >go.mod <<GOMOD
module herald.local/coredns

go 1.26

require github.com/coredns/coredns v$COREDNS_VERSION
GOMOD
	cat >main.go <<'GO'
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/kubernetes"
)

func init() {
	// The order plugins run in (CoreDNS's plugin.cfg order); only those imported above.
	dnsserver.Directives = []string{"bind", "errors", "cache", "kubernetes"}
}

func main() { coremain.Run() }
GO
	GOFLAGS=-mod=mod go mod tidy >&2
	CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$DEST.node.tmp/coredns" . >&2
}

# has NAME: the binary is built, cached or from an interrupted run.
has() { [ -x "$DEST/$1" ] || [ -x "$DEST.node.tmp/$1" ]; }

missing=0
for c in "${COMPONENTS[@]}" coredns; do
	[ -x "$DEST/$c" ] || missing=1
done
if [ $missing = 0 ]; then
	echo "$DEST"
	exit 0
fi

command -v go >/dev/null || { log "go is not on PATH"; exit 1; }
# kube-apiserver first: its build fills Go's build cache with most of what these need, and it
# replaces the whole cache directory when it is missing.
"$(dirname "$0")/setup-envtest.sh" >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$DEST" "$DEST.node.tmp"
for c in "${COMPONENTS[@]}"; do
	has "$c" || { (build_kubernetes "$work"); break; }
done
has coredns || (build_coredns "$work")
for c in "${COMPONENTS[@]}" coredns; do
	[ ! -x "$DEST.node.tmp/$c" ] || mv -f "$DEST.node.tmp/$c" "$DEST/$c"
done
rm -rf "$DEST.node.tmp"
"$DEST/kubelet" --version >&2
log "cached in $DEST"
echo "$DEST"
