package sidecar_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/testing/relaytest"
	"github.com/heraldhq/herald/relay/event"
	"github.com/heraldhq/herald/relay/problem"
)

// publishRequests reads how many publish requests a relay answered.
func publishRequests(t *testing.T, r *relaytest.Relay) int {
	resp, err := http.Get(r.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "herald_relay_http_request_duration_seconds_count{") && strings.Contains(line, `route="publish"`) {
			n, _ := strconv.Atoi(line[strings.LastIndexByte(line, ' ')+1:])
			return n
		}
	}
	return 0
}

// TestConcurrentPublishesGoToTheRelaysAsBatches: single publishes that apps send at the same
// time (binary and structured, with and without their own Idempotency-Key, some with
// ?ack=replicated) reach the relays in fewer requests than publishes. Every app still gets its
// own answer, every message arrives once with its attributes, and the app's retries with its
// keys store nothing again.
func TestConcurrentPublishesGoToTheRelaysAsBatches(t *testing.T) {
	c := relaytest.StartChannel(t, relaytest.Options{Shards: 2}, 1)
	sc := startSidecar(t, c, "")
	s := relaytest.OpenSSE(t, sc.channelURL("/events"), relaytest.SSEOptions{})
	relaytest.Eventually(t, 10*time.Second, "subscriber registered", func() bool { return sc.metric(t, "herald_relay_sidecar_subscribers") == 1 })

	const n = 400
	type sent struct {
		code    int
		answer  map[string]any
		idemKey string // the Idempotency-Key the answer named
	}
	results := make([]sent, n)
	publish := func(i int) sent {
		key := fmt.Sprintf("user-%d", i%9)
		var req *http.Request
		switch i % 4 {
		case 0: // binary JSON, the sidecar's own retry key
			req, _ = http.NewRequest(http.MethodPost, sc.channelURL("/messages?key="+key), strings.NewReader(fmt.Sprintf(`{"n": %d}`, i)))
			req.Header.Set("Content-Type", "application/json")
		case 1: // binary text with attributes and the app's key, acknowledged by a replica
			req, _ = http.NewRequest(http.MethodPost, sc.channelURL("/messages?ack=replicated"), strings.NewReader(fmt.Sprintf("n=%d", i)))
			req.Header.Set("Content-Type", "text/plain")
			req.Header.Set("Ce-Subject", key)
			req.Header.Set("Ce-Tenant", "acme")
			req.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
			req.Header.Set("Idempotency-Key", fmt.Sprintf("app-%d", i))
		case 2: // structured with its own id
			req, _ = http.NewRequest(http.MethodPost, sc.channelURL("/messages"), strings.NewReader(
				fmt.Sprintf(`{"specversion":"1.0","id":"ev-%d","source":"/test","type":"t","subject":%q,"data":{"n":%d}}`, i, key, i)))
			req.Header.Set("Content-Type", "application/cloudevents+json")
		case 3: // binary bytes with the app's key
			req, _ = http.NewRequest(http.MethodPost, sc.channelURL("/messages?key="+key), strings.NewReader(fmt.Sprintf("\xff%d", i)))
			req.Header.Set("Content-Type", "application/octet-stream")
			req.Header.Set("Idempotency-Key", fmt.Sprintf("app-%d", i))
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return sent{}
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var a map[string]any
		if err := json.Unmarshal(b, &a); err != nil {
			t.Errorf("publish %d answered %d %q", i, resp.StatusCode, b)
		}
		return sent{resp.StatusCode, a, resp.Header.Get("Idempotency-Key")}
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() { defer wg.Done(); results[i] = publish(i) }()
	}
	wg.Wait()
	ids := map[string]int{}
	for i, r := range results {
		if r.code != http.StatusAccepted || r.answer["id"] == nil || r.answer["duplicate"] != nil {
			t.Fatalf("publish %d: %d %v", i, r.code, r.answer)
		}
		if i%4 == 1 && r.answer["replicated"] != true {
			t.Fatalf("publish %d asked ack=replicated: %v", i, r.answer)
		}
		if i%4 == 2 && r.answer["eventId"] != fmt.Sprintf("ev-%d", i) {
			t.Fatalf("publish %d: eventId %v", i, r.answer["eventId"])
		}
		if i%4 == 0 && !strings.HasPrefix(r.idemKey, "sidecar-") || i%4 == 1 && r.idemKey != fmt.Sprintf("app-%d", i) {
			t.Fatalf("publish %d named the Idempotency-Key %q", i, r.idemKey)
		}
		ids[fmt.Sprintf("%v/%v", r.answer["shard"], r.answer["id"])]++
	}
	if len(ids) != n {
		t.Fatalf("%d distinct ids for %d publishes", len(ids), n)
	}
	requests := 0
	for i := range c.Replicas {
		requests += publishRequests(t, c.Replicas[i][0])
	}
	batches := sc.metric(t, "herald_relay_sidecar_publish_batches_total")
	if batches == 0 || requests >= n {
		t.Fatalf("%d publishes took %d relay requests (%v batches): nothing was coalesced", n, requests, batches)
	}
	t.Logf("%d publishes took %d relay requests, %v of them batches", n, requests, batches)

	seen := map[int]bool{}
	for _, ev := range s.Messages(t, n, 20*time.Second) {
		var ce map[string]any
		if err := json.Unmarshal([]byte(ev.Data), &ce); err != nil {
			t.Fatal(err)
		}
		var i int
		switch d := ce["data"].(type) {
		case map[string]any:
			i = int(d["n"].(float64))
		case string:
			if _, err := fmt.Sscanf(d, "n=%d", &i); err != nil {
				t.Fatalf("text data %q", d)
			}
		}
		if b64, ok := ce["data_base64"].(string); ok {
			raw, err := base64.StdEncoding.DecodeString(b64)
			if err != nil || len(raw) < 2 || raw[0] != 0xff {
				t.Fatalf("bytes %q", b64)
			}
			i, _ = strconv.Atoi(string(raw[1:]))
		}
		if seen[i] {
			t.Fatalf("message %d arrived twice", i)
		}
		seen[i] = true
		if i%4 == 1 && (ce["tenant"] != "acme" || ce["traceparent"] != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" || ce["subject"] != fmt.Sprintf("user-%d", i%9)) {
			t.Fatalf("message %d lost attributes: %s", i, ev.Data)
		}
	}
	if ev, err := s.Next(300 * time.Millisecond); err != relaytest.ErrTimeout || len(seen) != n {
		t.Fatalf("%d of %d messages arrived, then %+v %v", len(seen), n, ev, err)
	}

	// The apps retry with the keys they were given: nothing is stored again.
	for i := range n {
		if i%4 != 3 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			again := publish(i)
			if again.code != http.StatusAccepted || again.answer["duplicate"] != true || again.answer["id"] != results[i].answer["id"] {
				t.Errorf("retry of %d: %d %v, want a duplicate of %v", i, again.code, again.answer, results[i].answer["id"])
			}
		}()
	}
	wg.Wait()
	var stored int64
	for i := range c.Map.Shards {
		stored += c.Replicas[i][0].Redis.XLen(context.Background(), c.Map.Shards[i].Stream).Val()
	}
	if stored != n {
		t.Fatalf("the shards hold %d entries, want %d", stored, n)
	}
}

// TestCoalescedPublishesFallBackToSinglesOnAnOlderRelay: a relay older than batches refuses them
// with 415; the sidecar then sends each publish of the batch alone, and every app still gets its
// 202 with the message stored once.
func TestCoalescedPublishesFallBackToSinglesOnAnOlderRelay(t *testing.T) {
	var refused atomic.Int64
	c := relaytest.StartChannel(t, relaytest.Options{Shards: 1, Server: func(srv *httptest.Server) {
		h := srv.Config.Handler
		srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.Header.Get("Content-Type"), event.BatchMediaType) {
				refused.Add(1)
				problem.Write(w, http.StatusUnsupportedMediaType, "unsupported media type: batched CloudEvents are not supported; publish one event per request")
				return
			}
			h.ServeHTTP(w, r)
		})
	}}, 1)
	sc := startSidecar(t, c, "")
	const n = 200
	var wg sync.WaitGroup
	ids := make([]string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, p := sc.publish(t, fmt.Sprintf("k%d", i%5), fmt.Sprintf(`{"n":%d}`, i))
			if code != http.StatusAccepted {
				t.Errorf("publish %d: %d %+v", i, code, p)
			}
			ids[i] = p.ID
		}()
	}
	wg.Wait()
	if refused.Load() == 0 {
		t.Fatal("no batch was tried: the publishes did not overlap")
	}
	if got := c.Replicas[0][0].Redis.XLen(context.Background(), c.Map.Shards[0].Stream).Val(); got != n {
		t.Fatalf("the shard holds %d entries, want %d", got, n)
	}
	slices.Sort(ids)
	if distinct := slices.Compact(ids); len(distinct) != n {
		t.Fatalf("%d distinct ids for %d publishes", len(distinct), n)
	}
}
