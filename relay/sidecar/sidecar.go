package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/heraldhq/herald/internal/version"
	"github.com/heraldhq/herald/relay/event"
	"github.com/heraldhq/herald/relay/httpapi"
	"github.com/heraldhq/herald/relay/hub"
	"github.com/heraldhq/herald/relay/metrics"
	"github.com/heraldhq/herald/relay/problem"
	"github.com/heraldhq/herald/relay/shardmap"
	"github.com/heraldhq/herald/relay/stream"
)

// ChannelRef names a channel the app may use.
type ChannelRef struct {
	Namespace string
	Name      string
}

func (c ChannelRef) String() string { return c.Namespace + "/" + c.Name }

// ParseChannels reads a --channels list: "orders,other-ns/billing"; a bare name is in
// namespace. Two channels with the same name (in different namespaces) cannot both be listed:
// the API addresses channels by name.
func ParseChannels(list, namespace string) ([]ChannelRef, error) {
	var out []ChannelRef
	seen := map[string]string{}
	for _, item := range strings.Split(list, ",") {
		if item = strings.TrimSpace(item); item == "" {
			continue
		}
		ref := ChannelRef{Namespace: namespace, Name: item}
		if ns, name, ok := strings.Cut(item, "/"); ok {
			ref = ChannelRef{Namespace: ns, Name: name}
		}
		if ref.Namespace == "" {
			return nil, fmt.Errorf("channel %q has no namespace: give --namespace (the pod's) or write namespace/name", item)
		}
		if !validName(ref.Namespace) || !validName(ref.Name) {
			return nil, fmt.Errorf("channel %q: namespace and name must be DNS labels", item)
		}
		if prev, dup := seen[ref.Name]; dup {
			if prev == ref.Namespace {
				continue
			}
			return nil, fmt.Errorf("channels %s/%s and %s are both named %q; the API addresses channels by name, so a pod can use only one of them", prev, ref.Name, ref, ref.Name)
		}
		seen[ref.Name] = ref.Namespace
		out = append(out, ref)
	}
	if len(out) == 0 {
		return nil, errors.New("no channels: list the channels the pod may use, e.g. orders,other-ns/billing")
	}
	return out, nil
}

func validName(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// Options configure a Sidecar. Zero values take the documented defaults.
type Options struct {
	Channels        []ChannelRef         // required: the channels the app may use
	TokenDir        string               // projected tokens, one per channel: <TokenDir>/<shardmap.TokenFileName>
	TokenFile       string               // one token for every channel's relays (local runs); with neither, no token is sent
	EndpointsFile   string               // shardmap.Endpoints JSON standing in for cluster DNS; "" uses DNS
	Heartbeat       time.Duration        // SSE heartbeat comment / WebSocket ping interval. Defaults to stream.DefaultHeartbeat.
	QueueBytes      int                  // per-subscriber queue limit before a slow-consumer close. Defaults to hub.DefaultQueueBytes.
	WriteTimeout    time.Duration        // bound of one batch write to a local subscriber. Defaults to stream.DefaultWriteTimeout.
	WriteInterval   time.Duration        // least time between two write rounds to local subscribers once writes back up (hub.SetWriteInterval); 0 = none
	Browser         httpapi.Browser      // web pages of other origins: CORS and WebSocket origins
	RefreshInterval time.Duration        // shard map and reachability refresh. Defaults to 10s.
	PublishTimeout  time.Duration        // bound of one publish, retries included; each attempt gets a third of it. Defaults to 10s.
	IdleTimeout     time.Duration        // an upstream stream silent this long is re-opened. Defaults to three of the relays' heartbeats (45s).
	Logger          *slog.Logger         // defaults to slog.Default()
	Registry        *prometheus.Registry // defaults to a new registry with Go and process collectors
	Edge            *EdgeOptions         // set: serve end users with their tokens (an edge, edge.go) instead of the pod's app
}

// dialTimeout bounds connecting to a relay. Relays are in the cluster, a connection takes
// milliseconds; a relay whose node went silent drops the SYN, and without a bound the dial would
// wait for the whole call's deadline (the kernel retries for minutes), where a publish should
// move on to another replica.
const dialTimeout = 2 * time.Second

// Sidecar serves HTTP API v1 to the app and talks to the shard relays of its channels.
type Sidecar struct {
	opt      Options
	log      *slog.Logger
	client   *http.Client
	resolver *resolver
	met      *metrics.Sidecar
	channels map[string]*channel // by name and by namespace/name
	list     []*channel
	mux      *http.ServeMux
	edge     *edge // nil in a sidecar

	downMu sync.Mutex
	down   map[string]mark // base URL -> a replica that failed a call (refused, timed out, went silent), avoided until then

	runMu  sync.Mutex
	runCtx context.Context // the context of Run: upstream streams live in it
}

// New validates opt and wires the sidecar; Run starts it.
func New(opt Options) (*Sidecar, error) {
	if len(opt.Channels) == 0 {
		return nil, errors.New("a sidecar needs at least one channel")
	}
	if opt.Heartbeat <= 0 {
		opt.Heartbeat = stream.DefaultHeartbeat
	}
	if opt.QueueBytes <= 0 {
		opt.QueueBytes = hub.DefaultQueueBytes
	}
	if opt.WriteTimeout <= 0 {
		opt.WriteTimeout = stream.DefaultWriteTimeout
	}
	if opt.RefreshInterval <= 0 {
		opt.RefreshInterval = 10 * time.Second
	}
	if opt.PublishTimeout <= 0 {
		opt.PublishTimeout = 10 * time.Second
	}
	if opt.IdleTimeout <= 0 {
		opt.IdleTimeout = 3 * stream.DefaultHeartbeat
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.Registry == nil {
		opt.Registry = metrics.NewRegistry()
	}
	role := "sidecar"
	if opt.Edge != nil {
		if opt.Edge.Users == nil {
			return nil, errors.New("an edge needs a verifier of its users' tokens")
		}
		role = "edge"
	}
	s := &Sidecar{
		opt: opt, log: opt.Logger.With("role", role),
		client: &http.Client{Transport: &http.Transport{
			Proxy: nil, MaxIdleConnsPerHost: 16, IdleConnTimeout: 90 * time.Second,
			ResponseHeaderTimeout: 10 * time.Second, DisableCompression: true,
			DialContext: (&net.Dialer{Timeout: dialTimeout}).DialContext,
		}},
		resolver: &resolver{file: watchedFile{path: opt.EndpointsFile}},
		down:     map[string]mark{},
		channels: map[string]*channel{},
		mux:      http.NewServeMux(),
	}
	for _, ref := range opt.Channels {
		ch := newChannel(s, ref)
		s.channels[ref.Name] = ch
		s.channels[ref.String()] = ch
		s.list = append(s.list, ch)
	}
	s.met = metrics.NewSidecar(opt.Registry, s.upstreamStreams, s.localSubscribers)
	opt.Registry.MustRegister(version.BuildInfo(role))
	s.mux.HandleFunc("/v1/channels/{channel}/messages", httpapi.Only(http.MethodPost, s.withChannel(s.publish)))
	s.mux.HandleFunc("/v1/channels/{channel}/events", httpapi.Only(http.MethodGet, s.withChannel(s.serveSSE)))
	s.mux.HandleFunc("/v1/channels/{channel}/ws", httpapi.Only(http.MethodGet, s.withChannel(s.serveWebSocket)))
	s.mux.HandleFunc("/healthz", httpapi.Only(http.MethodGet, func(w http.ResponseWriter, _ *http.Request) {
		httpapi.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}))
	s.mux.HandleFunc("/readyz", httpapi.Only(http.MethodGet, s.readyz))
	if opt.Edge == nil {
		// End users get neither: the shard map names the cluster's Services, and the metrics
		// are the platform's (an edge serves them on a listener of their own).
		s.mux.HandleFunc("/v1/channels/{channel}/shards", httpapi.Only(http.MethodGet, s.withChannel(s.shards)))
		s.mux.Handle("/metrics", s.MetricsHandler())
	} else {
		s.edge = newEdge(*opt.Edge)
	}
	httpapi.ServeSpecs(s.mux)
	s.mux.HandleFunc("/", httpapi.NotFound)
	return s, nil
}

// Handler serves HTTP API v1 to the app.
func (s *Sidecar) Handler() http.Handler { return s.opt.Browser.Handler(s.mux) }

// Run discovers the channels' shard maps and keeps them fresh, runs the upstream streams local
// subscribers need and the heartbeats, until ctx ends.
func (s *Sidecar) Run(ctx context.Context) error {
	s.runMu.Lock()
	s.runCtx = ctx
	s.runMu.Unlock()
	var wg sync.WaitGroup
	for _, ch := range s.list {
		wg.Add(1)
		go func() { defer wg.Done(); ch.discoverLoop(ctx) }()
	}
	// Heartbeats go to one part of the subscribers at a time, each part once per interval: an
	// edge with tens of thousands of idle streams writes them a few hundred at a time, and live
	// events do not queue behind one round to all of them.
	t := time.NewTicker(max(s.opt.Heartbeat/hub.Parts, time.Millisecond))
	defer t.Stop()
	part := 0
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			if s.edge != nil {
				s.edge.drain(s.list)
			}
			for _, ch := range s.list {
				ch.wait()
				ch.closeSubscribers() // pushed streams outlive their handlers: end them
			}
			return nil
		case <-t.C:
			for _, ch := range s.list {
				ch.heartbeat(part)
			}
			part = (part + 1) % hub.Parts
		}
	}
}

// context returns Run's context, or an error before Run started.
func (s *Sidecar) context() (context.Context, error) {
	s.runMu.Lock()
	defer s.runMu.Unlock()
	if s.runCtx == nil {
		return nil, errors.New("the sidecar is starting")
	}
	return s.runCtx, nil
}

// Ready reports what /readyz says: every channel's shard map is known and each of its shards
// has a ready relay, and every upstream stream opened is connected.
func (s *Sidecar) Ready() bool {
	for _, ch := range s.list {
		if !ch.ready() {
			return false
		}
	}
	return true
}

func (s *Sidecar) readyz(w http.ResponseWriter, _ *http.Request) {
	code := http.StatusOK
	channels := make([]channelStatus, 0, len(s.list))
	for _, ch := range s.list {
		st := ch.status()
		if !st.Ready {
			code = http.StatusServiceUnavailable
		}
		channels = append(channels, st)
	}
	role := "sidecar"
	if s.edge != nil {
		role = "edge"
	}
	httpapi.WriteJSON(w, code, map[string]any{"ready": code == http.StatusOK, "role": role, "channels": channels})
}

func (s *Sidecar) upstreamStreams() int {
	n := 0
	for _, ch := range s.list {
		n += ch.connectedStreams()
	}
	return n
}

func (s *Sidecar) localSubscribers() int {
	n := 0
	for _, ch := range s.list {
		n += ch.localSubscribers()
	}
	return n
}

// withChannel answers 404 for a channel the pod may not use, like a relay for a channel it
// does not serve.
func (s *Sidecar) withChannel(h func(http.ResponseWriter, *http.Request, *channel)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ch := s.channels[r.PathValue("channel")]
		if ch == nil {
			names := make([]string, len(s.list))
			for i, c := range s.list {
				names[i] = c.ref.String()
			}
			if s.edge != nil {
				problem.Write(w, http.StatusNotFound, "channel "+fmt.Sprintf("%q", r.PathValue("channel"))+" is not served here; this edge serves "+strings.Join(names, ", "))
				return
			}
			problem.Write(w, http.StatusNotFound, "channel "+fmt.Sprintf("%q", r.PathValue("channel"))+" is not one this pod may use; its channels are "+
				strings.Join(names, ", ")+" (the notifications.herald.dev/channels annotation)")
			return
		}
		if s.edge != nil {
			if r = s.edge.authenticate(w, r); r == nil {
				return
			}
		}
		h(w, r, ch)
	}
}

// shardMap returns the channel's map, or answers 503 when it is not known yet.
func (s *Sidecar) shardMap(w http.ResponseWriter, ch *channel) *shardmap.Map {
	m := ch.shardMap()
	if m == nil {
		w.Header().Set("Retry-After", "1")
		problem.Write(w, http.StatusServiceUnavailable, "the shard map of channel "+ch.ref.String()+" is not known yet (its relay Service "+
			ch.serviceURL()+" did not answer: "+ch.lastError()+"); retry")
	}
	return m
}

func (s *Sidecar) shards(w http.ResponseWriter, _ *http.Request, ch *channel) {
	if m := s.shardMap(w, ch); m != nil {
		httpapi.WriteJSON(w, http.StatusOK, m)
	}
}

// tokenPath is the token file for the relays of ref: its own under TokenDir, else TokenFile.
func (opt Options) tokenPath(ref ChannelRef) string {
	if opt.TokenDir != "" {
		return filepath.Join(opt.TokenDir, shardmap.TokenFileName(ref.Namespace, ref.Name))
	}
	return opt.TokenFile
}

// MetricsHandler serves the sidecar's metrics, for a listener of their own that Prometheus can
// reach (the API stays on loopback).
func (s *Sidecar) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(s.opt.Registry, promhttp.HandlerOpts{})
}

// get sends a GET to one of the channel's shard relays with the channel's token.
func (ch *channel) get(ctx context.Context, url string, hdr http.Header) (*http.Response, error) {
	return ch.send(ctx, http.MethodGet, url, nil, hdr)
}

// send makes one call to one of the channel's relays with the channel's bearer token, whose
// audience is that channel: it is good nowhere else.
func (ch *channel) send(ctx context.Context, method, url string, body io.Reader, hdr http.Header) (*http.Response, error) {
	s := ch.s
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return nil, err
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	token, err := ch.token.get(false)
	if err != nil {
		s.log.Warn("no bearer token for the shard relays", "error", err.Error())
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return s.client.Do(req)
}

// maxLine bounds one SSE line read from a relay: a CloudEvent of maxMessageBytes of data,
// base64 and JSON escaping included, plus its attributes.
func maxLine(m *shardmap.Map) int { return int(shardmap.MaxEventBytes(m.MaxMessageBytes)) }

// readFrames reads SSE frames from a relay's response until it ends, handing each message
// or gap to deliver; comments go to comment. It returns the error that ended the stream.
func readFrames(body io.Reader, limit int, deliver func(*event.Encoded) error, comment func(string) error) error {
	rd := event.NewSSEReader(body, limit)
	for {
		f, err := rd.Next()
		if err != nil {
			return err
		}
		if f.Event == "" && f.Data == nil {
			if err := comment(f.Comment); err != nil {
				return err
			}
			continue
		}
		e, err := event.FromFrame(f)
		if err != nil {
			continue // not a relay event: ignore it rather than pass on what we cannot vouch for
		}
		if err := deliver(e); err != nil {
			return err
		}
	}
}
