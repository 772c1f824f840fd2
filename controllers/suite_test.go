package controllers

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	heraldv1 "github.com/heraldhq/herald/api/v1alpha1"
	"github.com/heraldhq/herald/controllers/redisconf"
	"github.com/heraldhq/herald/internal/testing/testenv"
)

// k8s talks to the envtest API server directly, without a cache, so what a test reads is what
// the API server holds.
// The suite runs the reconciler with short periods so resync and cleanup timeouts are observable.
const (
	resyncPeriod   = 2 * time.Second
	cleanupTimeout = 3 * time.Second
)

var (
	redisPool  *redisconf.Pool
	reconciles = &counter{n: map[types.NamespacedName]int{}}
	apiWrites  = &writeCounter{byNS: map[string]int{}}
	k8s        client.Client
	scheme     = runtime.NewScheme()
	testEnv    *envtest.Environment
)

func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(heraldv1.AddToScheme(scheme))
	utilruntime.Must(apiextensionsv1.AddToScheme(scheme))
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapLevel())))

	testEnv = &envtest.Environment{}
	cfg, err := testenv.Start(testEnv)
	defer func() { _ = testEnv.Stop() }() // also after a failed start, which may leave processes
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting envtest:", err)
		return 1
	}

	if k8s, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		fmt.Fprintln(os.Stderr, "creating client:", err)
		return 1
	}
	mgrCfg := rest.CopyConfig(cfg)
	mgrCfg.WrapTransport = apiWrites.wrap
	mgr, err := ctrl.NewManager(mgrCfg, ctrl.Options{
		Scheme:  scheme,
		Cache:   CacheOptions(),
		Client:  ClientOptions(),
		Metrics: metricsserver.Options{BindAddress: "0"},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "creating manager:", err)
		return 1
	}
	redisPool = &redisconf.Pool{}
	if err := (&NotificationChannelReconciler{
		Client:           mgr.GetClient(),
		APIReader:        mgr.GetAPIReader(),
		Recorder:         mgr.GetEventRecorder("herald-manager"),
		Redis:            redisPool,
		DefaultRedis:     DefaultRedis{Options: redisconf.Options{Addrs: redisSeeds()}},
		RelayImage:       "herald:test",
		RelayClusterRole: "herald-relay",
		// As the chart runs it: Secrets through a binding of the manager itself per namespace.
		SecretsClusterRole:    "herald-manager-secrets",
		ManagerServiceAccount: managerServiceAccount,
		MetricsScrapers:       &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "monitoring"}},
		ResyncPeriod:          resyncPeriod,
		CleanupTimeout:        cleanupTimeout,
		Workers:               4,
		Policy: Policy{
			RedisAddresses:  []string{"127.0.0.1:*"},
			RelayImages:     []string{"registry.test/herald:*"},
			PriorityClasses: []string{"realtime"},
			RelayLimits:     heraldv1.RelayLimits{MaxSubscribersPerCaller: ptr[int32](5000)},
		},
		reconciled: reconciles.inc,
	}).SetupWithManager(mgr); err != nil {
		fmt.Fprintln(os.Stderr, "setting up reconciler:", err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	defer func() { cancel(); <-done }()

	return m.Run()
}

// managerServiceAccount is the identity the suite's manager binds to Secrets, as the chart's does.
var managerServiceAccount = types.NamespacedName{Namespace: "herald-system", Name: "herald-manager"}

// zapLevel keeps the manager quiet unless HERALD_TEST_VERBOSE is set.
func zapLevel() zapcore.Level {
	if os.Getenv("HERALD_TEST_VERBOSE") != "" {
		return -1
	}
	return 2
}

// newNamespace creates a namespace of its own for one test.
func newNamespace(t testing.TB) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "test-"}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	return ns.Name
}

// eventually polls cond until it returns nil or the timeout passes.
var eventually = testenv.Eventually

// redisSeeds is the Redis Cluster `make test` starts.
var redisSeeds = testenv.RedisSeeds

// counter counts finished reconciles per channel, so a test can wait for resyncs to happen.
type counter struct {
	mu sync.Mutex
	n  map[types.NamespacedName]int
}

func (c *counter) inc(key types.NamespacedName) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[key]++
}

func (c *counter) get(key types.NamespacedName) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[key]
}

// writeCounter counts the manager's write requests to the API server (events excluded), in all
// and per namespace.
type writeCounter struct {
	n    atomic.Int64
	mu   sync.Mutex
	byNS map[string]int
}

func (w *writeCounter) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		if req.Method != http.MethodGet && !strings.Contains(req.URL.Path, "/events") {
			w.n.Add(1)
			if _, rest, ok := strings.Cut(req.URL.Path, "/namespaces/"); ok {
				ns, _, _ := strings.Cut(rest, "/")
				w.mu.Lock()
				w.byNS[ns]++
				w.mu.Unlock()
				if os.Getenv("HERALD_TEST_LOG_WRITES") != "" {
					fmt.Fprintln(os.Stderr, "WRITE", req.Method, req.URL.Path)
				}
			}
		}
		return rt.RoundTrip(req)
	})
}

func (w *writeCounter) in(ns string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.byNS[ns]
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }
