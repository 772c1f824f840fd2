package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	heraldv1 "github.com/heraldhq/herald/api/v1alpha1"
	"github.com/heraldhq/herald/controllers"
	"github.com/heraldhq/herald/controllers/injection"
	"github.com/heraldhq/herald/controllers/redisconf"
	"github.com/heraldhq/herald/internal/cli"
	"github.com/heraldhq/herald/internal/version"
)

// managerOptions are the settings of `herald manager`, one field per flag (HERALD_<FLAG> in the
// environment). defaultManagerOptions declares every default, and --help shows it.
type managerOptions struct {
	MetricsAddr    string // address of /metrics; "0" turns it off
	MetricsSecure  bool   // HTTPS with authorization for /metrics, else plain HTTP
	MetricsCertDir string // tls.crt and tls.key of /metrics; empty: self-signed
	ProbeAddr      string // address of /healthz and /readyz
	LeaderElect    bool
	LeaderNS       string // namespace of the leader election Lease; empty: the pod's

	Redis controllers.DefaultRedisFlags // the default Redis, and the operator's credentials for it

	RelayImage         string        // image of relays (and of sidecars unless SidecarImage)
	RelayResources     string        // JSON corev1.ResourceRequirements of relay containers
	RelayLogLevel      string        // log level of relays and sidecars; empty: theirs
	RelayNodeLost      time.Duration // relays leave a node that is not ready or unreachable after this long
	RelayClusterRole   string        // ClusterRole bound to relay ServiceAccounts (TokenReview); empty: none
	SecretsClusterRole string        // ClusterRole the manager binds to itself where channels are (Secrets); empty: none
	ServiceAccount     string        // the manager's own ServiceAccount, in its namespace
	MetricsScrapers    string        // label selector of namespaces that may scrape relays
	PullPolicy         string        // imagePullPolicy of relays and sidecars; empty: Kubernetes'
	PullSecrets        string        // comma-separated image pull Secrets of relays and sidecars
	RelayLimitCeilings string        // JSON heraldv1.RelayLimits: the most spec.relay.limits may set

	Workers          int
	ResyncPeriod     time.Duration
	RedisWatch       time.Duration
	ReconcileTimeout time.Duration
	CleanupTimeout   time.Duration
	PruneLibraries   time.Duration // earlier versions' function libraries go after this long unused
	Image            string        // the image the manager runs
	MaxRedisNodes    int
	AdoptRetained    bool // channels take up data a namespace of their name left before it was re-created

	AllowedRedis, AllowedImages, AllowedPriorityClasses string // comma-separated allow-lists

	WebhookPort        int    // 0 turns the injection webhook off
	WebhookCertDir     string // tls.crt and tls.key of the webhook
	WebhookCertMode    string // selfManaged or external
	Namespace          string // the manager's namespace; empty: the service account's
	SidecarImage       string // empty: RelayImage
	SidecarResources   string // JSON corev1.ResourceRequirements; empty: the injector's default
	SidecarMetricsPort int    // sidecars' /metrics on the pod IP; 0 keeps it on loopback
}

// defaultManagerOptions are the defaults of every setting, each with the reason for its value.
func defaultManagerOptions() managerOptions {
	return managerOptions{
		MetricsAddr:   ":8443", // controller-runtime's secure metrics port, as kubebuilder lays it out
		MetricsSecure: true,    // relays' and channels' figures are for authorized scrapers only
		ProbeAddr:     ":8081",
		RelayImage:    version.Image(), // the relay is this very binary
		// The chart's relay.resources default, for a manager run without the chart; a channel
		// whose messages need more memory is marked Degraded (docs/capacity.md sizes relays).
		RelayResources:   `{"requests":{"cpu":"50m","memory":"64Mi"},"limits":{"memory":"256Mi"}}`,
		RelayClusterRole: "herald-relay",
		ServiceAccount:   "herald-manager",
		// Ten times the relays' own defaults: room for a busy channel, not for switching the
		// caps off (the CRD takes up to a million).
		RelayLimitCeilings: `{"maxReplaysPerCaller":320,"maxSubscribers":100000,"maxSubscribersPerCaller":20000,"replaysPerSecondPerCaller":200}`,
		// Each channel's pass waits mostly on Redis and the API server, not on CPU.
		Workers:      4,
		ResyncPeriod: time.Minute, // Redis forgets ACL users on restart: a lost user is back within a minute
		RedisWatch:   3 * time.Second,
		// A pass touches every node of a Redis once or twice: two minutes covers a slow
		// cluster of hundreds of nodes, and still frees the worker of a hung one.
		ReconcileTimeout: 2 * time.Minute,
		CleanupTimeout:   10 * time.Minute,
		// Longer than any relay's termination grace, and time to notice a rollback.
		PruneLibraries: 10 * time.Minute,
		// The node controller marks a silent node after its grace period (40-50 s); another
		// replica serves meanwhile, so the lost one is replaced soon after instead of in 5 min.
		RelayNodeLost:   10 * time.Second,
		MaxRedisNodes:   1000,
		WebhookPort:     9443,
		WebhookCertDir:  "/tmp/k8s-webhook-server/serving-certs", // controller-runtime's own default
		WebhookCertMode: "selfManaged",
		// Prometheus reaches a pod's IP, not its loopback, where the sidecar's API stays.
		SidecarMetricsPort: 7071,
	}
}

// bind declares a flag for every option, with the option's current value as its default.
func (o *managerOptions) bind(fs *cli.FlagSet) {
	fs.StringVar(&o.MetricsAddr, "metrics-bind-address", o.MetricsAddr, "address of the Prometheus /metrics endpoint; \"0\" turns it off")
	fs.BoolVar(&o.MetricsSecure, "metrics-secure", o.MetricsSecure, "serve /metrics over HTTPS to scrapers whose token may GET /metrics (ClusterRole "+controllers.MetricsReaderClusterRole+"); false: plain HTTP to anyone")
	fs.StringVar(&o.MetricsCertDir, "metrics-cert-dir", o.MetricsCertDir, "directory of tls.crt and tls.key for --metrics-secure; empty: a self-signed certificate")
	fs.StringVar(&o.ProbeAddr, "health-probe-bind-address", o.ProbeAddr, "address of /healthz and /readyz")
	fs.BoolVar(&o.LeaderElect, "leader-elect", o.LeaderElect, "elect a leader so that only one manager replica reconciles")
	fs.StringVar(&o.LeaderNS, "leader-election-namespace", o.LeaderNS, "namespace of the leader election Lease (default: the pod's namespace)")
	fs.StringVar(&o.Redis.Addresses, "redis-addresses", o.Redis.Addresses, "comma-separated host:port seeds of the default Redis Cluster (or one standalone Redis)")
	fs.StringVar(&o.Redis.Username, "redis-username", o.Redis.Username, "Redis user of the operator (needs ACL SETUSER, XGROUP, SCAN, UNLINK on every node)")
	fs.StringVar(&o.Redis.PasswordFile, "redis-password-file", o.Redis.PasswordFile, "file holding the operator's Redis password")
	fs.BoolVar(&o.Redis.TLS, "redis-tls", o.Redis.TLS, "connect to the default Redis over TLS")
	fs.StringVar(&o.Redis.CAFile, "redis-tls-ca-file", o.Redis.CAFile, "PEM CA bundle for the default Redis (default: system roots)")
	fs.StringVar(&o.Redis.ServerName, "redis-tls-server-name", o.Redis.ServerName, "name to check in the default Redis's certificate")
	fs.StringVar(&o.Redis.CertFile, "redis-tls-cert-file", o.Redis.CertFile, "PEM client certificate the operator presents to a default Redis that asks for one (tls-auth-clients); re-read when it changes, never handed to relays (see --redis-tls-client-ca-file)")
	fs.StringVar(&o.Redis.KeyFile, "redis-tls-key-file", o.Redis.KeyFile, "PEM private key of --redis-tls-cert-file")
	fs.StringVar(&o.Redis.ClientCAFile, "redis-tls-client-ca-file", o.Redis.ClientCAFile, "PEM CA certificate the default Redis trusts for client certificates: each channel's relays get one of their own, issued from it")
	fs.StringVar(&o.Redis.ClientCAKeyFile, "redis-tls-client-ca-key-file", o.Redis.ClientCAKeyFile, "PEM private key of --redis-tls-client-ca-file")
	fs.StringVar(&o.RelayImage, "relay-image", o.RelayImage, "image of the relay Deployments (spec.relay.image overrides)")
	fs.StringVar(&o.RelayResources, "relay-resources", o.RelayResources, "JSON ResourceRequirements of relay containers (spec.relay.resources overrides)")
	fs.DurationVar(&o.RelayNodeLost, "relay-node-lost-toleration", o.RelayNodeLost, "how long relays and edges stay on a node marked not ready or unreachable before they are evicted and replaced (NoExecute tolerationSeconds); 0: Kubernetes' default, 300s")
	fs.StringVar(&o.RelayLogLevel, "relay-log-level", o.RelayLogLevel, "log level of the relays and injected sidecars (debug, info, warn, error) unless spec.relay.logLevel or a pod's notifications.herald.dev/sidecar-log-level sets one; empty: the relay's default, info")
	fs.StringVar(&o.SecretsClusterRole, "secrets-cluster-role", o.SecretsClusterRole, "ClusterRole (Secrets: get, create, update, patch, delete) the manager binds to its own ServiceAccount in each namespace with a channel, so it needs no right on Secrets across the cluster; empty: no binding (its own RBAC must cover Secrets)")
	fs.StringVar(&o.ServiceAccount, "service-account", o.ServiceAccount, "the manager's ServiceAccount (in its namespace), the subject of the --secrets-cluster-role bindings")
	fs.StringVar(&o.RelayClusterRole, "relay-cluster-role", o.RelayClusterRole, "ClusterRole (TokenReview create) bound to each channel's relay ServiceAccount so relays can authenticate sidecars; empty: no binding")
	fs.StringVar(&o.RelayLimitCeilings, "relay-limit-ceilings", o.RelayLimitCeilings, "JSON of the most a channel's spec.relay.limits may set, in its own fields (maxSubscribers, maxSubscribersPerCaller, maxReplaysPerCaller, replaysPerSecondPerCaller); a field left out has no ceiling, a channel over one is NotAllowed")
	fs.StringVar(&o.MetricsScrapers, "relay-metrics-namespace-selector", o.MetricsScrapers, "label selector (e.g. kubernetes.io/metadata.name=monitoring) of the namespaces each channel's NetworkPolicy lets reach the relays' /metrics; empty: none besides the channel's own and spec.access")
	fs.IntVar(&o.Workers, "workers", o.Workers, "channels reconciled at once (each waits mostly on Redis and the API server)")
	fs.DurationVar(&o.ResyncPeriod, "resync-period", o.ResyncPeriod, "how often a channel is checked against Redis (re-creating lost ACL users and streams)")
	fs.DurationVar(&o.RedisWatch, "redis-watch-interval", o.RedisWatch, "how often every Redis in use is checked for restarted, new or recovered nodes, which get the channels' ACL users at once")
	fs.StringVar(&o.AllowedRedis, "allowed-redis-addresses", o.AllowedRedis, "comma-separated host:port a channel's spec.redis may name (and its nodes may announce): networks (10.0.3.0/24:6379; a name matches when all its addresses are in one) or DNS name patterns (redis-*.data.svc:*, * within one label); empty: spec.redis is refused")
	fs.StringVar(&o.AllowedImages, "allowed-relay-images", o.AllowedImages, "comma-separated path.Match patterns of the images spec.relay.image may name besides --relay-image, e.g. registry.example/herald:*")
	fs.StringVar(&o.AllowedPriorityClasses, "allowed-priority-classes", o.AllowedPriorityClasses, "comma-separated priority classes spec.relay.priorityClassName may name; empty: none")
	fs.IntVar(&o.MaxRedisNodes, "max-redis-nodes", o.MaxRedisNodes, "refuse a Redis whose CLUSTER SHARDS lists more nodes than this")
	fs.BoolVar(&o.AdoptRetained, "adopt-retained-streams", o.AdoptRetained, "let a channel take up the data a deleted channel of its name retained in Redis even when a namespace of its name that was deleted since wrote it (false: such a channel is RetainedByAnotherNamespace until the data is deleted)")
	fs.DurationVar(&o.ReconcileTimeout, "reconcile-timeout", o.ReconcileTimeout, "deadline of one pass over a channel (Redis and Kubernetes calls)")
	fs.DurationVar(&o.CleanupTimeout, "cleanup-timeout", o.CleanupTimeout, "how long Redis cleanup of a deleted channel is retried before the channel reports CleanupFailed")
	fs.DurationVar(&o.PruneLibraries, "prune-function-libraries-after", o.PruneLibraries, "remove the publish function libraries of earlier Herald versions from a Redis once every relay on it has run the manager's own image (--image) for this long, at least 1m (longer than a relay's shutdown); 0 never removes them (set 0 when another Herald installation shares the Redis)")
	fs.StringVar(&o.Image, "image", o.Image, "the image this manager runs (the chart sets it): relays of the same image call this build's function library, which lets the libraries of earlier versions be removed; empty: none is removed")
	fs.IntVar(&o.WebhookPort, "webhook-port", o.WebhookPort, "port of the sidecar injection webhook; 0 turns the webhook off")
	fs.StringVar(&o.WebhookCertDir, "webhook-cert-dir", o.WebhookCertDir, "directory of the webhook's tls.crt and tls.key")
	fs.StringVar(&o.WebhookCertMode, "webhook-cert-mode", o.WebhookCertMode, "selfManaged: the manager issues and rotates the webhook certificate; external: cert-manager or another tool writes it to --webhook-cert-dir")
	fs.StringVar(&o.Namespace, "namespace", o.Namespace, "the manager's namespace (the chart sets "+cli.EnvName("namespace")+" from the downward API); empty: the service account's namespace")
	fs.IntVar(&o.SidecarMetricsPort, "sidecar-metrics-port", o.SidecarMetricsPort, "port of the injected sidecars' /metrics on the pod IP (with prometheus.io scrape annotations); 0 keeps metrics on loopback")
	fs.StringVar(&o.PullPolicy, "relay-image-pull-policy", o.PullPolicy, "imagePullPolicy of relays and sidecars (Always, IfNotPresent, Never) unless spec.relay sets one; empty: Kubernetes' default")
	fs.StringVar(&o.PullSecrets, "relay-image-pull-secrets", o.PullSecrets, "comma-separated Secrets (in each channel's or pod's namespace) to pull the relay image with, for relays (unless spec.relay sets its own) and sidecars")
	fs.StringVar(&o.SidecarResources, "sidecar-resources", o.SidecarResources, "JSON ResourceRequirements of injected sidecars (pod annotations override); empty: 10m CPU / 32Mi requests, 128Mi limit")
	fs.StringVar(&o.SidecarImage, "sidecar-image", o.SidecarImage, "image of the injected sidecar (default: --relay-image)")
}

// managerConfig is what validate makes of the options: every value parsed and checked, so
// that build only assembles.
type managerConfig struct {
	managerOptions
	relayResources   corev1.ResourceRequirements
	sidecarResources *corev1.ResourceRequirements // nil: the injector's default
	scrapers         *metav1.LabelSelector        // nil: none
	pullSecrets      []corev1.LocalObjectReference
	limitCeilings    heraldv1.RelayLimits
}

// validate parses and checks the options, naming the flag of anything wrong.
func (o managerOptions) validate() (*managerConfig, error) {
	c := &managerConfig{managerOptions: o}
	if err := json.Unmarshal([]byte(o.RelayResources), &c.relayResources); err != nil {
		return nil, fmt.Errorf("--relay-resources: %w", err)
	}
	if o.RelayLimitCeilings != "" {
		dec := json.NewDecoder(strings.NewReader(o.RelayLimitCeilings))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c.limitCeilings); err != nil {
			return nil, fmt.Errorf("--relay-limit-ceilings: %w", err)
		}
	}
	if o.SidecarResources != "" {
		c.sidecarResources = &corev1.ResourceRequirements{}
		if err := json.Unmarshal([]byte(o.SidecarResources), c.sidecarResources); err != nil {
			return nil, fmt.Errorf("--sidecar-resources: %w", err)
		}
	}
	if o.MetricsScrapers != "" {
		var err error
		if c.scrapers, err = metav1.ParseToLabelSelector(o.MetricsScrapers); err != nil {
			return nil, fmt.Errorf("--relay-metrics-namespace-selector: %w", err)
		}
	}
	switch corev1.PullPolicy(o.PullPolicy) {
	case "", corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		return nil, fmt.Errorf("--relay-image-pull-policy=%q: want Always, IfNotPresent or Never", o.PullPolicy)
	}
	// A relay's pods may still publish while they shut down (30 s): a library goes only after.
	if o.PruneLibraries != 0 && o.PruneLibraries < time.Minute {
		return nil, fmt.Errorf("--prune-function-libraries-after=%s: want 0 (never) or at least 1m, longer than a relay's shutdown", o.PruneLibraries)
	}
	if o.WebhookPort != 0 && o.WebhookCertMode != "selfManaged" && o.WebhookCertMode != "external" {
		return nil, fmt.Errorf("--webhook-cert-mode=%q: want selfManaged or external", o.WebhookCertMode)
	}
	for _, name := range splitList(o.PullSecrets) {
		c.pullSecrets = append(c.pullSecrets, corev1.LocalObjectReference{Name: name})
	}
	if c.SidecarImage == "" {
		c.SidecarImage = c.RelayImage
	}
	return c, nil
}

// runManager runs the operator until ctx ends: options -> validate -> build -> start.
func runManager(ctx context.Context, args []string, stderr io.Writer, getenv func(string) string) error {
	o := defaultManagerOptions()
	fs := cli.New("manager", stderr,
		"Usage: herald [manager] [flags]",
		"",
		"The operator: reconciles NotificationChannels into Redis Cluster configuration and relay",
		"Deployments, and serves the webhook that injects the relay sidecar into opted-in pods.")
	o.bind(fs)
	if err := fs.Parse(args, getenv); err != nil {
		return err
	}
	c, err := o.validate()
	if err != nil {
		return err
	}
	logger, err := fs.Logger(stderr)
	if err != nil {
		return err
	}
	// One JSON logger for Herald's code and controller-runtime's.
	slog.SetDefault(logger)
	ctrl.SetLogger(logr.FromSlogHandler(logger.Handler()))
	ctrlmetrics.Registry.MustRegister(version.BuildInfo("manager"))

	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("loading kubeconfig: %w", err)
	}
	mgr, err := c.build(cfg)
	if err != nil {
		return err
	}
	ctrl.Log.WithName("setup").Info("Starting manager")
	return mgr.Start(ctx)
}

// build assembles the manager: the NotificationChannel controller, the injection webhook and
// the health checks.
func (c *managerConfig) build(cfg *rest.Config) (manager.Manager, error) {
	defaultRedis, err := c.Redis.Load()
	if err != nil {
		return nil, err
	}
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(heraldv1.AddToScheme(scheme))
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		Cache:                   controllers.CacheOptions(),
		Client:                  controllers.ClientOptions(),
		Metrics:                 controllers.MetricsOptions(c.MetricsAddr, c.MetricsSecure, c.MetricsCertDir),
		HealthProbeBindAddress:  c.ProbeAddr,
		LeaderElection:          c.LeaderElect,
		LeaderElectionID:        "herald-manager.notifications.herald.dev",
		LeaderElectionNamespace: c.LeaderNS,
		WebhookServer:           webhook.NewServer(webhook.Options{Port: c.WebhookPort, CertDir: c.WebhookCertDir}),
	})
	if err != nil {
		return nil, fmt.Errorf("creating manager: %w", err)
	}
	if err := (&controllers.NotificationChannelReconciler{
		Client:                mgr.GetClient(),
		APIReader:             mgr.GetAPIReader(),
		Recorder:              mgr.GetEventRecorder("herald-manager"),
		Redis:                 &redisconf.Pool{},
		DefaultRedis:          defaultRedis,
		RelayImage:            c.RelayImage,
		RelayResources:        c.relayResources,
		RelayLogLevel:         c.RelayLogLevel,
		RelayNodeLost:         c.RelayNodeLost,
		RelayPullPolicy:       corev1.PullPolicy(c.PullPolicy),
		RelayPullSecrets:      c.pullSecrets,
		RelayClusterRole:      c.RelayClusterRole,
		SecretsClusterRole:    c.SecretsClusterRole,
		ManagerServiceAccount: types.NamespacedName{Namespace: c.namespace(), Name: c.ServiceAccount},
		MetricsScrapers:       c.scrapers,
		ResyncPeriod:          c.ResyncPeriod,
		RedisWatchInterval:    c.RedisWatch,
		Policy: controllers.Policy{
			RedisAddresses:  splitList(c.AllowedRedis),
			RelayImages:     splitList(c.AllowedImages),
			PriorityClasses: splitList(c.AllowedPriorityClasses),
			RelayLimits:     c.limitCeilings,
		},
		MaxRedisNodes:        c.MaxRedisNodes,
		AdoptRetainedStreams: c.AdoptRetained,
		ReconcileTimeout:     c.ReconcileTimeout,
		CleanupTimeout:       c.CleanupTimeout,
		PruneLibrariesAfter:  c.PruneLibraries,
		OwnImage:             c.Image,
		Workers:              c.Workers,
	}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the NotificationChannel controller: %w", err)
	}
	if c.WebhookPort != 0 {
		if err := injection.Setup(mgr, injection.Options{
			Namespace:        c.namespace(),
			CertDir:          c.WebhookCertDir,
			SelfManagedCerts: c.WebhookCertMode == "selfManaged",
			Image:            c.SidecarImage,
			LogLevel:         c.RelayLogLevel,
			MetricsPort:      int32(c.SidecarMetricsPort),
			Resources:        c.sidecarResources,
			PullPolicy:       corev1.PullPolicy(c.PullPolicy),
			PullSecrets:      c.pullSecrets,
		}); err != nil {
			return nil, err
		}
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return nil, err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return nil, err
	}
	return mgr, nil
}

// namespace is the manager's own namespace: --namespace, else its service account's.
func (c *managerConfig) namespace() string {
	if c.Namespace != "" {
		return c.Namespace
	}
	b, _ := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
	return strings.TrimSpace(string(b))
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
