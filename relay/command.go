package relay

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/heraldhq/herald/internal/cli"
	"github.com/heraldhq/herald/internal/tlsconfig"
	"github.com/heraldhq/herald/relay/auth"
	"github.com/heraldhq/herald/relay/httpapi"
	"github.com/heraldhq/herald/relay/hub"
	"github.com/heraldhq/herald/relay/shardmap"
	"github.com/heraldhq/herald/relay/sidecar"
	"github.com/heraldhq/herald/relay/stream"
	"github.com/heraldhq/herald/relay/upstream"
	"github.com/heraldhq/herald/relay/usertoken"
)

// Roles of `herald relay`.
const (
	RoleShard   = "shard"   // one per shard of a channel: Redis subscription and fan-out
	RoleSidecar = "sidecar" // next to an app: routes by key to shard relays, one upstream stream per shard
	RoleEdge    = "edge"    // in front of end users (browsers, phones): a sidecar's streams behind app-signed tokens
)

// Caller authentication modes of a shard relay (--auth).
const (
	AuthTokenReview = "tokenreview" // bearer token verified by a TokenReview; namespace checked against the shard map
	AuthNone        = "none"        // everyone may call: local tests only
)

// PasswordEnv carries the Redis password when no password file is given.
const PasswordEnv = "HERALD_REDIS_PASSWORD"

// Main runs `herald relay` with args (without the program and subcommand names) until ctx
// ends. Flags default to their environment variables (see --help). --help prints usage and
// returns nil.
func Main(ctx context.Context, args []string) error {
	return run(ctx, args, os.Stderr, os.Getenv)
}

type config struct {
	role, shardMapFile, listen, addrs, user, passFile         string
	shard, queueBytes                                         int
	limits                                                    httpapi.Limits // shard role
	heartbeat, idemWindow, probeInterval, probeTimeout        time.Duration
	writeTimeout, waitTimeout, shutdownTimeout, writeInterval time.Duration
	bodyReadTimeout                                           time.Duration
	auth, audience, kubeconfig                                string // shard role: caller authentication
	reviewsPerPeer                                            float64
	corsOrigins, wsOrigins                                    string // web pages of other origins
	channels, namespace, tokenFile, tokenDir, endpointsFile   string // sidecar role
	metricsListen                                             string // sidecar and edge roles
	edge                                                      sidecar.EdgeOptions
	userHMACFile, userJWKSFile, userJWKSURL, userAudience     string // edge role: end users' tokens
	userLeeway                                                time.Duration
	tls, tlsInsecure                                          bool // Redis TLS
	tlsServerName, tlsCAFile, tlsCertFile, tlsKeyFile         string
}

func run(ctx context.Context, args []string, stderr io.Writer, getenv func(string) string) error {
	var c config
	fs := cli.New("relay", stderr,
		"Usage: herald relay --role=shard --shardmap FILE --shard N --redis-addresses HOST:PORT[,...] [flags]",
		"       herald relay --role=sidecar --channels NAME[,NS/NAME...] --namespace NS --token-dir DIR [flags]",
		"       herald relay --role=edge --channels NAME --namespace NS --token-dir DIR --user-token-hmac-key-file FILE [flags]",
		"",
		"A shard relay serves one shard of a NotificationChannel: publish, SSE and WebSocket subscribe with resume.",
		"A sidecar serves the same API to its pod's app on loopback and reaches the channels' shard relays for it.",
		"An edge serves one channel's streams to end users (browsers, phones) whose tokens the app signed.")
	fs.Footer("The Redis password is read from --redis-password-file, else from " + PasswordEnv + ".")
	fs.StringVar(&c.role, "role", RoleShard, "relay role: shard (serves one shard of a channel), sidecar (next to an app, on loopback: routes to the shard relays of --channels) or edge (serves end users of one channel, with tokens the app signs)")
	fs.StringVar(&c.shardMapFile, "shardmap", "", "path of the channel's shard map (JSON, the shardmap.json key of the channel's ConfigMap); required")
	fs.IntVar(&c.shard, "shard", -1, "index of the shard this relay serves; required")
	fs.StringVar(&c.listen, "listen", "", "address to serve HTTP API v1, /healthz, /readyz and /metrics on; empty means :"+strconv.Itoa(shardmap.RelayPort)+
		" for a shard relay or an edge and 127.0.0.1:"+strconv.Itoa(shardmap.RelayPort)+" for a sidecar (which must listen on loopback)")
	fs.StringVar(&c.addrs, "redis-addresses", "", "comma-separated Redis Cluster seed addresses (host:port); required")
	fs.StringVar(&c.user, "redis-username", "", "Redis ACL user (the channel's user, see shardmap.ACLUser)")
	fs.BoolVar(&c.tls, "redis-tls", false, "connect to Redis over TLS")
	fs.StringVar(&c.tlsCAFile, "redis-tls-ca-file", "", "PEM CA bundle that signed the Redis certificates (default: system roots)")
	fs.StringVar(&c.tlsServerName, "redis-tls-server-name", "", "name to check in the Redis certificates")
	fs.BoolVar(&c.tlsInsecure, "redis-tls-insecure-skip-verify", false, "do not verify the Redis certificates (testing only)")
	fs.StringVar(&c.tlsCertFile, "redis-tls-cert-file", "", "PEM client certificate for Redis servers that ask for one (tls-auth-clients); re-read at every new connection, so a renewed one is picked up")
	fs.StringVar(&c.tlsKeyFile, "redis-tls-key-file", "", "PEM private key of --redis-tls-cert-file")
	fs.StringVar(&c.passFile, "redis-password-file", "", "file holding the Redis password; without it the password comes from "+PasswordEnv)
	fs.DurationVar(&c.heartbeat, "heartbeat", stream.DefaultHeartbeat, "interval of SSE heartbeat comments and WebSocket pings")
	fs.IntVar(&c.queueBytes, "queue-bytes", hub.DefaultQueueBytes, "bytes of events a subscriber may have queued before it is closed as a slow consumer")
	fs.DurationVar(&c.idemWindow, "idempotency-window", 5*time.Minute, "how long a publish's Idempotency-Key is remembered where the shard map sets no window (the operator sets spec.idempotencyWindow there)")
	fs.DurationVar(&c.probeInterval, "probe-interval", time.Second, "interval of the heartbeat probe published on the shard's own live channel")
	fs.DurationVar(&c.probeTimeout, "probe-timeout", 3*time.Second, "rebuild the shard subscription when no probe came back for this long")
	fs.DurationVar(&c.writeTimeout, "write-timeout", stream.DefaultWriteTimeout, "bound of one batch write to a subscriber")
	fs.DurationVar(&c.writeInterval, "write-interval", 10*time.Millisecond, "least time between two rounds of writes to live subscribers once the writers back up (then each gets one write per interval with all its events; while they keep up, every event goes out at once); 0: write as soon as possible")
	fs.DurationVar(&c.waitTimeout, "replica-wait-timeout", time.Second, "bound of WAIT for publishes with ?ack=replicated")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 10*time.Second, "time given to in-flight requests on shutdown")
	fs.IntVar(&c.limits.Subscribers, "max-subscribers", 10000, "shard role: most streams (SSE and WebSocket) the relay serves at once; beyond it subscribe calls get 429 (0: no cap)")
	fs.IntVar(&c.limits.SubscribersPerCaller, "max-subscribers-per-caller", 2000, "shard role: most streams one caller (service account) holds at the relay (0: no cap)")
	fs.IntVar(&c.limits.ReplaysPerCaller, "max-replays-per-caller", 32, "shard role: most streams of one caller replaying stored events at once (0: no cap)")
	fs.IntVar(&c.limits.SubscribersPerNamespace, "max-subscribers-per-namespace", 8000, "shard role: streams the callers of one namespace hold at the relay together (0: no cap)")
	fs.IntVar(&c.limits.ReplaysPerNamespace, "max-replays-per-namespace", 128, "shard role: streams of one namespace's callers replaying stored events at once (0: no cap)")
	fs.IntVar(&c.limits.InterestKeysPerNamespace, "max-interest-keys-per-namespace", 400_000, "shard role: keys the interest streams of one namespace's callers follow together (0: no cap)")
	fs.IntVar(&c.limits.InterestKeys, "max-interest-keys", 500_000, "shard role: keys the relay's interest streams (sidecars' upstreams) follow in all, about 150 bytes each; beyond it opening or growing one gets 429 (0: no cap)")
	fs.IntVar(&c.limits.InterestKeysPerCaller, "max-interest-keys-per-caller", 200_000, "shard role: keys the interest streams of one caller follow together (0: no cap)")
	fs.Float64Var(&c.limits.InterestChangeRate, "interest-change-rate-per-caller", 100, "shard role: interest changes one caller may make per second, in bursts of twice as many (0: no cap)")
	fs.IntVar(&c.limits.BodiesPerCaller, "max-bodies-per-caller", 64, "shard role: request bodies (publishes, interest changes) one caller sends the relay at once (0: no cap)")
	fs.DurationVar(&c.bodyReadTimeout, "body-read-timeout", httpapi.DefaultBodyReadTimeout, "bound of reading one request body (a publish, an interest change); a slower one is answered 408")
	fs.Float64Var(&c.limits.ReplayRate, "replay-rate-per-caller", 20, "shard role: replays (subscribe calls with a cursor) one caller may start per second, in bursts of twice as many (0: no cap)")
	fs.StringVar(&c.corsOrigins, "cors-allowed-origins", "", "comma-separated origins whose web pages may publish and subscribe (CORS), e.g. https://app.example.com or https://*.example.com; * is any (their hosts may open WebSockets too)")
	fs.StringVar(&c.wsOrigins, "ws-origin-patterns", "", "comma-separated Origin hosts a WebSocket is accepted from besides the request's own Host (path.Match patterns, e.g. app.example.com or *.example.com): needed behind a reverse proxy that rewrites Host")
	fs.StringVar(&c.auth, "auth", AuthTokenReview, "shard role: caller authentication: tokenreview (bearer token checked with a TokenReview, its service account's namespace with the channel's access list) or none (anyone may call: local tests only)")
	fs.StringVar(&c.audience, "token-audience", "", "shard role: the audience callers' tokens must carry (default: the channel's own, herald.dev/<namespace>/<channel>)")
	fs.StringVar(&c.kubeconfig, "kubeconfig", "", "shard role: kubeconfig for TokenReviews; empty means the in-cluster service account")
	fs.Float64Var(&c.reviewsPerPeer, "token-reviews-per-peer", auth.DefaultReviewsPerPeer, "shard role: TokenReviews the new tokens of one peer address may cost per second, in bursts of four times as many; behind a proxy that hides callers' addresses (a service mesh's local proxy) raise it to the relay's whole budget, 20")
	fs.StringVar(&c.channels, "channels", "", "sidecar role: comma-separated channels the app may use, name (in --namespace) or namespace/name; required")
	fs.StringVar(&c.namespace, "namespace", "", "sidecar role: the pod's namespace (the injector sets "+cli.EnvName("namespace")+" from the downward API)")
	fs.StringVar(&c.metricsListen, "metrics-listen", "", "sidecar role: also serve /metrics on this address (e.g. :7071), which Prometheus can reach; the API stays on --listen (loopback)")
	fs.StringVar(&c.tokenDir, "token-dir", "", "sidecar role: directory of projected service account tokens, one per channel (file <namespace>.<channel>, audience herald.dev/<namespace>/<channel>), sent to that channel's relays as a bearer token and re-read when it changes")
	fs.StringVar(&c.tokenFile, "token-file", "", "sidecar role: one token sent to the relays of every channel (local runs); --token-dir is what injected sidecars use; neither sends none")
	fs.StringVar(&c.userHMACFile, "user-token-hmac-key-file", "", "edge role: file holding the HS256 key end users' tokens are signed with (a Secret's key, at least 32 bytes); re-read every 30 s (every 5 minutes with --user-token-jwks-url)")
	fs.StringVar(&c.userJWKSFile, "user-token-jwks-file", "", "edge role: file holding a JWKS of the public keys end users' tokens are signed with (RS256, ES256, EdDSA); re-read every 30 s (every 5 minutes with --user-token-jwks-url)")
	fs.StringVar(&c.userJWKSURL, "user-token-jwks-url", "", "edge role: URL of a JWKS of the public keys end users' tokens are signed with; fetched every 5 minutes and when a token names an unknown kid")
	fs.StringVar(&c.userAudience, "user-token-audience", "", "edge role: the aud end users' tokens must name (default: <namespace>/<channel>)")
	fs.DurationVar(&c.userLeeway, "user-token-leeway", usertoken.DefaultLeeway, "edge role: clock skew allowed on a token's exp, nbf and iat")
	fs.IntVar(&c.edge.StreamsPerUser, "max-streams-per-user", 32, "edge role: streams one user (the token's sub) holds at once; beyond it 429")
	fs.IntVar(&c.edge.StreamsPerAddress, "max-streams-per-address", 1000, "edge role: streams one client address holds at once; beyond it 429")
	fs.IntVar(&c.edge.KeysPerStream, "max-keys-per-stream", 100, "edge role: keys and key prefixes one stream follows")
	fs.DurationVar(&c.edge.DrainSpread, "drain-spread", sidecar.DefaultDrainSpread, "edge role: on shutdown, how long ending every stream takes, spread evenly, each told to reconnect (they resume at the other edge pods); keep it under the pod's grace period")
	fs.BoolVar(&c.edge.TrustForwardedFor, "trust-forwarded-for", false, "edge role: count streams by the address the nearest proxy (an Ingress controller) appended to X-Forwarded-For, not by the connection's peer")
	fs.StringVar(&c.endpointsFile, "endpoints-file", "", "sidecar role: JSON object of relay Service host -> [host:port of ready replicas], standing in for cluster DNS (local runs); re-read when it changes")
	if err := fs.Parse(args, getenv); err != nil {
		if cli.IsHelp(err) {
			return nil
		}
		return err
	}
	if err := c.check(); err != nil {
		return err
	}
	logger, err := fs.Logger(stderr)
	if err != nil {
		return err
	}
	switch c.role {
	case RoleShard:
		opt, err := c.shardOptions(getenv)
		if err != nil {
			return err
		}
		opt.Logger = logger
		if opt.Authorize, err = c.authorizer(opt.Map); err != nil {
			return err
		}
		if c.listen == "" {
			c.listen = ":" + strconv.Itoa(shardmap.RelayPort)
		}
		r, err := NewShardRelay(opt)
		if err != nil {
			return err
		}
		defer r.Close()
		logger.Info("shard relay starting", "listen", c.listen, "namespace", opt.Map.Namespace, "channel", opt.Map.Channel, "shard", opt.Shard, "auth", c.auth)
		return serve(ctx, r.Handler(), r.Run, c.listen, c.shutdownTimeout)
	case RoleSidecar, RoleEdge:
		var opt sidecar.Options
		if c.role == RoleEdge {
			opt, err = c.edgeOptions(ctx)
		} else {
			opt, err = c.sidecarOptions()
		}
		if err != nil {
			return err
		}
		opt.Logger = logger
		sc, err := sidecar.New(opt)
		if err != nil {
			return err
		}
		run := sc.Run
		if opt.Edge != nil {
			run = func(ctx context.Context) error {
				go reloadKeys(ctx, opt.Edge.Users, logger)
				return sc.Run(ctx)
			}
		}
		if c.metricsListen != "" {
			if run, err = withMetricsServer(sc.MetricsHandler(), c.metricsListen, run); err != nil {
				return err
			}
		}
		logger.Info(c.role+" starting", "listen", c.listen, "metricsListen", c.metricsListen, "channels", c.channels, "namespace", c.namespace)
		return serve(ctx, sc.Handler(), run, c.listen, c.shutdownTimeout)
	default:
		return fmt.Errorf("--role must be %q, %q or %q, not %q", RoleShard, RoleSidecar, RoleEdge, c.role)
	}
}

// check refuses settings no role can run with.
func (c *config) check() error {
	for name, d := range map[string]time.Duration{"heartbeat": c.heartbeat, "write-timeout": c.writeTimeout} {
		if d <= 0 {
			return fmt.Errorf("--%s must be positive", name)
		}
	}
	if c.writeInterval < 0 {
		return errors.New("--write-interval must not be negative")
	}
	return nil
}

// authorizer builds the caller check of --auth for the channel of m.
func (c *config) authorizer(m *shardmap.Map) (func(*http.Request) (string, int, string), error) {
	switch c.auth {
	case AuthNone:
		return nil, nil
	case AuthTokenReview:
	default:
		return nil, fmt.Errorf("--auth must be %q or %q, not %q", AuthTokenReview, AuthNone, c.auth)
	}
	var (
		cfg *rest.Config
		err error
	)
	if c.kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", c.kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("--auth=tokenreview needs the Kubernetes API (in-cluster service account or --kubeconfig): %w; --auth=none is for local tests only", err)
	}
	audience := c.audience
	if audience == "" {
		audience = shardmap.TokenAudience(m.Namespace, m.Channel)
	}
	// Forged tokens are refused by their signature, without a TokenReview.
	keys, err := auth.NewIssuerKeys(cfg)
	if err != nil {
		return nil, err
	}
	reviewer, err := auth.NewTokenReviewer(cfg, auth.ReviewerOptions{Audience: audience, PerPeerPerSecond: c.reviewsPerPeer, Keys: keys})
	if err != nil {
		return nil, err
	}
	return (&auth.Checker{Review: reviewer.ReviewFrom, Allows: m.Allows, Namespace: m.Namespace, Channel: m.Channel}).Authorize, nil
}

func (c *config) sidecarOptions() (sidecar.Options, error) {
	if c.listen == "" {
		c.listen = "127.0.0.1:" + strconv.Itoa(shardmap.RelayPort)
	}
	host, _, err := net.SplitHostPort(c.listen)
	if err != nil {
		return sidecar.Options{}, fmt.Errorf("--listen: %w", err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return sidecar.Options{}, fmt.Errorf("--listen=%s: a sidecar listens on loopback only (127.0.0.1 or [::1]): whoever reaches it acts with the pod's identity", c.listen)
	}
	if c.channels == "" {
		return sidecar.Options{}, errors.New("--channels is required: the channels the app may use (the notifications.herald.dev/channels annotation)")
	}
	refs, err := sidecar.ParseChannels(c.channels, c.namespace)
	if err != nil {
		return sidecar.Options{}, fmt.Errorf("--channels: %w", err)
	}
	return sidecar.Options{
		Channels: refs, TokenFile: c.tokenFile, TokenDir: c.tokenDir, EndpointsFile: c.endpointsFile,
		Heartbeat: c.heartbeat, QueueBytes: c.queueBytes, WriteTimeout: c.writeTimeout, WriteInterval: c.writeInterval, Browser: c.browser(),
	}, nil
}

func (c *config) edgeOptions(ctx context.Context) (sidecar.Options, error) {
	if c.listen == "" {
		c.listen = ":" + strconv.Itoa(shardmap.RelayPort)
	}
	if c.metricsListen == "" {
		c.metricsListen = ":" + strconv.Itoa(shardmap.RelayPort+1) // never on the end users' listener
	}
	refs, err := sidecar.ParseChannels(c.channels, c.namespace)
	if err != nil {
		return sidecar.Options{}, fmt.Errorf("--channels: %w", err)
	}
	if len(refs) != 1 {
		return sidecar.Options{}, fmt.Errorf("--channels: an edge serves one channel, not %d", len(refs))
	}
	if c.userHMACFile == "" && c.userJWKSFile == "" && c.userJWKSURL == "" {
		return sidecar.Options{}, errors.New("an edge needs the keys of its users' tokens: --user-token-hmac-key-file, --user-token-jwks-file or --user-token-jwks-url")
	}
	audience := c.userAudience
	if audience == "" {
		audience = refs[0].String()
	}
	users, err := usertoken.New(ctx, usertoken.Options{Audience: audience, HMACKeyFile: c.userHMACFile, JWKSFile: c.userJWKSFile, JWKSURL: c.userJWKSURL, Leeway: c.userLeeway})
	if err != nil {
		return sidecar.Options{}, err
	}
	edge := c.edge
	edge.Users = users
	return sidecar.Options{
		Channels: refs, TokenFile: c.tokenFile, TokenDir: c.tokenDir, EndpointsFile: c.endpointsFile,
		Heartbeat: c.heartbeat, QueueBytes: c.queueBytes, WriteTimeout: c.writeTimeout, WriteInterval: c.writeInterval, Browser: c.browser(),
		Edge: &edge,
	}, nil
}

// reloadKeys re-reads the keys of end users' tokens (a rotated Secret shows in its mounted
// file within about a minute) every 30 s, and fetches a JWKS URL every 5 minutes.
func reloadKeys(ctx context.Context, v *usertoken.Verifier, log *slog.Logger) {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n%10 != 0 && v.HasURL() {
			continue
		}
		if err := v.Reload(ctx); err != nil {
			log.Warn("reloading the keys of users' tokens failed; the ones loaded before stay", "error", err.Error())
		}
	}
}

// browser is what the --cors-allowed-origins and --ws-origin-patterns flags allow.
func (c *config) browser() httpapi.Browser {
	return httpapi.Browser{CORSOrigins: splitList(c.corsOrigins), WSOriginPatterns: splitList(c.wsOrigins)}
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

func (c *config) shardOptions(getenv func(string) string) (ShardOptions, error) {
	if c.shardMapFile == "" {
		return ShardOptions{}, errors.New("--shardmap is required: the path of the channel's shard map JSON")
	}
	raw, err := os.ReadFile(c.shardMapFile)
	if err != nil {
		return ShardOptions{}, fmt.Errorf("reading the shard map: %w", err)
	}
	var m shardmap.Map
	if err := json.Unmarshal(raw, &m); err != nil {
		return ShardOptions{}, fmt.Errorf("shard map %s is not valid JSON: %w", c.shardMapFile, err)
	}
	if c.shard < 0 {
		return ShardOptions{}, errors.New("--shard is required: the index of the shard this relay serves")
	}
	var addrs []string
	for _, a := range strings.Split(c.addrs, ",") {
		if a = strings.TrimSpace(a); a != "" {
			if _, _, err := net.SplitHostPort(a); err != nil {
				return ShardOptions{}, fmt.Errorf("--redis-addresses: %q is not host:port", a)
			}
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return ShardOptions{}, errors.New("--redis-addresses is required: comma-separated Redis Cluster seed nodes")
	}
	password := getenv(PasswordEnv)
	if c.passFile != "" {
		b, err := os.ReadFile(c.passFile)
		if err != nil {
			return ShardOptions{}, fmt.Errorf("reading --redis-password-file: %w", err)
		}
		password = strings.TrimRight(string(b), "\r\n")
	}
	tlsConfig, err := c.redisTLS()
	if err != nil {
		return ShardOptions{}, err
	}
	for name, d := range map[string]time.Duration{"probe-interval": c.probeInterval, "probe-timeout": c.probeTimeout} {
		if d <= 0 {
			return ShardOptions{}, fmt.Errorf("--%s must be positive", name)
		}
	}
	if c.probeTimeout <= c.probeInterval {
		return ShardOptions{}, errors.New("--probe-timeout must be longer than --probe-interval")
	}
	return ShardOptions{
		Map: &m, Shard: c.shard,
		Redis:     redis.ClusterOptions{Addrs: addrs, Username: c.user, Password: password, TLSConfig: tlsConfig},
		Heartbeat: c.heartbeat, QueueBytes: c.queueBytes, IdempotencyWindow: c.idemWindow,
		WriteTimeout: c.writeTimeout, WaitTimeout: c.waitTimeout, WriteInterval: c.writeInterval,
		BodyReadTimeout: c.bodyReadTimeout, Limits: c.limits, Browser: c.browser(),
		Upstream: upstream.Options{ProbeInterval: c.probeInterval, ProbeTimeout: c.probeTimeout},
	}, nil
}

// redisTLS is the TLS configuration the --redis-tls* flags ask for, or nil for plain TCP.
func (c *config) redisTLS() (*tls.Config, error) {
	if !c.tls {
		return nil, nil
	}
	cfg, _, err := tlsconfig.Files{CAFile: c.tlsCAFile, ServerName: c.tlsServerName, CertFile: c.tlsCertFile,
		KeyFile: c.tlsKeyFile, InsecureSkipVerify: c.tlsInsecure}.Config()
	return cfg, err
}

// withMetricsServer listens on addr now (so a taken port fails the start) and returns run with
// an HTTP server of /metrics alongside it, stopped when run's context ends.
func withMetricsServer(metrics http.Handler, addr string, run func(context.Context) error) (func(context.Context) error, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", metrics)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	return func(ctx context.Context) error {
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
		return run(ctx)
	}, nil
}

// serve runs run (the relay's background work) and an HTTP server for handler on listen until
// ctx ends, then shuts both down.
func serve(ctx context.Context, handler http.Handler, run func(context.Context) error, listen string, shutdownTimeout time.Duration) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Requests live in ctx: on shutdown SSE and WebSocket streams end (their clients resume by
	// cursor) instead of holding Shutdown until its timeout.
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	runErr := make(chan error, 1)
	go func() { runErr <- run(ctx) }()
	srvErr := make(chan error, 1)
	go func() { srvErr <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
	case err = <-srvErr:
	case err = <-runErr:
		runErr <- err
	}
	cancel()
	sctx, scancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer scancel()
	_ = srv.Shutdown(sctx) // SSE streams end when ctx is cancelled: their request contexts die with the listener's
	_ = srv.Close()
	if rerr := <-runErr; err == nil {
		err = rerr
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
