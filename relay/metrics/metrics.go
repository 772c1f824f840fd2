package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/heraldhq/herald/relay/event"
)

// NewRegistry returns a registry with the Go runtime and process collectors: what a relay
// process exports besides its own metrics.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Namespace prefixes every metric name.
const Namespace = "herald_relay"

// Metrics are the counters and histograms the relay updates itself.
type Metrics struct {
	Published       prometheus.Counter       // messages accepted by POST (202)
	PublishErrors   prometheus.Counter       // publishes that failed on the Redis side (5xx)
	Resubscribes    prometheus.Counter       // upstream subscriptions rebuilt after trouble
	Backfilled      prometheus.Counter       // entries delivered from the stream by catch-up (XRANGE)
	Rollbacks       prometheus.Counter       // stream IDs seen going backwards / delivered entries lost by Redis
	Gaps            *prometheus.CounterVec   // gap events sent to subscribers, by reason
	HandoffDropped  prometheus.Counter       // live messages dropped because the processor was behind (repaired by catch-up)
	Replayed        prometheus.Counter       // entries replayed to resuming subscribers
	InterestChanges prometheus.Counter       // changes applied to interest streams (sidecars' upstreams)
	StaleWriter     prometheus.Counter       // live messages dropped because a node other than the subscribed master wrote them
	Latency         prometheus.Histogram     // publish (stream ID time) to hand-off to subscriber queues, seconds
	Refused         *prometheus.CounterVec   // subscribe calls answered 429, by the limit that refused them
	PublishedBytes  prometheus.Counter       // message bodies accepted, bytes
	Streams         *prometheus.GaugeVec     // open subscriber streams by transport (sse, websocket)
	Requests        *prometheus.HistogramVec // request durations of the non-streaming routes, by route, method and code
}

// HubStats is what the hub counts on its own.
type HubStats interface {
	Subscribers() int64
	Delivered() uint64
	DeliveredBytes() uint64
	SlowClosed() uint64
}

// New creates the metrics and registers them, and the hub's counters, on reg. labels (for
// example channel and shard) are attached to every metric.
func New(reg prometheus.Registerer, labels prometheus.Labels, hub HubStats) *Metrics {
	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help, ConstLabels: labels})
		reg.MustRegister(c)
		return c
	}
	m := &Metrics{
		Published:     counter("published_total", "Messages accepted for publishing (HTTP 202)."),
		PublishErrors: counter("publish_errors_total", "Publishes that failed because Redis did not accept them."),
		Resubscribes:  counter("resubscribes_total", "Upstream shard subscriptions rebuilt after a reconnect, sunsubscribe, MOVED, failed ping or missing heartbeat probe."),
		Backfilled:    counter("backfilled_total", "Stream entries delivered by catch-up (XRANGE) rather than by the live subscription."),
		Rollbacks:     counter("rollbacks_total", "Failovers after which entries already delivered were gone from the stream (Redis lost acknowledged writes; stream IDs went backwards)."),
		Gaps: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "gaps_total", ConstLabels: labels,
			Help: "Gap events sent to subscribers, by reason (trimmed, rollback, cursor-ahead, no-replay)."}, []string{"reason"}),
		PublishedBytes: counter("published_bytes_total", "Bytes of message bodies accepted for publishing (HTTP 202)."),
		Streams: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Name: "streams", ConstLabels: labels,
			Help: "Open subscriber streams, live or replaying, by transport (sse, websocket)."}, []string{"transport"}),
		Requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "http_request_duration_seconds", ConstLabels: labels,
			Help:    "Duration of the requests that are not streams (publish, shards, health), by route, method and status code.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, []string{"route", "method", "code"}),
		HandoffDropped:  counter("handoff_overflows_total", "Live messages not handed to the processor because it was behind; each triggers catch-up from the stream."),
		Replayed:        counter("replayed_total", "Stream entries replayed to subscribers that resumed with a cursor."),
		InterestChanges: counter("interest_changes_total", "Changes applied to the keys an interest stream (a sidecar's upstream) follows."),
		StaleWriter:     counter("stale_master_messages_total", "Live messages written by a node other than the master the relay subscribed on (a stale master after a failover); not delivered, the stream decides."),
		Latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "publish_to_deliver_seconds", ConstLabels: labels,
			Help:    "Time from the message's stream ID (the master's clock at XADD) to its hand-off to every subscriber queue.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
	}
	m.Refused = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "refused_total", ConstLabels: labels,
		Help: "Calls answered 429 Too Many Requests, by the limit that refused them (httpapi.Refusals: subscribers, subscribers_per_caller, replays_per_caller, replay_rate, bodies_per_caller, interest_keys and their per-namespace kin)."},
		[]string{"limit"})
	reg.MustRegister(m.Latency, m.Refused, m.Gaps, m.Streams, m.Requests)
	// Every series from zero, so rates and alerts work before the first gap, refusal or stream.
	for _, r := range []string{event.GapTrimmed, event.GapRollback, event.GapCursorAhead, event.GapNoReplay} {
		m.Gaps.WithLabelValues(r)
	}
	for _, tr := range []string{"sse", "websocket"} {
		m.Streams.WithLabelValues(tr)
	}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: "subscribers", ConstLabels: labels,
			Help: "Connected SSE and WebSocket subscribers."}, func() float64 { return float64(hub.Subscribers()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Name: "delivered_total", ConstLabels: labels,
			Help: "Events queued to subscribers (one per subscriber per event)."}, func() float64 { return float64(hub.Delivered()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Name: "delivered_bytes_total", ConstLabels: labels,
			Help: "Bytes of encoded events queued to subscribers (each subscriber's copy counted)."}, func() float64 { return float64(hub.DeliveredBytes()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Name: "slow_consumers_dropped_total", ConstLabels: labels,
			Help: "Subscribers disconnected because their queue passed its byte limit."}, func() float64 { return float64(hub.SlowClosed()) }),
	)
	return m
}
