package sidecar_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/testing/relaytest"
	"github.com/heraldhq/herald/relay"
	"github.com/heraldhq/herald/relay/cursor"
	"github.com/heraldhq/herald/relay/httpapi"
	"github.com/heraldhq/herald/relay/shardmap"
	"github.com/heraldhq/herald/relay/sidecar"
	"github.com/redis/go-redis/v9"
)

// testSidecar is a sidecar on a loopback test server for the channel c, finding its relays
// through an endpoints file.
type testSidecar struct {
	*sidecar.Sidecar
	URL       string
	channel   string
	endpoints string // the endpoints file
}

func startSidecar(t *testing.T, c *relaytest.Channel, tokenFile string) *testSidecar {
	t.Helper()
	eps := filepath.Join(t.TempDir(), "endpoints.json")
	c.WriteEndpoints(t, eps)
	sc, url, _ := runSidecar(t, sidecar.Options{
		Channels:      []sidecar.ChannelRef{{Namespace: c.Map.Namespace, Name: c.Map.Channel}},
		EndpointsFile: eps, TokenFile: tokenFile,
		Heartbeat: time.Second, RefreshInterval: time.Second,
	})
	ts := &testSidecar{Sidecar: sc, URL: url, channel: c.Map.Channel, endpoints: eps}
	relaytest.Eventually(t, 20*time.Second, "sidecar ready", func() bool { return sc.Ready() })
	return ts
}

// runSidecar serves and runs a sidecar until the test ends (logging warnings to the test log
// unless opt has a logger) and returns it with its URL and a stop function that ends its Run (as
// a shutdown does) and waits for it; it does not wait for it to be ready.
func runSidecar(t *testing.T, opt sidecar.Options) (*sidecar.Sidecar, string, func()) {
	t.Helper()
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.NewTextHandler(relaytest.NewTestLog(t), &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	sc, err := sidecar.New(opt)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sc.Handler())
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { defer close(done); _ = sc.Run(ctx) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(func() { srv.CloseClientConnections(); srv.Close(); stop() })
	return sc, srv.URL, stop
}

func (s *testSidecar) channelURL(path string) string {
	return s.URL + "/v1/channels/" + s.channel + path
}

type published struct {
	ID    string `json:"id"`
	Shard int    `json:"shard"`
	Error string `json:"error"`
}

func (s *testSidecar) publish(t testing.TB, key, body string) (int, published) {
	req, _ := http.NewRequest(http.MethodPost, s.channelURL("/messages?key="+key), strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("publish: %v", err)
		return 0, published{}
	}
	defer resp.Body.Close()
	var p published
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &p); err != nil {
		t.Errorf("publish answered %d with %q", resp.StatusCode, b)
	}
	// The app sent no key: the sidecar names the one it made up, so the app can retry with it.
	if resp.StatusCode == http.StatusAccepted && len(resp.Header.Get("Idempotency-Key")) < 16 {
		t.Errorf("a 202 from the sidecar names no Idempotency-Key (%q)", resp.Header.Get("Idempotency-Key"))
	}
	return resp.StatusCode, p
}

// metric reads one value from the sidecar's /metrics.
func (s *testSidecar) metric(t testing.TB, name string) float64 {
	t.Helper()
	r := &relaytest.Relay{URL: s.URL}
	return r.Metric(t, name)
}

// upstreamsOf sums the live subscribers the relays of shard i see.
func upstreamsOf(t testing.TB, c *relaytest.Channel, i int, skip *relaytest.Relay) int64 {
	var n int64
	for _, r := range c.Replicas[i] {
		if r != skip {
			n += r.Hub().Subscribers()
		}
	}
	return n
}

type received struct {
	id      string // composite cursor
	subject string
	n       int
}

func decode(t testing.TB, ev relaytest.Event) received {
	var ce struct {
		Cursor  string `json:"heraldcursor"`
		ID      string `json:"id"`
		Subject string `json:"subject"`
		Data    struct {
			N int `json:"n"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(ev.Data), &ce); err != nil || ce.Cursor != ev.ID {
		t.Errorf("event %+v: %v (heraldcursor %q)", ev, err, ce.Cursor)
	}
	// The CloudEvent id is the event's own, "<shard>:<stream ID>", whatever stream carries it:
	// on a merged stream it is that shard's part of the composite cursor.
	shard, id, _ := strings.Cut(ce.ID, ":")
	parts := strings.Split(ev.ID, ".")
	if i, err := strconv.Atoi(shard); err != nil || (len(parts) > 1 && (i >= len(parts) || parts[i] != id)) || (len(parts) == 1 && ev.ID != id) {
		t.Errorf("event %s has CloudEvent id %q, not its shard's stream ID", ev.ID, ce.ID)
	}
	return received{id: ev.ID, subject: ce.Subject, n: ce.Data.N}
}

// TestOneUpstreamPerShardDeliversExactlyOnceThroughAReplicaKill: 3 shards with 2 relays each,
// one sidecar, 100 local SSE subscribers. The relays see one stream per shard from the sidecar;
// 5,000 messages with random keys reach every subscriber exactly once and in per-shard order,
// though the relay serving one shard's upstream stream is killed mid-stream.
func TestOneUpstreamPerShardDeliversExactlyOnceThroughAReplicaKill(t *testing.T) {
	const shards, subscribers, messages = 3, 100, 5000
	c := relaytest.StartChannel(t, relaytest.Options{Shards: shards}, 2)
	sc := startSidecar(t, c, "")

	subs := make([]*relaytest.SSE, subscribers)
	for i := range subs {
		subs[i] = relaytest.OpenSSE(t, sc.channelURL("/events"), relaytest.SSEOptions{})
	}
	relaytest.Eventually(t, 10*time.Second, "100 local subscribers", func() bool {
		return sc.metric(t, "herald_relay_sidecar_subscribers") == subscribers
	})
	for i := range shards {
		relaytest.Eventually(t, 10*time.Second, "one upstream stream per shard", func() bool { return upstreamsOf(t, c, i, nil) == 1 })
	}
	if got := sc.metric(t, "herald_relay_sidecar_upstream_streams"); got != shards {
		t.Fatalf("sidecar reports %v upstream streams, want %d", got, shards)
	}
	// The victim: the relay that serves shard 0's upstream stream right now.
	var victim *relaytest.Relay
	for _, r := range c.Replicas[0] {
		if r.Hub().Subscribers() == 1 {
			victim = r
		}
	}

	// Publish with 8 concurrent publishers; kill the victim half way.
	acked := make([][]string, shards) // per shard, the IDs the relays acknowledged
	var mu sync.Mutex
	var next atomic.Int64
	var wg sync.WaitGroup
	killed := make(chan struct{})
	var killOnce sync.Once
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n := int(next.Add(1)) - 1
				if n >= messages {
					return
				}
				if n == messages/2 {
					killOnce.Do(func() { victim.Kill(); close(killed) })
				}
				key := fmt.Sprintf("key-%d", rand.IntN(1_000_000))
				code, p := sc.publish(t, key, fmt.Sprintf(`{"n":%d}`, n))
				if code != http.StatusAccepted {
					t.Errorf("publish %d: %d %+v", n, code, p)
					return
				}
				mu.Lock()
				acked[p.Shard] = append(acked[p.Shard], p.ID)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	<-killed
	if t.Failed() {
		t.FailNow()
	}
	want := make([]map[string]bool, shards)
	for i, ids := range acked {
		want[i] = map[string]bool{}
		for _, id := range ids {
			want[i][id] = true
		}
		if len(ids) == 0 {
			t.Fatalf("no message went to shard %d", i)
		}
	}

	// Every subscriber: each acknowledged message once, per-shard stream IDs strictly rising.
	var check sync.WaitGroup
	for si, s := range subs {
		check.Add(1)
		go func() {
			defer check.Done()
			seen := make([]map[string]bool, shards)
			last := make([]cursor.ID, shards)
			for i := range seen {
				seen[i] = map[string]bool{}
			}
			prev := cursor.Composite(nil)
			for range messages {
				ev, err := s.Next(20 * time.Second)
				if err != nil || ev.Event != "message" {
					t.Errorf("subscriber %d after %d messages: %+v %v", si, countAll(seen), ev, err)
					return
				}
				got := decode(t, ev)
				pos, err := cursor.ParseComposite(got.id, shards)
				if err != nil {
					t.Errorf("subscriber %d: event id %q is not a composite cursor: %v", si, got.id, err)
					return
				}
				shard := c.Map.ShardFor(got.subject)
				id := pos[shard]
				if !last[shard].Less(id) || seen[shard][id.String()] {
					t.Errorf("subscriber %d: shard %d went from %v to %v (duplicate or out of order)", si, shard, last[shard], id)
					return
				}
				for i := range pos { // the other shards' positions never move back
					if prev != nil && i != shard && pos[i] != prev[i] {
						t.Errorf("subscriber %d: cursor %s -> %s moved shard %d on an event of shard %d", si, prev, got.id, i, shard)
						return
					}
				}
				prev = pos
				last[shard] = id
				seen[shard][id.String()] = true
			}
			for i := range shards {
				if len(seen[i]) != len(want[i]) {
					t.Errorf("subscriber %d: %d messages of shard %d, want %d", si, len(seen[i]), i, len(want[i]))
				}
				for id := range seen[i] {
					if !want[i][id] {
						t.Errorf("subscriber %d: shard %d delivered %s, which no publisher was acknowledged", si, i, id)
						return
					}
				}
			}
		}()
	}
	check.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if sc.metric(t, "herald_relay_sidecar_upstream_reconnects_total") < 1 {
		t.Fatal("the sidecar did not count the reconnect after the kill")
	}
	for i := range shards {
		relaytest.Eventually(t, 10*time.Second, "one upstream stream per shard after the kill", func() bool { return upstreamsOf(t, c, i, victim) == 1 })
	}
	t.Logf("acknowledged per shard: %d/%d/%d; publish retries: %v", len(acked[0]), len(acked[1]), len(acked[2]),
		sc.metric(t, "herald_relay_sidecar_publish_retries_total"))
}

func countAll(m []map[string]bool) int {
	n := 0
	for _, s := range m {
		n += len(s)
	}
	return n
}

// TestWholeChannelResumeGetsExactlyTheMissedMessages: a whole-channel subscriber of a
// 3-shard channel disconnects, misses 300 messages over all shards, resumes with its last
// event id and gets exactly those 300, then live messages. The sidecar authenticates with its
// token file, and follows a rotation of the token.
func TestWholeChannelResumeGetsExactlyTheMissedMessages(t *testing.T) {
	var token atomic.Value
	token.Store("token-1")
	c := relaytest.StartChannel(t, relaytest.Options{Shards: 3, Modify: func(o *relay.ShardOptions) {
		o.Authorize = func(r *http.Request) (string, int, string) {
			if r.Header.Get("Authorization") != "Bearer "+token.Load().(string) {
				return "", http.StatusUnauthorized, "wrong token"
			}
			return "app/sidecar", 0, ""
		}
	}}, 1)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("token-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sc := startSidecar(t, c, tokenFile)

	s := relaytest.OpenSSE(t, sc.channelURL("/events"), relaytest.SSEOptions{})
	relaytest.Eventually(t, 10*time.Second, "subscriber registered", func() bool { return sc.metric(t, "herald_relay_sidecar_subscribers") == 1 })
	for n := range 10 {
		if code, p := sc.publish(t, fmt.Sprintf("before-%d", n), fmt.Sprintf(`{"n":%d}`, -1-n)); code != http.StatusAccepted {
			t.Fatalf("publish: %d %+v", code, p)
		}
	}
	before := s.Messages(t, 10, 10*time.Second)
	last := before[len(before)-1].ID
	if strings.Count(last, ".") != 2 {
		t.Fatalf("the whole-channel cursor %q is not a 3-shard composite", last)
	}
	s.Close()
	relaytest.Eventually(t, 10*time.Second, "subscriber gone", func() bool { return sc.metric(t, "herald_relay_sidecar_subscribers") == 0 })

	// The kubelet rotates the token while nobody listens.
	token.Store("token-2")
	if err := os.WriteFile(tokenFile, []byte("token-2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	perShard := make([]int, 3)
	for n := range 300 {
		code, p := sc.publish(t, fmt.Sprintf("missed-%d", n), fmt.Sprintf(`{"n":%d}`, n))
		if code != http.StatusAccepted {
			t.Fatalf("publish %d: %d %+v", n, code, p)
		}
		perShard[p.Shard]++
	}
	for i, n := range perShard {
		if n == 0 {
			t.Fatalf("no missed message on shard %d: %v", i, perShard)
		}
	}

	r := relaytest.OpenSSE(t, sc.channelURL("/events"), relaytest.SSEOptions{LastEventID: last})
	got := map[int]bool{}
	for _, ev := range r.Messages(t, 300, 20*time.Second) {
		m := decode(t, ev)
		if m.n < 0 || m.n >= 300 || got[m.n] {
			t.Fatalf("resumed subscriber got message %d (%s) again or from before its cursor", m.n, ev.ID)
		}
		got[m.n] = true
	}
	if code, p := sc.publish(t, "after", `{"n":1000}`); code != http.StatusAccepted {
		t.Fatalf("publish: %d %+v", code, p)
	}
	if ev := decode(t, r.Messages(t, 1, 10*time.Second)[0]); ev.n != 1000 {
		t.Fatalf("after the 300 missed messages came %d, want the live one", ev.n)
	}
	t.Logf("missed per shard: %v", perShard)
}

// A burst of resuming subscribers meets the relay's replay rate limit (429 with Retry-After):
// the sidecar waits as told instead of giving up, so every subscriber gets what it missed.
func TestResumesWaitOutTheRelaysReplayLimit(t *testing.T) {
	c := relaytest.StartChannel(t, relaytest.Options{Shards: 1, Modify: func(o *relay.ShardOptions) {
		o.Limits = httpapi.Limits{ReplayRate: 2} // bursts of 4
	}}, 1)
	sc := startSidecar(t, c, "")
	first := relaytest.OpenSSE(t, sc.channelURL("/events"), relaytest.SSEOptions{})
	relaytest.Eventually(t, 10*time.Second, "subscriber registered", func() bool { return sc.metric(t, "herald_relay_sidecar_subscribers") == 1 })
	if code, p := sc.publish(t, "k", `{"n":-1}`); code != http.StatusAccepted {
		t.Fatalf("publish: %d %+v", code, p)
	}
	cursor := first.Messages(t, 1, 10*time.Second)[0].ID
	first.Close()
	for n := range 3 {
		if code, p := sc.publish(t, "k", fmt.Sprintf(`{"n":%d}`, n)); code != http.StatusAccepted {
			t.Fatalf("publish: %d %+v", code, p)
		}
	}
	const resuming = 12
	subs := make([]*relaytest.SSE, resuming)
	for i := range subs {
		subs[i] = relaytest.OpenSSE(t, sc.channelURL("/events"), relaytest.SSEOptions{LastEventID: cursor})
	}
	for i, s := range subs {
		got := s.Messages(t, 3, 30*time.Second)
		for n, ev := range got {
			if m := decode(t, ev); m.n != n {
				t.Fatalf("subscriber %d: message %d is %d, want %d", i, n, m.n, n)
			}
		}
	}
	if refused := c.Replicas[0][0].Metric(t, "herald_relay_refused_total"); refused == 0 {
		t.Fatal("the relay never refused a replay: the test did not reach its limit")
	}
}

// Each channel's relays get the token projected for that channel (its own audience), read from
// the token directory: a sidecar with two channels sends each relay only its own.
func TestEachChannelsRelaysGetTheirOwnToken(t *testing.T) {
	want := func(o *relay.ShardOptions) {
		token := "token-for-" + o.Map.Channel
		o.Authorize = func(r *http.Request) (string, int, string) {
			if r.Header.Get("Authorization") != "Bearer "+token {
				return "", http.StatusUnauthorized, "want " + token + ", got " + r.Header.Get("Authorization")
			}
			return "app/sidecar", 0, ""
		}
	}
	a := relaytest.StartChannel(t, relaytest.Options{Shards: 1, Modify: want}, 1)
	b := relaytest.StartChannel(t, relaytest.Options{Shards: 1, Modify: want}, 1)
	dir := t.TempDir()
	eps := shardmap.Endpoints{}
	for _, c := range []*relaytest.Channel{a, b} {
		maps.Copy(eps, c.Endpoints())
		file := filepath.Join(dir, shardmap.TokenFileName(c.Map.Namespace, c.Map.Channel))
		if err := os.WriteFile(file, []byte("token-for-"+c.Map.Channel+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	epsFile := filepath.Join(t.TempDir(), "endpoints.json")
	b2, _ := json.Marshal(eps)
	if err := os.WriteFile(epsFile, b2, 0o600); err != nil {
		t.Fatal(err)
	}
	sc, url, _ := runSidecar(t, sidecar.Options{
		Channels:      []sidecar.ChannelRef{{Namespace: a.Map.Namespace, Name: a.Map.Channel}, {Namespace: b.Map.Namespace, Name: b.Map.Channel}},
		EndpointsFile: epsFile, TokenDir: dir, RefreshInterval: time.Second,
	})
	relaytest.Eventually(t, 20*time.Second, "sidecar ready", func() bool { return sc.Ready() })
	for _, c := range []*relaytest.Channel{a, b} {
		ts := &testSidecar{Sidecar: sc, URL: url, channel: c.Map.Channel}
		if code, p := ts.publish(t, "k", `{"n":1}`); code != http.StatusAccepted {
			t.Fatalf("publish to %s: %d %+v", c.Map.Channel, code, p)
		}
	}
}

// On a Live channel nothing can be replayed: when the sidecar's upstream stream breaks and is
// re-opened on another replica, its local subscribers get a no-replay gap, then live messages
// again, never a silent hole.
func TestLiveReconnectSendsANoReplayGap(t *testing.T) {
	c := relaytest.StartChannel(t, relaytest.Options{Shards: 1, Delivery: shardmap.DeliveryLive}, 2)
	sc := startSidecar(t, c, "")
	sub := relaytest.OpenSSE(t, sc.channelURL("/events"), relaytest.SSEOptions{})
	relaytest.Eventually(t, 10*time.Second, "one upstream stream", func() bool { return upstreamsOf(t, c, 0, nil) == 1 })
	if code, p := sc.publish(t, "k", `{"n":1}`); code != http.StatusAccepted {
		t.Fatalf("publish: %d %+v", code, p)
	}
	sub.Messages(t, 1, 10*time.Second)
	var victim *relaytest.Relay // the replica serving the sidecar's stream; the other takes over
	for _, r := range c.Replicas[0] {
		if r.Hub().Subscribers() == 1 {
			victim = r
		}
	}
	victim.Kill()
	gap, err := sub.Next(20 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var g struct {
		Type string `json:"type"`
		Data struct{ Reason string }
	}
	if err := json.Unmarshal([]byte(gap.Data), &g); err != nil || gap.Event != "gap" || g.Data.Reason != "no-replay" {
		t.Fatalf("after the upstream stream broke: %+v (%v), want a no-replay gap", gap, err)
	}
	relaytest.Eventually(t, 10*time.Second, "the stream re-opened", func() bool { return upstreamsOf(t, c, 0, victim) == 1 })
	if code, p := sc.publish(t, "k", `{"n":2}`); code != http.StatusAccepted {
		t.Fatalf("publish: %d %+v", code, p)
	}
	if m := decode(t, sub.Messages(t, 1, 10*time.Second)[0]); m.n != 2 {
		t.Fatalf("after the gap came %d, want the live 2", m.n)
	}
	if n := sc.metric(t, "herald_relay_sidecar_gaps_total"); n != 1 {
		t.Fatalf("herald_relay_sidecar_gaps_total %v, want 1", n)
	}
}

// TestCloudEventAttributesPassThroughTheSidecar: an app publishing in binary mode through the
// sidecar (Ce-Subject as the key, its own Ce-Id, an extension, a W3C traceparent) gets them all
// back on the sidecar's merged stream; sending the same event again stores nothing, although the
// sidecar retries on its own, because the event's id is what deduplicates it.
func TestCloudEventAttributesPassThroughTheSidecar(t *testing.T) {
	c := relaytest.StartChannel(t, relaytest.Options{Shards: 2}, 1)
	sc := startSidecar(t, c, "")
	s := relaytest.OpenSSE(t, sc.channelURL("/events"), relaytest.SSEOptions{})
	relaytest.Eventually(t, 10*time.Second, "subscriber registered", func() bool { return sc.metric(t, "herald_relay_sidecar_subscribers") == 1 })

	send := func(data string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, sc.channelURL("/messages"), strings.NewReader(data))
		req.Header.Set("Content-Type", "text/plain")
		req.Header.Set("Ce-Subject", "user-7")
		req.Header.Set("Ce-Id", "evt-42")
		req.Header.Set("Ce-Source", "/apps/billing")
		req.Header.Set("Ce-Tenant", "acme")
		req.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := send("hello"); code != http.StatusAccepted || !strings.Contains(body, `"eventId":"evt-42"`) {
		t.Fatalf("publish: %d %s", code, body)
	}
	ev := s.Messages(t, 1, 10*time.Second)[0]
	var ce map[string]any
	if err := json.Unmarshal([]byte(ev.Data), &ce); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"id": "evt-42", "source": "/apps/billing", "subject": "user-7", "tenant": "acme", "heraldcursor": ev.ID,
		"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "data": "hello"} {
		if ce[k] != want {
			t.Fatalf("%s = %v, want %v (event %s)", k, ce[k], want, ev.Data)
		}
	}
	if code, body := send("hello"); code != http.StatusAccepted || !strings.Contains(body, `"duplicate":true`) {
		t.Fatalf("the same event again: %d %s, want a duplicate", code, body)
	}
	if code, body := send("changed"); code != http.StatusConflict || !strings.Contains(body, "evt-42") {
		t.Fatalf("another event with the same id: %d %s, want 409", code, body)
	}
}

// TestEventSourceIsHeldWhileTheSidecarWarmsUp: an SSE subscriber that arrives before the sidecar
// knows where the channel's relays are gets 200 at once (an EventSource gives up on a 503),
// is told why it waits, and gets its events once the relays are found. A WebSocket still gets
// 503 with Retry-After (its clients reconnect on any failure).
func TestEventSourceIsHeldWhileTheSidecarWarmsUp(t *testing.T) {
	c := relaytest.StartChannel(t, relaytest.Options{Shards: 2}, 1)
	eps := filepath.Join(t.TempDir(), "endpoints.json")
	if err := os.WriteFile(eps, []byte("{}"), 0o600); err != nil { // no relay is known yet
		t.Fatal(err)
	}
	sc, url, _ := runSidecar(t, sidecar.Options{
		Channels:      []sidecar.ChannelRef{{Namespace: c.Map.Namespace, Name: c.Map.Channel}},
		EndpointsFile: eps, Heartbeat: time.Second, RefreshInterval: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(relaytest.NewTestLog(t), &slog.HandlerOptions{Level: slog.LevelError})),
	})
	ts := &testSidecar{Sidecar: sc, URL: url, channel: c.Map.Channel, endpoints: eps}

	resp, err := http.Get(ts.channelURL("/ws"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("a WebSocket before the sidecar is ready: %d, Retry-After %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	s := relaytest.OpenSSE(t, ts.channelURL("/events"), relaytest.SSEOptions{}) // fails the test unless 200
	waiting, err := s.Next(5 * time.Second)
	if err != nil || !strings.HasPrefix(waiting.Comment, "waiting: ") {
		t.Fatalf("a held stream first says why it waits: %+v, %v", waiting, err)
	}
	if sc.Ready() {
		t.Fatal("the sidecar is ready without relays")
	}
	c.WriteEndpoints(t, eps)
	// A stream without a cursor starts when it is subscribed, as always.
	relaytest.Eventually(t, 20*time.Second, "held stream subscribed", func() bool { return ts.metric(t, "herald_relay_sidecar_subscribers") == 1 })
	code, p := ts.publish(t, "k1", `{"n":1}`)
	if code != http.StatusAccepted {
		t.Fatalf("publish: %d %+v", code, p)
	}
	for {
		ev, err := s.Next(10 * time.Second)
		if err != nil {
			t.Fatalf("the held stream got nothing: %v", err)
		}
		if strings.HasPrefix(ev.Comment, "waiting: ") {
			continue
		}
		if ev.Event != "message" || decode(t, ev).subject != "k1" {
			t.Fatalf("the held stream got %+v, want the message", ev)
		}
		break
	}
}

// TestSidecarAnswersMatchTheAPIDocuments: the sidecar serves the same API as a relay, so its
// answers and the events of its merged stream (composite cursors) fit the same documents.
func TestSidecarAnswersMatchTheAPIDocuments(t *testing.T) {
	spec := relaytest.LoadSpec(t)
	c := relaytest.StartChannel(t, relaytest.Options{Shards: 3}, 1)
	sc := startSidecar(t, c, "")
	s := relaytest.OpenSSE(t, sc.channelURL("/events"), relaytest.SSEOptions{})
	relaytest.Eventually(t, 10*time.Second, "subscriber registered", func() bool { return sc.metric(t, "herald_relay_sidecar_subscribers") == 1 })
	call := func(method, template, path, contentType, body string) int {
		t.Helper()
		req, _ := http.NewRequest(method, sc.URL+path, strings.NewReader(body))
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		spec.CheckResponse(t, method, template, resp, b)
		return resp.StatusCode
	}
	ch := "/v1/channels/" + c.Map.Channel
	for _, tc := range []struct {
		method, template, path, ct, body string
		want                             int
	}{
		{"POST", "/v1/channels/{channel}/messages", ch + "/messages?key=a", "application/json", `{"n":1}`, 202},
		{"POST", "/v1/channels/{channel}/messages", ch + "/messages?key=b", "application/json", `{"n":2}`, 202},
		{"POST", "/v1/channels/{channel}/messages", ch + "/messages", "application/json", `{}`, 400},
		{"POST", "/v1/channels/{channel}/messages", ch + "/messages", "application/cloudevents-batch+json", `[{"subject":"c","data":{"n":3}},{"subject":"d","data":{"n":4}},{"subject":"e","data":{"n":5}}]`, 202},
		{"POST", "/v1/channels/{channel}/messages", ch + "/messages", "application/cloudevents-batch+json", `[{"subject":"c","data":{"n":6}},{"subject":"c","id":"x","data":1},{"subject":"c","id":"x","data":2}]`, 409},
		{"POST", "/v1/channels/{channel}/messages", ch + "/messages", "application/cloudevents-batch+json", `[{"data":1}]`, 400},
		{"GET", "/v1/channels/{channel}/events", ch + "/events?since=1-0", "", "", 400}, // not a 3-shard composite
		{"GET", "/v1/channels/{channel}/shards", ch + "/shards", "", "", 200},
		{"GET", "/v1/channels/{channel}/shards", "/v1/channels/nope/shards", "", "", 404},
		{"GET", "/readyz", "/readyz", "", "", 200},
		{"GET", "/healthz", "/healthz", "", "", 200},
		{"GET", "/v1/asyncapi.yaml", "/v1/asyncapi.yaml", "", "", 200},
	} {
		if code := call(tc.method, tc.template, tc.path, tc.ct, tc.body); code != tc.want {
			t.Fatalf("%s %s: %d, want %d", tc.method, tc.path, code, tc.want)
		}
	}
	for _, ev := range s.Messages(t, 7, 10*time.Second) {
		spec.CheckEvent(t, []byte(ev.Data), false)
	}
}

// A relay of the previous version that shuts down may store a publish and answer it with an
// empty 200, which says nothing of it: the sidecar tries again with the same Idempotency-Key
// and the app gets the message's 202, stored once.
func TestAnEmptyAnswerFromARelayIsRetried(t *testing.T) {
	var answeredEmpty atomic.Bool
	c := relaytest.StartChannel(t, relaytest.Options{Shards: 1, Server: func(s *httptest.Server) {
		next := s.Config.Handler
		s.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/messages") && answeredEmpty.CompareAndSwap(false, true) {
				next.ServeHTTP(httptest.NewRecorder(), r) // stored, and the answer dropped
				return                                    // an empty 200
			}
			next.ServeHTTP(w, r)
		})
	}}, 2)
	ts := startSidecar(t, c, "")
	code, p := ts.publish(t, "k", `{"n":1}`)
	if code != http.StatusAccepted || p.ID == "" || !answeredEmpty.Load() {
		t.Fatalf("publish: %d %+v (a relay answered empty: %v), want 202 with the message's id", code, p, answeredEmpty.Load())
	}
	rc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: relaytest.RedisAddrs()})
	defer rc.Close()
	if n, err := rc.XLen(context.Background(), c.Map.Shards[0].Stream).Result(); err != nil || n != 1 {
		t.Fatalf("the shard's stream holds %d entries (%v), want the message once", n, err)
	}
}
