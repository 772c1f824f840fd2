package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/internal/version"
	"github.com/heraldhq/herald/relay/event"
	"github.com/heraldhq/herald/relay/httpapi"
	"github.com/heraldhq/herald/relay/hub"
	"github.com/heraldhq/herald/relay/metrics"
	"github.com/heraldhq/herald/relay/shardmap"
	"github.com/heraldhq/herald/relay/stream"
	"github.com/heraldhq/herald/relay/upstream"
)

// ShardOptions configure a shard relay. Zero values take the documented defaults.
type ShardOptions struct {
	Map               *shardmap.Map        // required, validated
	Shard             int                  // the shard served, 0..len(Map.Shards)-1
	Redis             redis.ClusterOptions // Addrs (required), Username, Password, TLSConfig...; timeouts default to 2s
	Heartbeat         time.Duration        // SSE heartbeat comment / WebSocket ping interval. Defaults to stream.DefaultHeartbeat.
	QueueBytes        int                  // per-subscriber queue limit before a slow-consumer close. Defaults to hub.DefaultQueueBytes.
	IdempotencyWindow time.Duration        // how long an Idempotency-Key is remembered where the shard map sets no window. Defaults to 5m.
	WriteTimeout      time.Duration        // bound of one batch write to a subscriber. Defaults to stream.DefaultWriteTimeout.
	BodyReadTimeout   time.Duration        // bound of reading one request body. Defaults to httpapi.DefaultBodyReadTimeout.
	WriteInterval     time.Duration        // least time between two write rounds to live SSE subscribers (hub.SetWriteInterval); 0 = none
	WaitTimeout       time.Duration        // bound of WAIT for ?ack=replicated. Defaults to 1s.
	UpstreamLostAfter time.Duration        // how long the Redis subscription may be down before live subscribers are sent to another replica. Defaults to 5s.
	Upstream          upstream.Options     // probe interval/timeout and other upstream knobs
	Limits            httpapi.Limits       // caps on streams and replays, per relay and per caller; zero: none
	Browser           httpapi.Browser      // web pages of other origins: CORS and WebSocket origins
	Logger            *slog.Logger         // defaults to slog.Default()
	Registry          *prometheus.Registry // defaults to a new registry with Go and process collectors
	// Authorize checks callers of publish and subscribe (see httpapi.Config.Authorize); nil
	// admits everyone, which only local tests should do (--auth=none).
	Authorize func(r *http.Request) (caller string, status int, reason string)
}

// ShardRelay is a running shard relay: its HTTP handler and its Redis subscription.
type ShardRelay struct {
	opt     ShardOptions
	cluster *redis.ClusterClient
	hub     *hub.Hub
	sub     *upstream.Subscription
	handler http.Handler
	log     *slog.Logger
	closeMu sync.Once
	// stopPipeline ends the publisher's auto-pipelining (upstream.Publisher.AutoPipeline).
	stopPipeline context.CancelFunc
}

// NewShardRelay validates opt and wires the relay; Run starts it.
func NewShardRelay(opt ShardOptions) (*ShardRelay, error) {
	if opt.Map == nil {
		return nil, errors.New("a shard map is required")
	}
	if err := opt.Map.Validate(); err != nil {
		return nil, err
	}
	if opt.Shard < 0 || opt.Shard >= len(opt.Map.Shards) {
		return nil, fmt.Errorf("shard %d does not exist: channel %s/%s has shards 0..%d", opt.Shard, opt.Map.Namespace, opt.Map.Channel, len(opt.Map.Shards)-1)
	}
	if len(opt.Redis.Addrs) == 0 {
		return nil, errors.New("at least one Redis address is required")
	}
	if opt.Heartbeat <= 0 {
		opt.Heartbeat = stream.DefaultHeartbeat
	}
	if opt.QueueBytes <= 0 {
		opt.QueueBytes = hub.DefaultQueueBytes
	}
	// Room for two of the largest events the channel's maxMessageBytes allows, whatever the flag.
	opt.QueueBytes = max(opt.QueueBytes, int(shardmap.QueueBytes(opt.Map.MaxMessageBytes)))
	if opt.IdempotencyWindow <= 0 {
		opt.IdempotencyWindow = 5 * time.Minute
	}
	if opt.UpstreamLostAfter <= 0 {
		opt.UpstreamLostAfter = 5 * time.Second
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.Registry == nil {
		opt.Registry = metrics.NewRegistry()
	}
	ro := opt.Redis
	if ro.DialTimeout == 0 {
		ro.DialTimeout = 2 * time.Second
	}
	if ro.ReadTimeout == 0 {
		ro.ReadTimeout = 2 * time.Second
	}
	if ro.WriteTimeout == 0 {
		ro.WriteTimeout = 2 * time.Second
	}
	if ro.MaxRedirects == 0 {
		ro.MaxRedirects = 8
	}
	ro.ContextTimeoutEnabled = true
	ro.ReadOnly = false // subscriptions and catch-up must use masters

	log := opt.Logger.With("namespace", opt.Map.Namespace, "channel", opt.Map.Channel)
	opt.Upstream.Logger = log
	r := &ShardRelay{opt: opt, cluster: redis.NewClusterClient(&ro), hub: hub.New(opt.QueueBytes), log: log}
	r.hub.SetWriteInterval(opt.WriteInterval)
	// No namespace label: Prometheus sets it from the pod, which runs in the channel's namespace
	// (a constant one would become exported_namespace).
	labels := prometheus.Labels{"channel": opt.Map.Channel, "shard": strconv.Itoa(opt.Shard)}
	met := metrics.New(opt.Registry, labels, r.hub)
	opt.Registry.MustRegister(version.BuildInfo("shard"))
	enc := event.NewEncoder(opt.Map.Namespace, opt.Map.Channel, opt.Shard)
	r.sub = upstream.NewSubscription(r.cluster, opt.Map, opt.Shard, r.hub, enc, met, opt.Upstream)
	pub := upstream.NewPublisher(r.cluster, opt.Map, opt.Shard, opt.IdempotencyWindow)
	var pipeCtx context.Context
	pipeCtx, r.stopPipeline = context.WithCancel(context.Background())
	pub.AutoPipeline(pipeCtx)
	r.handler = httpapi.New(httpapi.Config{
		Map: opt.Map, Shard: opt.Shard,
		Publisher:    pub,
		Subscription: r.sub, Hub: r.hub, Encoder: enc, Metrics: met, Gatherer: opt.Registry,
		WriteTimeout: opt.WriteTimeout, WaitTimeout: opt.WaitTimeout, BodyReadTimeout: opt.BodyReadTimeout, Logger: log, Authorize: opt.Authorize,
		Limits: opt.Limits, Browser: opt.Browser,
	})
	return r, nil
}

// Handler serves HTTP API v1.
func (r *ShardRelay) Handler() http.Handler { return r.handler }

// Ready reports whether the shard subscription is up and caught up (what /readyz says).
func (r *ShardRelay) Ready() bool { return r.sub.Ready() }

// Status is the upstream subscription's status (what /readyz shows).
func (r *ShardRelay) Status() upstream.Status { return r.sub.Status() }

// Hub exposes the subscriber registry's counters.
func (r *ShardRelay) Hub() *hub.Hub { return r.hub }

// Run keeps the Redis subscription and the heartbeats going until ctx ends, then ends every
// subscriber's stream and closes the Redis client.
func (r *ShardRelay) Run(ctx context.Context) error {
	defer r.Close()
	defer r.hub.Close() // live SSE streams outlive their handlers: end them here
	go func() {
		t := time.NewTicker(r.opt.Heartbeat)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				r.hub.Broadcast(event.Heartbeat) // one shared frame for every subscriber
			}
		}
	}()
	go r.sendAwayWhileUnready(ctx)
	return r.sub.Run(ctx)
}

// sendAwayWhileUnready ends the live streams of a relay that lost its Redis subscription (a
// partition, a master it cannot reach) for longer than UpstreamLostAfter, every second while
// that lasts: its readiness already takes it out of its Services, and its clients resume by
// cursor on a replica that still delivers instead of waiting here for Redis to come back. A
// short outage (a failover, seconds) ends nobody's stream: the relay catches up by itself.
func (r *ShardRelay) sendAwayWhileUnready(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var since time.Time // since when the subscription has been down; zero while it is up
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		switch {
		case r.sub.Ready():
			since = time.Time{}
		case since.IsZero():
			since = time.Now()
		case time.Since(since) >= r.opt.UpstreamLostAfter:
			if n := r.hub.Disconnect(hub.ErrUpstreamLost); n > 0 {
				r.log.Warn("Redis subscription down: sent live subscribers to another replica", "subscribers", n, "downFor", time.Since(since).Round(time.Second).String())
			}
		}
	}
}

// Close releases the Redis connections. Run calls it on return.
func (r *ShardRelay) Close() error {
	var err error
	r.closeMu.Do(func() {
		r.stopPipeline()
		err = r.cluster.Close()
	})
	return err
}
