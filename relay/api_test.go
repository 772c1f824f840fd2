package relay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/internal/testing/relaytest"
	"github.com/heraldhq/herald/relay"
	"github.com/heraldhq/herald/relay/httpapi"
	"github.com/heraldhq/herald/relay/problem"
	"github.com/heraldhq/herald/relay/publish"
	"github.com/heraldhq/herald/relay/shardmap"
	"github.com/heraldhq/herald/relay/upstream"
)

func TestTrimmedCursorGetsGapThenRetainedTail(t *testing.T) {
	r := relaytest.StartRelay(t, relaytest.Options{Modify: func(o *relay.ShardOptions) { o.Map.Retention.MaxLength = 10 }})
	old := r.MustPublish(t, "k", `{"n":0}`)
	for i := 1; i <= 300; i++ {
		r.MustPublish(t, "k", fmt.Sprintf(`{"n":%d}`, i))
	}
	ctx := context.Background()
	retained, err := r.Redis.XRange(ctx, r.Map.Shards[0].Stream, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(retained) >= 301 || retained[0].ID == old {
		t.Fatalf("retention did not trim: %d entries, first %s", len(retained), retained[0].ID)
	}
	s := relaytest.OpenSSE(t, r.ChannelURL("/events"), relaytest.SSEOptions{LastEventID: old})
	gap, err := s.Next(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var g struct {
		Type string `json:"type"`
		Data struct{ Reason, From, Resume string }
	}
	if err := json.Unmarshal([]byte(gap.Data), &g); err != nil || gap.Event != "gap" || g.Type != "dev.herald.gap" || g.Data.Reason != "trimmed" || g.Data.From != old {
		t.Fatalf("first frame is not a trimmed gap: %+v (%v)", gap, err)
	}
	for i, ev := range s.Messages(t, len(retained), 10*time.Second) {
		if ev.ID != retained[i].ID {
			t.Fatalf("tail event %d is %s, want %s", i, ev.ID, retained[i].ID)
		}
	}
	live := r.MustPublish(t, "k", `{"n":"live"}`)
	if ev := s.Messages(t, 1, 10*time.Second)[0]; ev.ID != live {
		t.Fatalf("live event %s, want %s", ev.ID, live)
	}
	if r.Metric(t, "herald_relay_gaps_total") != 1 {
		t.Fatal("gaps_total is not 1")
	}
}

func TestCursorAheadOfTheStreamGetsGapThenLive(t *testing.T) {
	r := relaytest.StartRelay(t, relaytest.Options{})
	first := r.MustPublish(t, "k", `1`)
	s := relaytest.OpenSSE(t, r.ChannelURL("/events"), relaytest.SSEOptions{LastEventID: "99999999999999-0"})
	gap, err := s.Next(10 * time.Second)
	if err != nil || gap.Event != "gap" || !strings.Contains(gap.Data, `"reason":"cursor-ahead"`) || gap.ID != first {
		t.Fatalf("want a cursor-ahead gap resuming at %s, got %+v %v", first, gap, err)
	}
	id := r.MustPublish(t, "k", `2`)
	if ev := s.Messages(t, 1, 10*time.Second)[0]; ev.ID != id {
		t.Fatalf("got %s, want %s", ev.ID, id)
	}
}

func TestIdempotencyKeyRetryReturnsTheSameIDAndStoresOnce(t *testing.T) {
	r := relaytest.StartRelay(t, relaytest.Options{})
	s := relaytest.OpenSSE(t, r.ChannelURL("/events"), relaytest.SSEOptions{})
	relaytest.Eventually(t, 5*time.Second, "subscriber registered", func() bool { return r.Hub().Subscribers() == 1 })
	code1, first := r.Publish(t, "k", `{"order":1}`, "Idempotency-Key", "req-7f3a")
	code2, retry := r.Publish(t, "k", `{"order":1}`, "Idempotency-Key", "req-7f3a")
	if code1 != http.StatusAccepted || code2 != http.StatusAccepted {
		t.Fatalf("statuses %d, %d", code1, code2)
	}
	if first.ID == "" || retry.ID != first.ID || first.Duplicate || !retry.Duplicate {
		t.Fatalf("first %+v, retry %+v: want the same id, the retry marked duplicate", first, retry)
	}
	if n := r.Redis.XLen(context.Background(), r.Map.Shards[0].Stream).Val(); n != 1 {
		t.Fatalf("stream holds %d entries, want 1", n)
	}
	if ev := s.Messages(t, 1, 10*time.Second)[0]; ev.ID != first.ID {
		t.Fatalf("got %s", ev.ID)
	}
	if ev, err := s.Next(300 * time.Millisecond); err != relaytest.ErrTimeout {
		t.Fatalf("the retry was delivered again: %+v %v", ev, err)
	}
	_, other := r.Publish(t, "k", `{"order":2}`, "Idempotency-Key", "req-other")
	if other.ID == first.ID || other.Duplicate {
		t.Fatalf("a different Idempotency-Key was treated as a retry: %+v", other)
	}
}

func TestAckReplicatedWaitsForAReplica(t *testing.T) {
	r := relaytest.StartRelay(t, relaytest.Options{})
	req, _ := http.NewRequest(http.MethodPost, r.ChannelURL("/messages?key=k&ack=replicated"), strings.NewReader(`{}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var pr relaytest.PublishResponse
	_ = json.NewDecoder(resp.Body).Decode(&pr)
	if resp.StatusCode != http.StatusAccepted || pr.Replicated == nil || !*pr.Replicated || pr.Replicas == nil || *pr.Replicas < 1 {
		t.Fatalf("%d %+v: want replicated=true with at least one replica", resp.StatusCode, pr)
	}
}

// A subscriber's queue is sized from the channel's maxMessageBytes, not only from --queue-bytes:
// it holds two of the largest events (text of control characters grows 6 times when encoded),
// so a healthy subscriber that is still being sent one large message is not closed as slow
// when the next ones arrive.
func TestQueuesHoldTwoOfTheLargestMessages(t *testing.T) {
	const max = 256 << 10
	r := relaytest.StartRelay(t, relaytest.Options{
		Modify: func(o *relay.ShardOptions) { o.Map.MaxMessageBytes = max; o.QueueBytes = 1 << 20 },
		Server: func(s *httptest.Server) {
			s.Config.ConnState = func(c net.Conn, st http.ConnState) {
				if st == http.StateNew {
					_ = c.(*net.TCPConn).SetWriteBuffer(8 << 10)
				}
			}
		},
	})
	sub := relaytest.OpenSSE(t, r.ChannelURL("/events"), relaytest.SSEOptions{NoRead: true, RecvBuffer: 4 << 10})
	relaytest.Eventually(t, 10*time.Second, "subscriber registered", func() bool { return r.Hub().Subscribers() == 1 })
	large := strings.Repeat("\x01", max) // 1.5 MiB once escaped as JSON text
	var ids []string
	for _, body := range []string{large, large, "small"} {
		code, p := r.Publish(t, "k", body, "Content-Type", "text/plain")
		if code != http.StatusAccepted {
			t.Fatalf("publish: %d %+v", code, p)
		}
		ids = append(ids, p.ID)
	}
	sub.StartReading()
	for i, ev := range sub.Messages(t, 3, 30*time.Second) {
		if ev.ID != ids[i] {
			t.Fatalf("event %d is %s, want %s", i, ev.ID, ids[i])
		}
	}
	if n := r.Hub().SlowClosed(); n != 0 {
		t.Fatalf("%d subscribers closed as slow", n)
	}
}

func TestSlowSubscriberIsClosedWhileOthersGetEverything(t *testing.T) {
	const fast, msgs = 100, 400
	r := relaytest.StartRelay(t, relaytest.Options{
		// Small messages, so the queue floor (two of the largest events) stays small too.
		Modify: func(o *relay.ShardOptions) {
			o.Map.MaxMessageBytes = 4 << 10
			o.QueueBytes = 64 << 10
			o.WriteTimeout = 30 * time.Second
		},
		// Small kernel buffers, so a consumer that stops reading backs up into its queue quickly.
		Server: func(s *httptest.Server) {
			s.Config.ConnState = func(c net.Conn, st http.ConnState) {
				if st == http.StateNew {
					_ = c.(*net.TCPConn).SetWriteBuffer(8 << 10)
				}
			}
		},
	})
	slow := relaytest.OpenSSE(t, r.ChannelURL("/events"), relaytest.SSEOptions{NoRead: true, RecvBuffer: 4 << 10})
	subs := make([]*relaytest.SSE, fast)
	for i := range subs {
		subs[i] = relaytest.OpenSSE(t, r.ChannelURL("/events"), relaytest.SSEOptions{})
	}
	relaytest.Eventually(t, 10*time.Second, "all subscribers registered", func() bool { return r.Hub().Subscribers() == fast+1 })
	// Publish in waves the 100 readers keep up with (a wave is less than their queue limit);
	// the stuck consumer falls further behind with every wave.
	pad := strings.Repeat("x", 1000)
	ids := make([]string, msgs)
	const wave = 40
	for w := 0; w < msgs; w += wave {
		for i := w; i < w+wave; i++ {
			ids[i] = r.MustPublish(t, "k", fmt.Sprintf(`{"i":%d,"pad":%q}`, i, pad))
		}
		for n, s := range subs {
			for i, ev := range s.Messages(t, wave, 30*time.Second) {
				if ev.ID != ids[w+i] {
					t.Fatalf("subscriber %d: event %d is %s, want %s", n, w+i, ev.ID, ids[w+i])
				}
			}
		}
	}
	relaytest.Eventually(t, 10*time.Second, "slow subscriber closed", func() bool { return r.Hub().SlowClosed() == 1 })
	if got := r.Metric(t, "herald_relay_slow_consumers_dropped_total"); got != 1 {
		t.Fatalf("slow_consumers_dropped_total = %v", got)
	}

	// The stuck consumer now reads: a prefix of the messages, then the reason, then EOF.
	slow.StartReading()
	var got []string
	var reason string
	for {
		ev, err := slow.Next(10 * time.Second)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if ev.Comment != "" {
			reason = ev.Comment
			continue
		}
		got = append(got, ev.ID)
	}
	if len(got) == 0 || len(got) >= msgs {
		t.Fatalf("slow consumer received %d of %d messages before the close", len(got), msgs)
	}
	for i, id := range got {
		if id != ids[i] {
			t.Fatalf("slow consumer event %d is %s, want %s", i, id, ids[i])
		}
	}
	if !strings.Contains(reason, "slow consumer") || !strings.Contains(reason, got[len(got)-1]) {
		t.Fatalf("close reason %q does not say slow consumer and the cursor %s", reason, got[len(got)-1])
	}
	relaytest.Eventually(t, 5*time.Second, "slow subscriber unregistered", func() bool { return r.Hub().Subscribers() == fast })
	// It resumes from its cursor and gets exactly the rest.
	resumed := relaytest.OpenSSE(t, r.ChannelURL("/events"), relaytest.SSEOptions{LastEventID: got[len(got)-1]})
	for i, ev := range resumed.Messages(t, msgs-len(got), 10*time.Second) {
		if ev.ID != ids[len(got)+i] {
			t.Fatalf("resumed event %d is %s, want %s", i, ev.ID, ids[len(got)+i])
		}
	}
}

func TestErrorsAreJSONWithAReason(t *testing.T) {
	r := relaytest.StartRelay(t, relaytest.Options{Shards: 2})
	otherShardKey := ""
	for i := 0; otherShardKey == ""; i++ {
		if k := fmt.Sprint("key-", i); shardmap.ShardFor(k, 2) == 1 {
			otherShardKey = k
		}
	}
	big := strings.Repeat("a", 64<<10+1)
	ch := r.ChannelURL("")
	tests := map[string]struct {
		method, url, ct, body string
		hdr                   map[string]string
		want                  int
		mention               string
	}{
		"unknown channel":       {method: "POST", url: r.URL + "/v1/channels/nope/messages?key=k", ct: "text/plain", body: "x", want: 404, mention: "not served here"},
		"unknown path":          {method: "GET", url: r.URL + "/v2/whatever", want: 404, mention: "no such path"},
		"GET on messages":       {method: "GET", url: ch + "/messages?key=k", want: 405, mention: "use POST"},
		"POST on events":        {method: "POST", url: ch + "/events", want: 405, mention: "use GET"},
		"too large":             {method: "POST", url: ch + "/messages?key=k", ct: "text/plain", body: big, want: 413, mention: "maxMessageBytes"},
		"no content type":       {method: "POST", url: ch + "/messages?key=k", body: "x", want: 415, mention: "Content-Type"},
		"bad content type":      {method: "POST", url: ch + "/messages?key=k", ct: "text/", body: "x", want: 415, mention: "not a valid media type"},
		"invalid JSON":          {method: "POST", url: ch + "/messages?key=k", ct: "application/json", body: "{", want: 400, mention: "not valid JSON"},
		"missing key":           {method: "POST", url: ch + "/messages", ct: "text/plain", body: "x", want: 400, mention: "needs a key"},
		"control char in key":   {method: "POST", url: ch + "/messages?key=a%0Ab", ct: "text/plain", body: "x", want: 400, mention: "control character"},
		"key of another shard":  {method: "POST", url: ch + "/messages?key=" + otherShardKey, ct: "text/plain", body: "x", want: 421, mention: "belongs to shard 1"},
		"bad idempotency key":   {method: "POST", url: ch + "/messages?key=k", ct: "text/plain", body: "x", hdr: map[string]string{"Idempotency-Key": "has space"}, want: 400, mention: "Idempotency-Key"},
		"bad ack":               {method: "POST", url: ch + "/messages?key=k&ack=all", ct: "text/plain", body: "x", want: 400, mention: "ack must be"},
		"subject and key clash": {method: "POST", url: ch + "/messages?key=k", ct: "application/cloudevents+json", body: `{"subject":"j","data":1}`, want: 400, mention: "differ"},
		"bad Last-Event-ID":     {method: "GET", url: ch + "/events", hdr: map[string]string{"Last-Event-ID": "yesterday"}, want: 400, mention: "stream ID"},
		"bad since":             {method: "GET", url: ch + "/ws?since=-1", want: 400, mention: "since"},
		"subscribe other shard": {method: "GET", url: ch + "/events?key=" + otherShardKey, want: 421, mention: "belongs to shard 1"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, tc.url, strings.NewReader(tc.body))
			if tc.ct != "" {
				req.Header.Set("Content-Type", tc.ct)
			}
			for k, v := range tc.hdr {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			var body struct {
				Type     string `json:"type"`
				Title    string `json:"title"`
				Status   int    `json:"status"`
				Detail   string `json:"detail"`
				Error    string `json:"error"`
				Shard    *int   `json:"shard"`
				Endpoint string `json:"endpoint"`
			}
			if err := json.Unmarshal(b, &body); err != nil || resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Fatalf("%d %q is not an RFC 9457 problem", resp.StatusCode, b)
			}
			if body.Type != problem.Type(resp.StatusCode) || !strings.HasPrefix(body.Type, problem.Base) ||
				body.Status != resp.StatusCode || body.Title != http.StatusText(resp.StatusCode) || body.Detail != body.Error {
				t.Fatalf("problem members wrong: %s", b)
			}
			if resp.StatusCode != tc.want || !strings.Contains(body.Error, tc.mention) {
				t.Fatalf("got %d %q, want %d mentioning %q", resp.StatusCode, body.Error, tc.want, tc.mention)
			}
			if tc.want == 405 && resp.Header.Get("Allow") == "" {
				t.Fatal("405 without an Allow header")
			}
			if tc.want == 421 && (body.Shard == nil || *body.Shard != 1 || !strings.Contains(body.Endpoint, "-shard-1.")) {
				t.Fatalf("421 does not name the right shard and endpoint: %s", b)
			}
		})
	}
	if n := r.Redis.Exists(context.Background(), r.Map.Shards[0].Stream).Val(); n != 0 {
		t.Fatal("a rejected publish wrote to the stream")
	}
}

func TestHealthReadinessMetricsAndShardMap(t *testing.T) {
	r := relaytest.StartRelay(t, relaytest.Options{Shards: 3})
	get := func(path string) (int, []byte) {
		resp, err := http.Get(r.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("/healthz %d", code)
	}
	code, b := get("/readyz")
	var ready struct {
		Ready  bool   `json:"ready"`
		Reason string `json:"reason"`
	}
	if err := json.Unmarshal(b, &ready); err != nil || code != 200 || !ready.Ready || ready.Reason != "Subscribed" {
		t.Fatalf("/readyz %d %s", code, b)
	}
	// Anyone who reaches the port reads /readyz: it names no Redis node.
	if node := r.Status().Node; node == "" || strings.Contains(string(b), node) || strings.Contains(string(b), "127.0.0.1") {
		t.Fatalf("/readyz shows Redis addresses (the subscription is on %q): %s", node, b)
	}
	code, b = get("/v1/channels/" + r.Map.Channel + "/shards")
	var m shardmap.Map
	if err := json.Unmarshal(b, &m); err != nil || code != 200 || len(m.Shards) != 3 || m.Shards[2].Stream != r.Map.Shards[2].Stream {
		t.Fatalf("/shards %d %s", code, b)
	}
	sub := relaytest.OpenSSE(t, r.ChannelURL("/events"), relaytest.SSEOptions{})
	r.MustPublish(t, "k", "{}")
	sub.Messages(t, 1, 10*time.Second)
	_, b = get("/metrics")
	for _, name := range []string{"herald_relay_published_total", "herald_relay_delivered_total", "herald_relay_slow_consumers_dropped_total",
		"herald_relay_subscribers", "herald_relay_resubscribes_total", "herald_relay_backfilled_total", "herald_relay_rollbacks_total",
		`herald_relay_gaps_total{channel="` + r.Map.Channel + `",reason="rollback",shard="0"} 0`, "herald_relay_publish_to_deliver_seconds_bucket",
		`herald_relay_streams{channel="` + r.Map.Channel + `",shard="0",transport="sse"} 1`, "herald_relay_published_bytes_total",
		`herald_relay_http_request_duration_seconds_count{channel="` + r.Map.Channel + `",code="202",method="post",route="publish",shard="0"} 1`,
		`herald_build_info{goversion="`, `role="shard",version="dev"} 1`} {
		if !bytes.Contains(b, []byte(name)) {
			t.Fatalf("/metrics lacks %s:\n%s", name, b)
		}
	}
	// The namespace comes from the pod Prometheus scrapes: a constant one would clash with it.
	if bytes.Contains(b, []byte(`namespace="`)) {
		t.Fatal("/metrics carries a namespace label")
	}
	if got := r.Metric(t, "herald_relay_delivered_bytes_total"); got < 2 {
		t.Fatalf("herald_relay_delivered_bytes_total %v after one delivery", got)
	}
	relaytest.Eventually(t, 5*time.Second, "latency observed", func() bool {
		return r.Metric(t, "herald_relay_publish_to_deliver_seconds_count") == 1
	})
}

// Idempotency keys belong to their caller and to their message: the same key from another
// caller is another message (no pre-empting a neighbour's key), and the same key from the same
// caller with another message answers 409 Conflict instead of silently dropping it.
func TestIdempotencyKeysAreScopedByCallerAndMessage(t *testing.T) {
	caller := "team-a/app"
	r := relaytest.StartRelay(t, relaytest.Options{Modify: func(o *relay.ShardOptions) {
		o.Authorize = func(req *http.Request) (string, int, string) { return req.Header.Get("X-Test-Caller"), 0, "" }
	}})
	pub := func(who, body string) (int, relaytest.PublishResponse) {
		return r.Publish(t, "k", body, "Idempotency-Key", "order-123", "X-Test-Caller", who)
	}
	codeB, b := pub("team-b/intruder", `{"order":"B's"}`) // B uses A's key first
	codeA, a := pub(caller, `{"order":"A's"}`)
	if codeB != http.StatusAccepted || codeA != http.StatusAccepted || a.Duplicate || a.ID == b.ID {
		t.Fatalf("B %d %+v, then A %d %+v: want both stored, A's not a duplicate of B's", codeB, b, codeA, a)
	}
	if code, retry := pub(caller, `{"order":"A's"}`); code != http.StatusAccepted || !retry.Duplicate || retry.ID != a.ID {
		t.Fatalf("A's retry: %d %+v, want a duplicate of %s", code, retry, a.ID)
	}
	code, other := pub(caller, `{"order":"something else"}`)
	if code != http.StatusConflict || !strings.Contains(other.Error, "another message") {
		t.Fatalf("A's key with another message: %d %+v, want 409 Conflict", code, other)
	}
	if n := r.Redis.XLen(context.Background(), r.Map.Shards[0].Stream).Val(); n != 2 {
		t.Fatalf("the stream holds %d entries, want 2 (B's and A's)", n)
	}
}

// A Live channel keeps no history, so what its relay misses while it resubscribes is lost: the
// subscriber is told with a gap event (no-replay), never left with a silent hole.
func TestLiveResubscribeSendsANoReplayGap(t *testing.T) {
	r := relaytest.StartRelay(t, relaytest.Options{Delivery: shardmap.DeliveryLive})
	s := relaytest.OpenSSE(t, r.ChannelURL("/events"), relaytest.SSEOptions{})
	relaytest.Eventually(t, 5*time.Second, "subscriber registered", func() bool { return r.Hub().Subscribers() == 1 })
	id := r.MustPublish(t, "k", `{"n":1}`)
	if ev := s.Messages(t, 1, 10*time.Second)[0]; ev.ID != id {
		t.Fatalf("got %s, want %s", ev.ID, id)
	}
	ctx := context.Background()
	master, err := r.Redis.MasterForKey(ctx, r.Map.Shards[0].LiveChannel)
	if err != nil {
		t.Fatal(err)
	}
	if err := master.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	for {
		ev, err := s.Next(15 * time.Second)
		if err != nil {
			t.Fatalf("no gap event after the relay lost its subscription: %v", err)
		}
		if ev.Event == "gap" {
			if ce := ev.CloudEvent(t); !strings.Contains(ev.Data, `"no-replay"`) || ce.ID == "" {
				t.Fatalf("gap %+v: want reason no-replay", ev)
			}
			return
		}
	}
}

// An Idempotency-Key costs Redis memory for its window only: the channel's window
// (spec.idempotencyWindow, in the shard map), at most a minute for a key the sidecar made up
// for its own retries, and nothing at all on a Live channel, which stores nothing to find.
func TestIdempotencyKeysLiveForTheirWindowOnly(t *testing.T) {
	ctx := context.Background()
	ttlOf := func(r *relaytest.Relay, key string) time.Duration {
		t.Helper()
		k := shardmap.IdempotencyKey(r.Map.Shards[0].HashTag, "*:"+key)
		var found []string
		var mu sync.Mutex // ForEachMaster calls the masters at once
		_ = r.Redis.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
			ks, err := m.Keys(ctx, k).Result()
			mu.Lock()
			found = append(found, ks...)
			mu.Unlock()
			return err
		})
		if len(found) == 0 {
			return 0
		}
		return r.Redis.TTL(ctx, found[0]).Val()
	}
	durable := relaytest.StartRelay(t, relaytest.Options{Modify: func(o *relay.ShardOptions) {
		o.Map.IdempotencyWindow = shardmap.Duration{Duration: 90 * time.Second}
	}})
	durable.MustPublishWith(t, "k", `{"n":1}`, "Idempotency-Key", "from-the-app")
	durable.MustPublishWith(t, "k", `{"n":2}`, "Idempotency-Key", "made-by-the-sidecar", publish.RetryKeyHeader, "1")
	if ttl := ttlOf(durable, "from-the-app"); ttl <= 60*time.Second || ttl > 90*time.Second {
		t.Errorf("an app's key lives %s, want the channel's window (90s)", ttl)
	}
	if ttl := ttlOf(durable, "made-by-the-sidecar"); ttl <= 0 || ttl > upstream.RetryKeyWindow {
		t.Errorf("a sidecar's retry key lives %s, want at most %s", ttl, upstream.RetryKeyWindow)
	}
	live := relaytest.StartRelay(t, relaytest.Options{Delivery: shardmap.DeliveryLive})
	live.MustPublishWith(t, "k", `{"n":1}`, "Idempotency-Key", "on-live")
	if ttl := ttlOf(live, "on-live"); ttl != 0 {
		t.Errorf("a Live channel stored an idempotency key (TTL %s)", ttl)
	}
}

// One caller cannot take a relay for itself: streams are capped per caller and per relay, and
// replays (which read Redis, shared by every channel) per caller and per second. A refused call
// is 429 Too Many Requests with Retry-After and says which limit; a closed stream gives its
// place back.
func TestCallersAreCappedWith429(t *testing.T) {
	r := relaytest.StartRelay(t, relaytest.Options{Modify: func(o *relay.ShardOptions) {
		o.Authorize = func(req *http.Request) (string, int, string) { return req.Header.Get("X-Test-Caller"), 0, "" }
		// One replay per 10 s (a burst of 1): the refusal below does not depend on timing.
		o.Limits = httpapi.Limits{Subscribers: 5, SubscribersPerCaller: 3, ReplaysPerCaller: 8, ReplayRate: 0.1}
	}})
	as := func(who string) relaytest.SSEOptions {
		return relaytest.SSEOptions{Header: http.Header{"X-Test-Caller": {who}}}
	}
	seen429 := 0
	get := func(who, query string) (*http.Response, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, r.ChannelURL("/events")+query, nil)
		req.Header.Set("X-Test-Caller", who)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		if resp.StatusCode == http.StatusTooManyRequests {
			seen429++
		}
		if resp.StatusCode != http.StatusOK {
			_ = json.NewDecoder(resp.Body).Decode(&body)
		}
		_, _ = io.Copy(io.Discard, resp.Body) // a replay-only stream: to its end
		return resp, body
	}
	refused := func(who, query, limit string) {
		t.Helper()
		resp, body := get(who, query)
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || body["limit"] != limit ||
			body["type"] != problem.Base+"limit-reached" || body["retryAfter"] == nil {
			t.Fatalf("%s %s: %d Retry-After %q %v; want 429 with Retry-After, limit %s", who, query, resp.StatusCode,
				resp.Header.Get("Retry-After"), body, limit)
		}
	}

	var greedy []*relaytest.SSE
	for range 3 {
		greedy = append(greedy, relaytest.OpenSSE(t, r.ChannelURL("/events"), as("team-a/greedy")))
	}
	refused("team-a/greedy", "", httpapi.RefusedSubscribersPerCaller)
	relaytest.OpenSSE(t, r.ChannelURL("/events"), as("team-b/app")) // another caller is not held up
	relaytest.OpenSSE(t, r.ChannelURL("/events"), as("team-b/app"))
	refused("team-c/app", "", httpapi.RefusedSubscribers) // the relay is full: 5 streams

	greedy[0].Close()
	relaytest.Eventually(t, 10*time.Second, "a closed stream gives its place back", func() bool {
		resp, _ := get("team-c/app", "?live=false&since=0-0")
		return resp.StatusCode == http.StatusOK
	})

	// Replays: team-c used its one above; team-d has its own.
	r.MustPublish(t, "k", `{"n":1}`)
	if resp, body := get("team-d/app", "?live=false&since=0-0"); resp.StatusCode != http.StatusOK {
		t.Fatalf("a first replay: %d %v", resp.StatusCode, body)
	}
	refused("team-d/app", "?live=false&since=0-0", httpapi.RefusedReplayRate)
	if n := r.Metric(t, "herald_relay_refused_total"); n != float64(seen429) {
		t.Fatalf("herald_relay_refused_total %v, want the %d answers 429", n, seen429)
	}
}
