package relaytest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/relay"
	"github.com/heraldhq/herald/relay/event"
	"github.com/heraldhq/herald/relay/shardmap"
	"github.com/heraldhq/herald/relay/upstream"
)

// RedisAddrs is the shared test cluster: $HERALD_REDIS_ADDRS (comma-separated), default
// 127.0.0.1:7001, as started by `hack/redis-cluster.sh up`.
func RedisAddrs() []string {
	if v := os.Getenv("HERALD_REDIS_ADDRS"); v != "" {
		return strings.Split(v, ",")
	}
	return []string{"127.0.0.1:7001"}
}

// Relay is a shard relay served on a loopback httptest server.
type Relay struct {
	*relay.ShardRelay
	Map    *shardmap.Map
	URL    string // base URL of the HTTP API
	Server *httptest.Server
	Redis  *redis.ClusterClient // a separate client for assertions
	stop   func()
}

// Options change the defaults of StartRelay.
type Options struct {
	Addrs    []string                  // Redis seeds; defaults to RedisAddrs()
	Shards   int                       // number of shards in the map; defaults to 1 (the relay serves shard 0)
	Delivery string                    // defaults to Durable
	Modify   func(*relay.ShardOptions) // last-minute changes
	Server   func(*httptest.Server)    // changes to the unstarted test server
	Channel  string                    // channel name; defaults to a unique name from the test name
}

var nameRE = regexp.MustCompile(`[^a-z0-9-]+`)

// UniqueName turns the test name into a channel name that no other test run uses.
func UniqueName(t testing.TB) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	n := nameRE.ReplaceAllString(strings.ToLower(t.Name()), "-")
	if len(n) > 40 {
		n = n[len(n)-40:]
	}
	return strings.Trim(n, "-") + "-" + hex.EncodeToString(b[:])
}

// StartRelay starts a shard relay for shard 0 of a new channel and waits until it is ready.
// Its stream is deleted when the test ends.
func StartRelay(t testing.TB, o Options) *Relay {
	t.Helper()
	o.defaults(t)
	return startShard(t, o.newMap(), 0, o)
}

func (o *Options) defaults(t testing.TB) {
	if o.Addrs == nil {
		o.Addrs = RedisAddrs()
	}
	if o.Shards == 0 {
		o.Shards = 1
	}
	if o.Delivery == "" {
		o.Delivery = shardmap.DeliveryDurable
	}
	if o.Channel == "" {
		o.Channel = UniqueName(t)
	}
}

func (o *Options) newMap() *shardmap.Map {
	tags := make([]string, o.Shards)
	for i := range tags {
		tags[i] = shardmap.HashTag("test", o.Channel, i, 0)
	}
	m := shardmap.New("test", o.Channel, o.Delivery, tags)
	m.MaxMessageBytes = 64 << 10
	m.Retention = shardmap.Retention{MaxLength: 100000}
	return m
}

// startShard starts a relay for shard i of m on a loopback test server.
func startShard(t testing.TB, m *shardmap.Map, i int, o Options) *Relay {
	t.Helper()
	opt := relay.ShardOptions{
		Map: m, Shard: i,
		Redis:    redis.ClusterOptions{Addrs: o.Addrs},
		Upstream: upstream.Options{ProbeInterval: 200 * time.Millisecond, ProbeTimeout: time.Second},
		Logger:   slog.New(slog.NewTextHandler(NewTestLog(t), &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	if o.Modify != nil {
		o.Modify(&opt)
	}
	r, err := relay.NewShardRelay(opt)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(r.Handler())
	if o.Server != nil {
		o.Server(srv)
	}
	srv.Start()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	assert := redis.NewClusterClient(&redis.ClusterOptions{Addrs: o.Addrs})
	var once sync.Once
	stop := func() {
		once.Do(func() {
			srv.CloseClientConnections()
			srv.Close()
			cancel()
			<-done
		})
	}
	t.Cleanup(func() {
		stop()
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer dcancel()
		_ = assert.Del(dctx, m.Shards[i].Stream).Err()
		_ = assert.Close()
	})
	rl := &Relay{ShardRelay: r, Map: m, URL: srv.URL, Server: srv, Redis: assert, stop: stop}
	rl.WaitReady(t, 20*time.Second)
	return rl
}

// Kill stops the relay the way a crash does for its clients: connections cut, port closed.
func (r *Relay) Kill() { r.stop() }

// Channel is a channel served by Replicas relays per shard, as the operator deploys it.
type Channel struct {
	Map      *shardmap.Map
	Replicas [][]*Relay // [shard][replica]
}

// Delivered sums the events the channel's relays queued to their subscribers so far (what
// they sent sidecars and edges, each copy counted).
func (c *Channel) Delivered() uint64 {
	var n uint64
	for _, replicas := range c.Replicas {
		for _, r := range replicas {
			n += r.Hub().Delivered()
		}
	}
	return n
}

// StartChannel starts replicas relays for each of o.Shards shards of a new channel.
func StartChannel(t testing.TB, o Options, replicas int) *Channel {
	t.Helper()
	o.defaults(t)
	c := &Channel{Map: o.newMap()}
	for i := range c.Map.Shards {
		var rs []*Relay
		for range replicas {
			rs = append(rs, startShard(t, c.Map, i, o))
		}
		c.Replicas = append(c.Replicas, rs)
	}
	return c
}

// Endpoints is what cluster DNS would answer for the channel's Services: each shard Service's
// host -> its replicas, and the channel-wide Service's host -> every replica.
func (c *Channel) Endpoints() shardmap.Endpoints {
	eps := shardmap.Endpoints{}
	all := shardmap.ChannelServiceName(c.Map.Channel) + "." + c.Map.Namespace + ".svc"
	for i, rs := range c.Replicas {
		u, _ := url.Parse(c.Map.Shards[i].Endpoint)
		for _, r := range rs {
			addr := strings.TrimPrefix(r.URL, "http://")
			eps[u.Hostname()] = append(eps[u.Hostname()], addr)
			eps[all] = append(eps[all], addr)
		}
	}
	return eps
}

// WriteEndpoints writes Endpoints as JSON to path (atomically, as a local runner would).
func (c *Channel) WriteEndpoints(t testing.TB, path string) {
	t.Helper()
	b, _ := json.Marshal(c.Endpoints())
	if err := os.WriteFile(path+".tmp", b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// WaitReady waits until /readyz answers 200.
func (r *Relay) WaitReady(t testing.TB, within time.Duration) {
	t.Helper()
	Eventually(t, within, "relay ready", func() bool {
		resp, err := http.Get(r.URL + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// ChannelURL is the URL of path under the relay's channel, e.g. "/messages?key=a".
func (r *Relay) ChannelURL(path string) string {
	return r.URL + "/v1/channels/" + r.Map.Channel + path
}

// PublishResponse is the 202 body.
type PublishResponse struct {
	ID         string `json:"id"`
	Shard      int    `json:"shard"`
	EventID    string `json:"eventId"`
	Duplicate  bool   `json:"duplicate"`
	Replicated *bool  `json:"replicated"`
	Replicas   *int   `json:"replicas"`
	Error      string `json:"error"`
}

// Publish POSTs body as JSON for key and returns the status and decoded body.
func (r *Relay) Publish(t testing.TB, key, body string, hdr ...string) (int, PublishResponse) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, r.ChannelURL("/messages?key="+key), strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	defer resp.Body.Close()
	var pr PublishResponse
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &pr); err != nil {
		t.Fatalf("publish answered %d with non-JSON %q", resp.StatusCode, b)
	}
	return resp.StatusCode, pr
}

// MustPublish publishes and fails the test unless it got 202; it returns the ID.
func (r *Relay) MustPublish(t testing.TB, key, body string) string {
	t.Helper()
	code, pr := r.Publish(t, key, body)
	if code != http.StatusAccepted || pr.ID == "" {
		t.Fatalf("publish %s: %d %+v", body, code, pr)
	}
	return pr.ID
}

// Metric returns the value of a herald_relay metric (summed over label sets) from /metrics.
func (r *Relay) Metric(t testing.TB, name string) float64 {
	t.Helper()
	resp, err := http.Get(r.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var sum float64
	found := false
	for _, line := range bytes.Split(b, []byte("\n")) {
		if !bytes.HasPrefix(line, []byte(name+"{")) && !bytes.HasPrefix(line, []byte(name+" ")) {
			continue
		}
		f := bytes.Fields(line)
		var v float64
		if _, err := fmt.Sscan(string(f[len(f)-1]), &v); err == nil {
			sum += v
			found = true
		}
	}
	if !found {
		t.Fatalf("metric %s not exported", name)
	}
	return sum
}

// Eventually polls cond every 20 ms until it holds or within passes (then the test fails).
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestLog is an io.Writer for slog that writes to t.Log until the test ends.
type TestLog struct {
	t    testing.TB
	done atomic.Bool
	mu   sync.Mutex
}

// NewTestLog returns a TestLog; create it before anything that logs is started.
func NewTestLog(t testing.TB) *TestLog {
	l := &TestLog{t: t}
	t.Cleanup(func() { l.mu.Lock(); l.done.Store(true); l.mu.Unlock() })
	return l
}

func (l *TestLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done.Load() {
		l.t.Logf("relay: %s", bytes.TrimRight(p, "\n"))
	}
	return len(p), nil
}

// MustPublishWith publishes with extra headers (pairs) and fails the test unless it got 202.
func (r *Relay) MustPublishWith(t testing.TB, key, body string, hdr ...string) string {
	t.Helper()
	code, pr := r.Publish(t, key, body, hdr...)
	if code != http.StatusAccepted || pr.ID == "" {
		t.Fatalf("publish %s: %d %+v", body, code, pr)
	}
	return pr.ID
}

// BatchAnswer is the answer to a batched publish: 202 {"events"}, or a problem whose events
// says what became of each.
type BatchAnswer struct {
	Status int          `json:"status"`
	Detail string       `json:"detail"`
	Events []BatchEvent `json:"events"`
}

// BatchEvent is one event's entry in a BatchAnswer.
type BatchEvent struct {
	PublishResponse
	Status int    `json:"status"` // a failed event's status; 0 when it was stored
	Detail string `json:"detail"`
}

// PostBatch POSTs body as a batch of CloudEvents to url with the headers hdr (name, value, ...)
// and returns the status, the decoded answer and the answer's headers.
func PostBatch(t testing.TB, url, body string, hdr ...string) (int, BatchAnswer, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", event.BatchMediaType)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var a BatchAnswer
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatalf("answer %d is not JSON: %q", resp.StatusCode, b)
	}
	return resp.StatusCode, a, resp.Header
}
