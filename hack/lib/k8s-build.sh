# Shared by hack/setup-envtest.sh and hack/setup-node.sh (sourced, not run): how to build
# Kubernetes components from the Go module proxy. k8s.io/kubernetes's go.mod points its staging
# modules at ./staging, which the module zip lacks, so a throw-away module replaces each of them
# with its published version (k8s.io/x v0.N.P for Kubernetes 1.N.P).
# Needs K8S_VERSION and a log function.

# k8s_module DIR NAME: writes DIR/go.mod, a module NAME that requires k8s.io/kubernetes.
k8s_module() {
	local dir=$1 name=$2 gomod staging="v0.${K8S_VERSION#1.}"
	gomod=$(cd "$dir" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" |
		sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
	[ -f "$gomod" ] || { log "cannot find the go.mod of k8s.io/kubernetes@v$K8S_VERSION"; exit 1; }
	{
		echo "module $name"
		echo
		echo "go 1.26"
		echo
		echo "require k8s.io/kubernetes v$K8S_VERSION"
		echo
		# Every "k8s.io/x => ./staging/src/k8s.io/x" becomes "k8s.io/x => k8s.io/x v0.N.P".
		sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\) => \./staging/.*#replace \1 => \1 '"$staging"'#p' "$gomod"
	} >"$dir/go.mod"
}

# k8s_build OUT PACKAGES...: tidies the module in the working directory and builds PACKAGES
# static and version-stamped (else --version says v0.0.0-master) into OUT. The same flags for
# every component, so Go's build cache shares their common packages.
k8s_build() {
	local out=$1 minor=${K8S_VERSION#1.} v=k8s.io/component-base/version
	shift
	minor=${minor%%.*}
	GOFLAGS=-mod=mod go mod tidy >&2
	CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -o "$out" -ldflags "-s -w \
		-X $v.gitVersion=v$K8S_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor \
		-X $v.gitTreeState=clean -X $v.buildDate=1970-01-01T00:00:00Z" "$@" >&2
}
