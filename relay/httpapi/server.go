package httpapi

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/heraldhq/herald/api"
	"github.com/heraldhq/herald/relay/event"
	"github.com/heraldhq/herald/relay/hub"
	"github.com/heraldhq/herald/relay/metrics"
	"github.com/heraldhq/herald/relay/problem"
	"github.com/heraldhq/herald/relay/shardmap"
	"github.com/heraldhq/herald/relay/stream"
	"github.com/heraldhq/herald/relay/upstream"
)

// DefaultMaxMessageBytes applies when the shard map sets no maxMessageBytes.
const DefaultMaxMessageBytes = shardmap.DefaultMaxMessageBytes

// Config wires a Server. Map, Publisher, Subscription, Hub, Encoder, Metrics and Gatherer are required.
type Config struct {
	Map          *shardmap.Map
	Shard        int // the shard this relay serves
	Publisher    *upstream.Publisher
	Subscription *upstream.Subscription
	Hub          *hub.Hub
	Encoder      *event.Encoder
	Metrics      *metrics.Metrics
	Gatherer     prometheus.Gatherer
	WriteTimeout time.Duration // bound of one batch write to a subscriber. Defaults to stream.DefaultWriteTimeout.
	// BodyReadTimeout bounds reading one request body (a publish, an interest change).
	// Defaults to DefaultBodyReadTimeout.
	BodyReadTimeout time.Duration
	WaitTimeout     time.Duration // bound of WAIT for ?ack=replicated. Defaults to 1s.
	ReplayBatch     int64         // XRANGE COUNT per replay round trip. Defaults to 500.
	Logger          *slog.Logger  // defaults to slog.Default()
	// Authorize checks the caller of publish and subscribe calls; nil lets everyone in (local
	// tests). It returns 0 to let the call through, or the status to refuse it with (401 no or
	// bad credentials, 403 not permitted, 503 cannot check now) and a reason for the caller.
	// The shard map, /healthz, /readyz and /metrics stay open.
	Authorize func(r *http.Request) (caller string, status int, reason string)
	// Limits cap the streams and replays of the relay and of each caller; zero: none.
	Limits Limits
	// Browser allows web pages of other origins (CORS, WebSocket origins).
	Browser Browser
}

// Server is the HTTP API of one shard relay.
type Server struct {
	cfg      Config
	maxBytes int64
	mux      *http.ServeMux
	handler  http.Handler // mux behind the CORS handler
	limits   *limiter     // nil without limits
	interest sync.Map     // the announced interest streams, by id: *interestStream
}

// New returns the API server for cfg.
func New(cfg Config) *Server {
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = stream.DefaultWriteTimeout
	}
	if cfg.BodyReadTimeout <= 0 {
		cfg.BodyReadTimeout = DefaultBodyReadTimeout
	}
	if cfg.WaitTimeout <= 0 {
		cfg.WaitTimeout = time.Second
	}
	if cfg.ReplayBatch <= 0 {
		cfg.ReplayBatch = 500
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, maxBytes: cfg.Map.MaxMessageBytes, mux: http.NewServeMux()}
	s.handler = cfg.Browser.Handler(s.mux)
	if cfg.Limits != (Limits{}) {
		s.limits = newLimiter(cfg.Limits)
	}
	for _, reason := range Refusals { // every series from zero, so rates and alerts work at once
		cfg.Metrics.Refused.WithLabelValues(reason)
	}
	if s.maxBytes <= 0 {
		s.maxBytes = DefaultMaxMessageBytes
	}
	s.mux.HandleFunc("/v1/channels/{channel}/messages", s.timed("publish", s.only(http.MethodPost, s.channel(s.authorized(s.publish)))))
	s.mux.HandleFunc("/v1/channels/{channel}/events", s.only(http.MethodGet, s.channel(s.authorized(s.serveSSE))))
	s.mux.HandleFunc("/v1/channels/{channel}/streams/{stream}", s.timed("interest", s.only(http.MethodPost, s.channel(s.authorized(s.adjust)))))
	s.mux.HandleFunc("/v1/channels/{channel}/ws", s.only(http.MethodGet, s.channel(s.authorized(s.serveWebSocket))))
	s.mux.HandleFunc("/v1/channels/{channel}/shards", s.timed("shards", s.only(http.MethodGet, s.channel(s.shards))))
	s.mux.HandleFunc("/healthz", s.timed("healthz", s.only(http.MethodGet, s.healthz)))
	s.mux.HandleFunc("/readyz", s.timed("readyz", s.only(http.MethodGet, s.readyz)))
	s.mux.Handle("/metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{}))
	ServeSpecs(s.mux)
	s.mux.HandleFunc("/", NotFound)
	return s
}

// timed records the duration of a route's requests (not of streams, which last as long as the
// subscriber stays).
func (s *Server) timed(route string, h http.HandlerFunc) http.HandlerFunc {
	return promhttp.InstrumentHandlerDuration(s.cfg.Metrics.Requests.MustCurryWith(prometheus.Labels{"route": route}), h)
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// only answers 405 with an Allow header and a JSON body to any other method (HEAD rides on GET).
func (s *Server) only(method string, h http.HandlerFunc) http.HandlerFunc { return Only(method, h) }

// Only answers 405 with an Allow header and a JSON body to any method but method (HEAD rides
// on GET).
func Only(method string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != method && !(method == http.MethodGet && r.Method == http.MethodHead) {
			w.Header().Set("Allow", method)
			problem.Write(w, http.StatusMethodNotAllowed, "method "+r.Method+" is not allowed here; use "+method)
			return
		}
		h(w, r)
	}
}

// channel answers 404 for a channel this relay does not serve.
func (s *Server) channel(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if c := r.PathValue("channel"); c != s.cfg.Map.Channel {
			problem.Write(w, http.StatusNotFound, "channel "+strconv.Quote(c)+" is not served here; this relay serves channel "+
				strconv.Quote(s.cfg.Map.Channel)+" in namespace "+strconv.Quote(s.cfg.Map.Namespace))
			return
		}
		h(w, r)
	}
}

// NotFound answers 404 for a path outside the API, with a JSON body that says where it is.
func NotFound(w http.ResponseWriter, _ *http.Request) {
	problem.Write(w, http.StatusNotFound, "no such path; the API is under /v1/channels/{channel}/(messages|events|ws|shards)")
}

// callerKey holds, in an authorized request's context, who Config.Authorize said is calling.
type callerKey struct{}

// callerOf is the caller Config.Authorize let in ("" without authorization).
func callerOf(r *http.Request) string {
	c, _ := r.Context().Value(callerKey{}).(string)
	return c
}

// authorized refuses callers that Config.Authorize does not let in, with a JSON reason, and
// passes on who the caller is (callerOf).
func (s *Server) authorized(h http.HandlerFunc) http.HandlerFunc {
	if s.cfg.Authorize == nil {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		caller, code, reason := s.cfg.Authorize(r)
		if code != 0 {
			switch code {
			case http.StatusUnauthorized:
				w.Header().Set("WWW-Authenticate", `Bearer realm="herald"`)
			case http.StatusServiceUnavailable:
				w.Header().Set("Retry-After", "1")
			}
			problem.Write(w, code, reason)
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, caller)))
	}
}

func (s *Server) shards(w http.ResponseWriter, r *http.Request) {
	WriteJSON(w, http.StatusOK, s.cfg.Map)
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz is 200 only while the shard subscription is confirmed on the slot's master and caught
// up. The body gives a reason code and the stream position (upstream.lastDelivered, where a
// sidecar starts its first stream), never Redis addresses or errors: any caller that reaches
// the port reads it. Those details are in the relay's log and metrics.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	st := s.cfg.Subscription.Status()
	code, reason := http.StatusOK, "Subscribed"
	switch {
	case !st.Subscribed:
		code, reason = http.StatusServiceUnavailable, "NotSubscribed"
	case !s.cfg.Subscription.Ready():
		code, reason = http.StatusServiceUnavailable, "CatchingUp"
	}
	WriteJSON(w, code, map[string]any{"ready": code == http.StatusOK, "shard": s.cfg.Shard, "reason": reason,
		"upstream": map[string]string{"lastDelivered": st.LastDelivered}})
}

// misdirected answers 421 for a key of another shard, naming the right one.
func (s *Server) misdirected(w http.ResponseWriter, prefix, key string, shard int) {
	detail, ext := s.misdirection(prefix, key, shard)
	problem.WriteWith(w, http.StatusMisdirectedRequest, detail, ext)
}

// misdirection is the detail and members of a 421 for a key of another shard.
func (s *Server) misdirection(prefix, key string, shard int) (string, map[string]any) {
	return prefix + "key " + strconv.Quote(key) + " belongs to shard " + strconv.Itoa(shard) +
			" but this relay serves shard " + strconv.Itoa(s.cfg.Shard) + "; send it to that shard's relay (or to the sidecar, which routes by key)",
		map[string]any{"shard": shard, "endpoint": s.cfg.Map.Shards[shard].Endpoint}
}

// ServeSpecs serves the API's documents on mux: /v1/openapi.yaml and /v1/asyncapi.yaml.
func ServeSpecs(mux *http.ServeMux) {
	for path, doc := range map[string][]byte{"/v1/openapi.yaml": api.OpenAPI, "/v1/asyncapi.yaml": api.AsyncAPI} {
		mux.HandleFunc(path, Only(http.MethodGet, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/yaml")
			_, _ = w.Write(doc)
		}))
	}
}

// WriteJSON answers code with v as JSON (and a newline).
func WriteJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"error":"encoding the response failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}
