package metrics

import "github.com/prometheus/client_golang/prometheus"

// Sidecar are the metrics of a sidecar relay (herald_relay_sidecar_*).
type Sidecar struct {
	Reconnects     prometheus.Counter // upstream streams re-opened after a failure (another replica, same cursor)
	Published      prometheus.Counter // publishes a shard relay accepted
	PublishRetries prometheus.Counter // publish attempts repeated on another replica (same Idempotency-Key)
	PublishBatches prometheus.Counter // batches of the apps' single publishes sent to a shard relay as one request
	Replays        prometheus.Counter // shard replays run for local subscribers that resumed with a cursor
	Gaps           prometheus.Counter // no-replay gaps sent after a Live channel's upstream stream broke
}

// NewSidecar registers the sidecar's metrics on reg; streams and subscribers are read from the
// functions when scraped.
func NewSidecar(reg prometheus.Registerer, streams, subscribers func() int) *Sidecar {
	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Subsystem: "sidecar", Name: name, Help: help})
		reg.MustRegister(c)
		return c
	}
	s := &Sidecar{
		Reconnects:     counter("upstream_reconnects_total", "Upstream streams to shard relays re-opened after a failure, on another ready replica, resuming from the stream's cursor."),
		Published:      counter("published_total", "Publishes a shard relay accepted (HTTP 202)."),
		PublishBatches: counter("publish_batches_total", "Batches of the apps' concurrent single publishes sent to a shard relay as one request."),
		PublishRetries: counter("publish_retries_total", "Publish attempts repeated on another replica with the same Idempotency-Key."),
		Replays:        counter("replays_total", "Shard replays fetched for local subscribers that resumed with a cursor."),
		Gaps:           counter("gaps_total", "No-replay gaps sent to local subscribers after a Live channel's upstream stream broke and was re-opened (what was published meanwhile is lost)."),
	}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Subsystem: "sidecar", Name: "upstream_streams",
			Help: "Upstream streams to shard relays currently connected (at most one per channel and shard)."}, func() float64 { return float64(streams()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Subsystem: "sidecar", Name: "subscribers",
			Help: "Local SSE and WebSocket subscribers."}, func() float64 { return float64(subscribers()) }),
	)
	return s
}
