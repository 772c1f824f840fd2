# Herald: run `make help` for the targets.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

GOBIN_DIR       := $(CURDIR)/bin
CONTROLLER_GEN  := $(GOBIN_DIR)/controller-gen
HELM            := $(GOBIN_DIR)/helm
GOLANGCI_LINT   := $(GOBIN_DIR)/golangci-lint
CONTROLLER_TOOLS_VERSION ?= v0.23.0
HELM_VERSION             ?= v3.22.0
GOLANGCI_LINT_VERSION    ?= v2.15.0

# Ports of the local Redis Cluster the tests use (3 masters + 3 replicas from here on).
REDIS_CLUSTER_BASE_PORT ?= 7001
# Nodes of the local cluster `make dev` starts (each a kubelet and containerd of its own, in a zone of its own).
NODES ?= 1
export HERALD_REDIS_ADDRS ?= 127.0.0.1:$(REDIS_CLUSTER_BASE_PORT)

# How much each fuzz target runs inside `make test`: a count of executions (5-20 seconds
# each here), not a duration. With a duration, Go 1.26's fuzz coordinator can report its own
# deadline as a failure on a busy machine (golang/go#75804, fixed in Go 1.27).
FUZZTIME ?= 400000x

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z0-9_-]+:.*##/ {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate the CRD and RBAC manifests from the Go markers.
	$(CONTROLLER_GEN) rbac:roleName=manager crd paths="./api/..." paths="./controllers/..." \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	hack/chart-crds.sh
	go run ./hack/schemadoc

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate DeepCopy methods.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: fmt
fmt: ## gofmt the code.
	gofmt -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## go vet the code.
	go vet ./...

.PHONY: lint
lint: $(GOLANGCI_LINT) ## Run golangci-lint.
	$(GOLANGCI_LINT) run ./...

ACTIONLINT_VERSION ?= v1.7.12

.PHONY: lint-workflows
lint-workflows: ## Check .github/workflows with actionlint.
	go run github.com/rhysd/actionlint/cmd/actionlint@$(ACTIONLINT_VERSION)

.PHONY: verify-generated
verify-generated: manifests generate ## Fail if generated files are out of date, or a build output is tracked.
	@hack/verify-tree.sh
	@git diff --exit-code -- config/crd config/rbac api charts/herald/templates/crds.yaml charts/herald/values.schema.json || \
		{ echo "generated files are stale: run 'make manifests generate' and commit" >&2; exit 1; }

##@ Test

.PHONY: envtest
envtest: ## Build (once, cached) the envtest kube-apiserver and etcd.
	@hack/setup-envtest.sh >/dev/null

.PHONY: redis-up
redis-up: ## Start the local Redis Cluster (127.0.0.1:7001-7006).
	REDIS_CLUSTER_BASE_PORT=$(REDIS_CLUSTER_BASE_PORT) hack/redis-cluster.sh up

.PHONY: redis-down
redis-down: ## Stop the local Redis Cluster.
	REDIS_CLUSTER_BASE_PORT=$(REDIS_CLUSTER_BASE_PORT) hack/redis-cluster.sh down

.PHONY: test
test: ## Run every test against real parts (envtest, Redis Cluster, a headless browser) and the fuzz targets briefly.
	@hack/test-deps.sh
	@assets=$$(hack/setup-envtest.sh); \
	REDIS_CLUSTER_BASE_PORT=$(REDIS_CLUSTER_BASE_PORT) hack/redis-cluster.sh up; \
	trap 'REDIS_CLUSTER_BASE_PORT=$(REDIS_CLUSTER_BASE_PORT) hack/redis-cluster.sh down' EXIT; \
	KUBEBUILDER_ASSETS=$$assets go test -count=1 -timeout 30m ./... ; \
	hack/fuzz.sh $(FUZZTIME)

# Ports of the end-to-end test's own Redis Cluster (six from here on).
E2E_REDIS_BASE_PORT ?= 7901

.PHONY: test-e2e
test-e2e: images $(HELM) ## End-to-end test on a local cluster with a real node (as root): Herald installed by its chart, faults at pod and Redis level.
	@hack/node-deps.sh
	@hack/setup-node.sh >/dev/null
	HERALD_E2E_REDIS_BASE_PORT=$(E2E_REDIS_BASE_PORT) go test -tags e2e -count=1 -timeout 45m -v ./test/e2e/

# Extra flags of the load generator, e.g. BENCH_FLAGS="-only=ae -subscribers=1000".
BENCH_FLAGS ?=

.PHONY: bench
bench: build ## Whole-system benchmark beside a raw-Redis baseline: one Markdown table + bin/bench/results.json (docs/performance.md).
	go build -o bin/herald-bench ./bench/cmd/herald-bench
	ulimit -n "$$(ulimit -Hn)" 2>/dev/null || true; \
	bin/herald-bench -herald=bin/herald -redis-base-port=7201 -port-base=7210 $(BENCH_FLAGS)

##@ Build and run

.PHONY: release sign
release: $(HELM) ## Build a release into dist/ (VERSION=x.y.z) and, with REGISTRY=host/path, push its image (amd64 + arm64 index) and chart.
	VERSION=$(VERSION) REGISTRY=$(REGISTRY) HELM=$(HELM) hack/release.sh

sign: ## Sign the image and chart `make release` pushed and dist/SHA256SUMS (cosign, keyless: the release workflow).
	hack/sign.sh

.PHONY: build

build: ## Build bin/herald.
	CGO_ENABLED=0 go build -trimpath -o bin/herald .

.PHONY: run
run: ## Run the manager against the current kubeconfig and the local Redis Cluster.
	go run . manager --redis-addresses=$(HERALD_REDIS_ADDRS)

.PHONY: images
images: build ## Write the local images (Herald, pause, orders-app, the e2e forwarder) as OCI archives into bin/images.
	CGO_ENABLED=0 go build -trimpath -o bin/pause ./hack/pause
	CGO_ENABLED=0 go build -trimpath -o bin/orders-app ./config/samples/orders-app
	CGO_ENABLED=0 go build -trimpath -o bin/e2e-forwarder ./test/e2e/forwarder
	go run ./hack/images -out bin/images -tag dev -app e2e-forwarder=bin/e2e-forwarder

.PHONY: dev
dev: images $(HELM) ## Start Herald on a local cluster of NODES real nodes (1 by default; as root); Ctrl-C stops it all.
	@hack/node-deps.sh
	go build -o bin/localup ./hack/localup
	bin/localup --redis-base-port=$(REDIS_CLUSTER_BASE_PORT) --nodes=$(NODES)

.PHONY: dev-down
dev-down: ## Stop a running `make dev` and remove whatever a crashed one left (processes, mounts, bridge, iptables chains).
	go build -o bin/localup ./hack/localup
	bin/localup --down

.PHONY: helm-lint
# The oldest Kubernetes the chart supports (native sidecars) and the newest it is tested on.
KUBE_VERSIONS ?= 1.30.0 1.37.2

helm-lint: $(HELM) ## Lint the Helm chart and render it with its default and its optional values, at the oldest and newest supported Kubernetes.
	@for v in $(KUBE_VERSIONS); do \
		$(HELM) lint --strict charts/herald --kube-version $$v && \
		$(HELM) lint --strict charts/herald --kube-version $$v --set webhook.certificates.mode=certManager --set metrics.serviceMonitor.enabled=true && \
		$(HELM) template herald charts/herald --kube-version $$v --namespace herald-system --include-crds >/dev/null && \
		$(HELM) template herald charts/herald --kube-version $$v --namespace herald-system --set manager.replicas=2 \
			--set webhook.certificates.mode=certManager --set metrics.serviceMonitor.enabled=true >/dev/null || exit 1; \
	done

##@ Tools (installed into bin/ from the Go module proxy)

$(CONTROLLER_GEN):
	GOBIN=$(GOBIN_DIR) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)

$(HELM):
	GOBIN=$(GOBIN_DIR) go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

$(GOLANGCI_LINT):
	GOBIN=$(GOBIN_DIR) go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
