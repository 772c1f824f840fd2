// Command herald is Herald's one binary:
//
//	herald [manager] [flags]   the operator: NotificationChannel controller (the default)
//	herald relay [flags]       the relay, as a per-shard Deployment or an injected sidecar
//	herald probe URL           exit 0 when URL answers 2xx (exec probes of the loopback-only sidecar)
//	herald plan [flags]        what a load needs: shards, relay pods, Redis masters (docs/capacity.md)
//	herald version             print the version
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	goruntime "runtime"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	heraldv1 "github.com/heraldhq/herald/api/v1alpha1"
	"github.com/heraldhq/herald/capacity"
	"github.com/heraldhq/herald/controllers"
	"github.com/heraldhq/herald/controllers/injection"
	"github.com/heraldhq/herald/controllers/redisconf"
	"github.com/heraldhq/herald/internal/cli"
	"github.com/heraldhq/herald/internal/version"
	"github.com/heraldhq/herald/relay"
)

func main() {
	args := os.Args[1:]
	cmd := "manager"
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "manager":
		err = runManager(args)
	case "probe":
		err = probe(args)
	case "plan":
		err = capacity.Main(args, os.Stdout, os.Stderr, os.Getenv)
	case "version":
		fmt.Printf("herald %s (%s, %s/%s)\n", version.Version, goruntime.Version(), goruntime.GOOS, goruntime.GOARCH)
	case "relay":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err = relay.Main(ctx, args)
		stop()
	default:
		err = fmt.Errorf("unknown command %q: want \"manager\", \"relay\", \"probe\", \"plan\" or \"version\"", cmd)
	}
	if err != nil && !cli.IsHelp(err) {
		fmt.Fprintln(os.Stderr, "herald:", err)
		os.Exit(1)
	}
}

// runManager runs the operator until SIGTERM or SIGINT.
func runManager(args []string) error {
	fs := cli.New("manager", os.Stderr,
		"Usage: herald [manager] [flags]",
		"",
		"The operator: reconciles NotificationChannels into Redis Cluster configuration and relay",
		"Deployments, and serves the webhook that injects the relay sidecar into opted-in pods.")
	metricsAddr := fs.String("metrics-bind-address", ":8443", "address of the Prometheus /metrics endpoint; \"0\" turns it off")
	metricsSecure := fs.Bool("metrics-secure", true, "serve /metrics over HTTPS to scrapers whose token may GET /metrics (ClusterRole "+controllers.MetricsReaderClusterRole+"); false: plain HTTP to anyone")
	metricsCertDir := fs.String("metrics-cert-dir", "", "directory of tls.crt and tls.key for --metrics-secure; empty: a self-signed certificate")
	probeAddr := fs.String("health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	leaderElect := fs.Bool("leader-elect", false, "elect a leader so that only one manager replica reconciles")
	leaderNS := fs.String("leader-election-namespace", "", "namespace of the leader election Lease (default: the pod's namespace)")
	redisAddrs := fs.String("redis-addresses", "", "comma-separated host:port seeds of the default Redis Cluster (or one standalone Redis)")
	redisUser := fs.String("redis-username", "", "Redis user of the operator (needs ACL SETUSER, XGROUP, SCAN, UNLINK on every node)")
	redisPasswordFile := fs.String("redis-password-file", "", "file holding the operator's Redis password")
	redisTLS := fs.Bool("redis-tls", false, "connect to the default Redis over TLS")
	redisCAFile := fs.String("redis-tls-ca-file", "", "PEM CA bundle for the default Redis (default: system roots)")
	redisServerName := fs.String("redis-tls-server-name", "", "name to check in the default Redis's certificate")
	redisCertFile := fs.String("redis-tls-cert-file", "", "PEM client certificate the operator presents to a default Redis that asks for one (tls-auth-clients); re-read when it changes, never handed to relays (see --redis-tls-client-ca-file)")
	redisKeyFile := fs.String("redis-tls-key-file", "", "PEM private key of --redis-tls-cert-file")
	redisClientCAFile := fs.String("redis-tls-client-ca-file", "", "PEM CA certificate the default Redis trusts for client certificates: each channel's relays get one of their own, issued from it")
	redisClientCAKeyFile := fs.String("redis-tls-client-ca-key-file", "", "PEM private key of --redis-tls-client-ca-file")
	relayImage := fs.String("relay-image", version.Image(), "image of the relay Deployments (spec.relay.image overrides)")
	relayResources := fs.String("relay-resources", `{"requests":{"cpu":"50m","memory":"64Mi"},"limits":{"memory":"256Mi"}}`,
		"JSON ResourceRequirements of relay containers (spec.relay.resources overrides)")
	relayLogLevel := fs.String("relay-log-level", "", "log level of the relays and injected sidecars (debug, info, warn, error) unless spec.relay.logLevel or a pod's notifications.herald.dev/sidecar-log-level sets one; empty: the relay's default, info")
	relayClusterRole := fs.String("relay-cluster-role", "herald-relay", "ClusterRole (TokenReview create) bound to each channel's relay ServiceAccount so relays can authenticate sidecars; empty: no binding")
	metricsScrapers := fs.String("relay-metrics-namespace-selector", "", "label selector (e.g. kubernetes.io/metadata.name=monitoring) of the namespaces each channel's NetworkPolicy lets reach the relays' /metrics; empty: none besides the channel's own and spec.access")
	workers := fs.Int("workers", 4, "channels reconciled at once (each waits mostly on Redis and the API server)")
	resync := fs.Duration("resync-period", 60*time.Second, "how often a channel is checked against Redis (re-creating lost ACL users and streams)")
	redisWatch := fs.Duration("redis-watch-interval", 3*time.Second, "how often every Redis in use is checked for restarted, new or recovered nodes, which get the channels' ACL users at once")
	allowedRedis := fs.String("allowed-redis-addresses", "", "comma-separated path.Match patterns of the host:port a channel's spec.redis may name (and its nodes may announce), e.g. redis-*.data.svc:6379; empty: spec.redis is refused")
	allowedImages := fs.String("allowed-relay-images", "", "comma-separated path.Match patterns of the images spec.relay.image may name besides --relay-image, e.g. registry.example/herald:*")
	allowedPriorityClasses := fs.String("allowed-priority-classes", "", "comma-separated priority classes spec.relay.priorityClassName may name; empty: none")
	maxRedisNodes := fs.Int("max-redis-nodes", 1000, "refuse a Redis whose CLUSTER SHARDS lists more nodes than this")
	reconcileTimeout := fs.Duration("reconcile-timeout", 2*time.Minute, "deadline of one pass over a channel (Redis and Kubernetes calls)")
	cleanupTimeout := fs.Duration("cleanup-timeout", 10*time.Minute, "how long Redis cleanup of a deleted channel is retried before the channel reports CleanupFailed")
	webhookPort := fs.Int("webhook-port", 9443, "port of the sidecar injection webhook; 0 turns the webhook off")
	webhookCertDir := fs.String("webhook-cert-dir", "/tmp/k8s-webhook-server/serving-certs", "directory of the webhook's tls.crt and tls.key")
	webhookCertMode := fs.String("webhook-cert-mode", "selfManaged", "selfManaged: the manager issues and rotates the webhook certificate; external: cert-manager or another tool writes it to --webhook-cert-dir")
	namespace := fs.String("namespace", os.Getenv("POD_NAMESPACE"), "the manager's namespace (default: $POD_NAMESPACE, else the service account's namespace)")
	sidecarMetricsPort := fs.Int("sidecar-metrics-port", 7071, "port of the injected sidecars' /metrics on the pod IP (with prometheus.io scrape annotations); 0 keeps metrics on loopback")
	pullPolicy := fs.String("relay-image-pull-policy", "", "imagePullPolicy of relays and sidecars (Always, IfNotPresent, Never) unless spec.relay sets one; empty: Kubernetes' default")
	pullSecrets := fs.String("relay-image-pull-secrets", "", "comma-separated Secrets (in each channel's or pod's namespace) to pull the relay image with, for relays (unless spec.relay sets its own) and sidecars")
	sidecarResources := fs.String("sidecar-resources", "", "JSON ResourceRequirements of injected sidecars (pod annotations override); empty: 10m CPU / 32Mi requests, 128Mi limit")
	sidecarImage := fs.String("sidecar-image", "", "image of the injected sidecar (default: --relay-image)")
	if err := fs.Parse(args, os.Getenv); err != nil {
		return err
	}
	logger, err := fs.Logger(os.Stderr)
	if err != nil {
		return err
	}
	// One JSON logger for Herald's code and controller-runtime's.
	slog.SetDefault(logger)
	ctrl.SetLogger(logr.FromSlogHandler(logger.Handler()))
	ctrlmetrics.Registry.MustRegister(version.BuildInfo("manager"))

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(heraldv1.AddToScheme(scheme))

	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("loading kubeconfig: %w", err)
	}
	defaultRedis, err := controllers.DefaultRedisFlags{
		Addresses: *redisAddrs, Username: *redisUser, PasswordFile: *redisPasswordFile,
		TLS: *redisTLS, CAFile: *redisCAFile, ServerName: *redisServerName,
		CertFile: *redisCertFile, KeyFile: *redisKeyFile,
		ClientCAFile: *redisClientCAFile, ClientCAKeyFile: *redisClientCAKeyFile,
	}.Load()
	if err != nil {
		return err
	}
	var scrapers *metav1.LabelSelector
	if *metricsScrapers != "" {
		if scrapers, err = metav1.ParseToLabelSelector(*metricsScrapers); err != nil {
			return fmt.Errorf("--relay-metrics-namespace-selector: %w", err)
		}
	}
	var resources corev1.ResourceRequirements
	if err := json.Unmarshal([]byte(*relayResources), &resources); err != nil {
		return fmt.Errorf("--relay-resources: %w", err)
	}
	var sidecarRes *corev1.ResourceRequirements
	if *sidecarResources != "" {
		sidecarRes = &corev1.ResourceRequirements{}
		if err := json.Unmarshal([]byte(*sidecarResources), sidecarRes); err != nil {
			return fmt.Errorf("--sidecar-resources: %w", err)
		}
	}
	switch corev1.PullPolicy(*pullPolicy) {
	case "", corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		return fmt.Errorf("--relay-image-pull-policy=%q: want Always, IfNotPresent or Never", *pullPolicy)
	}
	var secrets []corev1.LocalObjectReference
	for _, name := range splitList(*pullSecrets) {
		secrets = append(secrets, corev1.LocalObjectReference{Name: name})
	}

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		Cache:                   controllers.CacheOptions(),
		Metrics:                 controllers.MetricsOptions(*metricsAddr, *metricsSecure, *metricsCertDir),
		HealthProbeBindAddress:  *probeAddr,
		LeaderElection:          *leaderElect,
		LeaderElectionID:        "herald-manager.notifications.herald.dev",
		LeaderElectionNamespace: *leaderNS,
		WebhookServer:           webhook.NewServer(webhook.Options{Port: *webhookPort, CertDir: *webhookCertDir}),
	})
	if err != nil {
		return fmt.Errorf("creating manager: %w", err)
	}
	if err := (&controllers.NotificationChannelReconciler{
		Client:             mgr.GetClient(),
		APIReader:          mgr.GetAPIReader(),
		Recorder:           mgr.GetEventRecorder("herald-manager"),
		Redis:              &redisconf.Pool{},
		DefaultRedis:       defaultRedis,
		RelayImage:         *relayImage,
		RelayResources:     resources,
		RelayLogLevel:      *relayLogLevel,
		RelayPullPolicy:    corev1.PullPolicy(*pullPolicy),
		RelayPullSecrets:   secrets,
		RelayClusterRole:   *relayClusterRole,
		MetricsScrapers:    scrapers,
		ResyncPeriod:       *resync,
		RedisWatchInterval: *redisWatch,
		Policy: controllers.Policy{
			RedisAddresses:  splitList(*allowedRedis),
			RelayImages:     splitList(*allowedImages),
			PriorityClasses: splitList(*allowedPriorityClasses),
		},
		MaxRedisNodes:    *maxRedisNodes,
		ReconcileTimeout: *reconcileTimeout,
		CleanupTimeout:   *cleanupTimeout,
		Workers:          *workers,
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the NotificationChannel controller: %w", err)
	}
	if *webhookPort != 0 {
		if *webhookCertMode != "selfManaged" && *webhookCertMode != "external" {
			return fmt.Errorf("--webhook-cert-mode=%q: want selfManaged or external", *webhookCertMode)
		}
		if *namespace == "" {
			b, _ := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
			*namespace = strings.TrimSpace(string(b))
		}
		if *sidecarImage == "" {
			*sidecarImage = *relayImage
		}
		if err := injection.Setup(mgr, injection.Options{
			Namespace:        *namespace,
			CertDir:          *webhookCertDir,
			SelfManagedCerts: *webhookCertMode == "selfManaged",
			Image:            *sidecarImage,
			LogLevel:         *relayLogLevel,
			MetricsPort:      int32(*sidecarMetricsPort),
			Resources:        sidecarRes,
			PullPolicy:       corev1.PullPolicy(*pullPolicy),
			PullSecrets:      secrets,
		}); err != nil {
			return err
		}
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	ctrl.Log.WithName("setup").Info("Starting manager")
	return mgr.Start(ctrl.SetupSignalHandler())
}

// splitList reads a comma-separated flag; empty items are dropped.
func splitList(s string) []string {
	var out []string
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// probe is an exec probe: the sidecar listens on loopback only, which the kubelet cannot reach.
func probe(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: herald probe URL")
	}
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(args[0])
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s", args[0], resp.Status)
	}
	return nil
}
