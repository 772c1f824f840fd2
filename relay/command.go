package relay

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
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

	"github.com/heraldhq/herald/relay/shardmap"
	"github.com/heraldhq/herald/relay/upstream"
)

// Roles of `herald relay`.
const (
	RoleShard   = "shard"   // one per shard of a channel: Redis subscription and fan-out
	RoleSidecar = "sidecar" // next to an app: routes by key to shard relays (not implemented yet)
)

// flagEnv maps each flag to the environment variable that sets its default.
var flagEnv = map[string]string{
	"role":                 "HERALD_RELAY_ROLE",
	"shardmap":             "HERALD_SHARDMAP",
	"shard":                "HERALD_SHARD",
	"listen":               "HERALD_LISTEN",
	"redis-addresses":      "HERALD_REDIS_ADDRESSES",
	"redis-username":       "HERALD_REDIS_USERNAME",
	"redis-password-file":  "HERALD_REDIS_PASSWORD_FILE",
	"heartbeat":            "HERALD_HEARTBEAT",
	"queue-bytes":          "HERALD_QUEUE_BYTES",
	"idempotency-window":   "HERALD_IDEMPOTENCY_WINDOW",
	"probe-interval":       "HERALD_PROBE_INTERVAL",
	"probe-timeout":        "HERALD_PROBE_TIMEOUT",
	"write-timeout":        "HERALD_WRITE_TIMEOUT",
	"replica-wait-timeout": "HERALD_REPLICA_WAIT_TIMEOUT",
	"shutdown-timeout":     "HERALD_SHUTDOWN_TIMEOUT",
	"log-level":            "HERALD_LOG_LEVEL",
}

// PasswordEnv carries the Redis password when no password file is given.
const PasswordEnv = "HERALD_REDIS_PASSWORD"

// Main runs `herald relay` with args (without the program and subcommand names) until ctx
// ends. Flags default to their environment variables (see --help). --help prints usage and
// returns nil.
func Main(ctx context.Context, args []string) error {
	return run(ctx, args, os.Stderr, os.Getenv)
}

type config struct {
	role, shardMapFile, listen, addrs, user, passFile, logLevel string
	shard, queueBytes                                           int
	heartbeat, idemWindow, probeInterval, probeTimeout          time.Duration
	writeTimeout, waitTimeout, shutdownTimeout                  time.Duration
}

func run(ctx context.Context, args []string, stderr io.Writer, getenv func(string) string) error {
	var c config
	fs := flag.NewFlagSet("herald relay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.role, "role", RoleShard, "relay role: shard (serves one shard of a channel) or sidecar (not implemented yet)")
	fs.StringVar(&c.shardMapFile, "shardmap", "", "path of the channel's shard map (JSON, the shardmap.json key of the channel's ConfigMap); required")
	fs.IntVar(&c.shard, "shard", -1, "index of the shard this relay serves; required")
	fs.StringVar(&c.listen, "listen", ":"+strconv.Itoa(shardmap.RelayPort), "address to serve HTTP API v1, /healthz, /readyz and /metrics on")
	fs.StringVar(&c.addrs, "redis-addresses", "", "comma-separated Redis Cluster seed addresses (host:port); required")
	fs.StringVar(&c.user, "redis-username", "", "Redis ACL user (the channel's user, see shardmap.ACLUser)")
	fs.StringVar(&c.passFile, "redis-password-file", "", "file holding the Redis password; without it the password comes from "+PasswordEnv)
	fs.DurationVar(&c.heartbeat, "heartbeat", 15*time.Second, "interval of SSE heartbeat comments and WebSocket pings")
	fs.IntVar(&c.queueBytes, "queue-bytes", 1<<20, "bytes of events a subscriber may have queued before it is closed as a slow consumer")
	fs.DurationVar(&c.idemWindow, "idempotency-window", 24*time.Hour, "how long a publish's Idempotency-Key is remembered")
	fs.DurationVar(&c.probeInterval, "probe-interval", time.Second, "interval of the heartbeat probe published on the shard's own live channel")
	fs.DurationVar(&c.probeTimeout, "probe-timeout", 3*time.Second, "rebuild the shard subscription when no probe came back for this long")
	fs.DurationVar(&c.writeTimeout, "write-timeout", 10*time.Second, "bound of one batch write to a subscriber")
	fs.DurationVar(&c.waitTimeout, "replica-wait-timeout", time.Second, "bound of WAIT for publishes with ?ack=replicated")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 10*time.Second, "time given to in-flight requests on shutdown")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: herald relay --role=shard --shardmap FILE --shard N --redis-addresses HOST:PORT[,...] [flags]\n\n")
		fmt.Fprintf(stderr, "Serves one shard of a NotificationChannel: publish, SSE and WebSocket subscribe with resume, on --listen.\n\nFlags (each defaults to the environment variable in brackets):\n")
		fs.VisitAll(func(f *flag.Flag) {
			fmt.Fprintf(stderr, "  --%s (default %q) [%s]\n    \t%s\n", f.Name, f.DefValue, flagEnv[f.Name], f.Usage)
		})
		fmt.Fprintf(stderr, "\nThe Redis password is read from --redis-password-file, else from %s.\n", PasswordEnv)
	}
	// Environment first, so flags given on the command line win.
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if v := getenv(flagEnv[f.Name]); v != "" && envErr == nil {
			if err := f.Value.Set(v); err != nil {
				envErr = fmt.Errorf("environment variable %s=%q: %w", flagEnv[f.Name], v, err)
			}
		}
	})
	if envErr != nil {
		return envErr
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q; see --help", fs.Args())
	}
	switch c.role {
	case RoleShard:
	case RoleSidecar:
		return errors.New("--role=sidecar is not implemented yet: this build has the shard role only (run one relay per shard with --role=shard)")
	default:
		return fmt.Errorf("--role must be %q or %q, not %q", RoleShard, RoleSidecar, c.role)
	}
	opt, err := c.shardOptions(stderr, getenv)
	if err != nil {
		return err
	}
	return serveShard(ctx, opt, c.listen, c.shutdownTimeout)
}

func (c *config) shardOptions(stderr io.Writer, getenv func(string) string) (ShardOptions, error) {
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
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return ShardOptions{}, fmt.Errorf("--log-level: %w", err)
	}
	for name, d := range map[string]time.Duration{"heartbeat": c.heartbeat, "probe-interval": c.probeInterval, "probe-timeout": c.probeTimeout, "write-timeout": c.writeTimeout} {
		if d <= 0 {
			return ShardOptions{}, fmt.Errorf("--%s must be positive", name)
		}
	}
	if c.probeTimeout <= c.probeInterval {
		return ShardOptions{}, errors.New("--probe-timeout must be longer than --probe-interval")
	}
	return ShardOptions{
		Map: &m, Shard: c.shard,
		Redis:     redis.ClusterOptions{Addrs: addrs, Username: c.user, Password: password},
		Heartbeat: c.heartbeat, QueueBytes: c.queueBytes, IdempotencyWindow: c.idemWindow,
		WriteTimeout: c.writeTimeout, WaitTimeout: c.waitTimeout,
		Upstream: upstream.Options{ProbeInterval: c.probeInterval, ProbeTimeout: c.probeTimeout},
		Logger:   slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level})),
	}, nil
}

// serveShard runs the relay and its HTTP server until ctx ends, then shuts both down.
func serveShard(ctx context.Context, opt ShardOptions, listen string, shutdownTimeout time.Duration) error {
	r, err := NewShardRelay(opt)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		r.Close()
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Requests live in ctx: on shutdown SSE and WebSocket streams end (their clients resume by
	// cursor) instead of holding Shutdown until its timeout.
	srv := &http.Server{Handler: r.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	runErr := make(chan error, 1)
	go func() { runErr <- r.Run(ctx) }()
	srvErr := make(chan error, 1)
	go func() { srvErr <- srv.Serve(ln) }()
	opt.Logger.Info("shard relay serving", "listen", ln.Addr().String(), "namespace", opt.Map.Namespace, "channel", opt.Map.Channel, "shard", opt.Shard)
	select {
	case <-ctx.Done():
	case err = <-srvErr:
	}
	cancel()
	sctx, scancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer scancel()
	_ = srv.Shutdown(sctx) // SSE streams end when ctx is cancelled: their request contexts die with the listener's
	_ = srv.Close()
	<-runErr
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
