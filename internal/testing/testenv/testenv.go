// Package testenv holds what Herald's envtest suites share: a real kube-apiserver and etcd with the
// project's CRDs installed, polling for a condition, the API server's warnings, and the address of
// the Redis Cluster that `make test` starts.
package testenv

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/heraldhq/herald/internal/testing/rediscluster"
)

// Root is the module's root directory.
func Root() string {
	root, err := rediscluster.ModuleRoot()
	if err != nil {
		panic(err)
	}
	return root
}

// Start starts a control plane with the CRDs of config/crd/bases. Stop the returned environment
// even when Start fails: a half-started one may have left processes behind.
func Start(env *envtest.Environment) (*rest.Config, error) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		return nil, errors.New("KUBEBUILDER_ASSETS is not set: run the tests with `make test`, " +
			"or export KUBEBUILDER_ASSETS=$(hack/setup-envtest.sh)")
	}
	env.CRDDirectoryPaths = append(env.CRDDirectoryPaths, filepath.Join(Root(), "config", "crd", "bases"))
	env.ErrorIfCRDPathMissing = true
	// Every channel owns Services: envtest's default /24 runs out of cluster IPs at ~250.
	env.ControlPlane.GetAPIServer().Configure().Set("service-cluster-ip-range", "10.0.0.0/16")
	return env.Start()
}

// Eventually polls cond until it returns nil, or fails the test with cond's last error once
// timeout has passed.
func Eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %v", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Warnings records the warnings the API server sends back (admission warnings, PodSecurity).
// Set it as a rest.Config's WarningHandler.
type Warnings struct {
	mu   sync.Mutex
	msgs []string
}

// HandleWarningHeader implements rest.WarningHandler.
func (w *Warnings) HandleWarningHeader(_ int, _ string, msg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, msg)
}

// Mark is a position to read warnings from with Since.
func (w *Warnings) Mark() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.msgs)
}

// Since returns the warnings recorded after mark.
func (w *Warnings) Since(mark int) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.msgs[mark:]...)
}

// RedisSeeds is the Redis Cluster `make test` starts (hack/redis-cluster.sh), from HERALD_REDIS_ADDRS.
func RedisSeeds() []string {
	if a := os.Getenv("HERALD_REDIS_ADDRS"); a != "" {
		return strings.Split(a, ",")
	}
	return []string{"127.0.0.1:7001"}
}
