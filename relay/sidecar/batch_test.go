package sidecar_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/testing/relaytest"
	"github.com/heraldhq/herald/relay/event"
	"github.com/heraldhq/herald/relay/publish"
)

func (s *testSidecar) postBatch(t *testing.T, body string, hdr ...string) (int, []relaytest.BatchEvent, http.Header, string) {
	t.Helper()
	code, a, h := relaytest.PostBatch(t, s.channelURL("/messages"), body, hdr...)
	return code, a.Events, h, a.Detail
}

// TestSidecarSplitsABatchByShard: the sidecar sends each shard's events of a batch to that
// shard's relays, while one relay of every shard is dead, and answers each event's result in
// the batch's order. Subscribers get every event once, in the batch's order per key. Sending the
// batch again (with the Idempotency-Key the sidecar named) stores nothing; a bad event stores
// nothing at all.
func TestSidecarSplitsABatchByShard(t *testing.T) {
	c := relaytest.StartChannel(t, relaytest.Options{Shards: 3}, 2)
	sc := startSidecar(t, c, "")
	s := relaytest.OpenSSE(t, sc.channelURL("/events"), relaytest.SSEOptions{})
	relaytest.Eventually(t, 10*time.Second, "subscriber registered", func() bool { return sc.metric(t, "herald_relay_sidecar_subscribers") == 1 })
	for i := range c.Replicas {
		c.Replicas[i][1].Kill() // the sidecar's first try lands on a dead relay half of the time
	}

	const n = 60
	var events []string
	keys := make([]string, n)
	for i := range n {
		keys[i] = fmt.Sprintf("user-%d", i%7)
		if i%3 == 0 { // some events carry their own id
			events = append(events, fmt.Sprintf(`{"id":"e-%d","source":"/test","subject":%q,"data":{"n":%d}}`, i, keys[i], i))
		} else {
			events = append(events, fmt.Sprintf(`{"subject":%q,"data":{"n":%d}}`, keys[i], i))
		}
	}
	batch := "[" + strings.Join(events, ",") + "]"
	code, res, hdr, detail := sc.postBatch(t, batch)
	if code != http.StatusAccepted || len(res) != n {
		t.Fatalf("batch: %d (%s), %d results", code, detail, len(res))
	}
	idem := hdr.Get("Idempotency-Key")
	if len(idem) < 16 {
		t.Fatalf("the sidecar named no Idempotency-Key for a batch with events without ids (%q)", idem)
	}
	shards := map[int]bool{}
	for i, r := range res {
		if r.ID == "" || r.Duplicate || r.Shard != c.Map.ShardFor(keys[i]) {
			t.Fatalf("event %d (key %s, shard %d): %+v", i, keys[i], c.Map.ShardFor(keys[i]), r)
		}
		shards[r.Shard] = true
	}
	if len(shards) != 3 {
		t.Fatalf("the batch reached %d shards, want 3", len(shards))
	}

	last := map[string]int{}
	for _, ev := range s.Messages(t, n, 20*time.Second) {
		var got struct {
			Subject string          `json:"subject"`
			Data    struct{ N int } `json:"data"`
		}
		if err := json.Unmarshal([]byte(ev.Data), &got); err != nil {
			t.Fatal(err)
		}
		if prev, ok := last[got.Subject]; ok && got.Data.N <= prev {
			t.Fatalf("key %s: %d after %d", got.Subject, got.Data.N, prev)
		}
		last[got.Subject] = got.Data.N
	}
	if ev, err := s.Next(300 * time.Millisecond); err != relaytest.ErrTimeout {
		t.Fatalf("more than the batch was delivered: %+v %v", ev, err)
	}

	code, again, _, detail := sc.postBatch(t, batch, "Idempotency-Key", idem)
	if code != http.StatusAccepted || len(again) != n {
		t.Fatalf("the batch again: %d (%s)", code, detail)
	}
	for i, r := range again {
		if !r.Duplicate || r.ID != res[i].ID {
			t.Fatalf("event %d again: %+v, want a duplicate of %s", i, r, res[i].ID)
		}
	}
	code, _, _, detail = sc.postBatch(t, `[{"subject":"a","data":1},{"subject":"b","type":7}]`)
	if code != http.StatusBadRequest || !strings.Contains(detail, "event 1: type must be a string") {
		t.Fatalf("a bad event: %d %q", code, detail)
	}
	var stored int64
	for i := range c.Map.Shards {
		stored += c.Replicas[i][0].Redis.XLen(context.Background(), c.Map.Shards[i].Stream).Val()
	}
	if stored != n {
		t.Fatalf("the shards hold %d entries, want %d", stored, n)
	}
	if got := sc.metric(t, "herald_relay_sidecar_published_total"); got != 2*n {
		t.Fatalf("sidecar published_total %v, want %d (the batch twice)", got, 2*n)
	}
}

// TestABatchAnswerAboutItsEventsIsFinal: a relay's 503 that says what became of each event of a
// batch is passed on, not retried: resending the whole batch would repeat what it stored.
func TestABatchAnswerAboutItsEventsIsFinal(t *testing.T) {
	var batches atomic.Int64
	c := relaytest.StartChannel(t, relaytest.Options{Shards: 1, Server: func(srv *httptest.Server) {
		h := srv.Config.Handler
		srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !strings.HasPrefix(r.Header.Get("Content-Type"), event.BatchMediaType) {
				h.ServeHTTP(w, r)
				return
			}
			batches.Add(1)
			body, _ := io.ReadAll(r.Body)
			raws, _ := event.SplitBatch(body)
			results := []publish.Outcome{{Result: publish.Result{ID: "1-0", Shard: 0, EventID: "0:1-0"}}}
			for range raws[1:] {
				results = append(results, publish.Failed(http.StatusServiceUnavailable, "Redis did not accept it"))
			}
			publish.WriteBatch(w, results)
		})
	}}, 1)
	sc := startSidecar(t, c, "")
	code, res, _, detail := sc.postBatch(t, `[{"subject":"a","data":1},{"subject":"a","data":2},{"subject":"a","data":3}]`)
	if code != http.StatusServiceUnavailable || len(res) != 3 || res[0].ID != "1-0" || res[1].Status != http.StatusServiceUnavailable || !strings.Contains(detail, "2 of 3 events were not stored") {
		t.Fatalf("%d %+v %q, want the relay's 503 with each event's result", code, res, detail)
	}
	if n := batches.Load(); n != 1 {
		t.Fatalf("the batch was sent %d times, want once", n)
	}
}
