package relay_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/testing/relaytest"
	"github.com/heraldhq/herald/relay/event"
)

// TestBatchPublishStoresEveryEventInOrderAndOnce: a batch of CloudEvents is stored in its order
// and delivered as single publishes are; sending it again stores nothing (events with an id by
// it, the others by the batch's Idempotency-Key); a bad event anywhere stores nothing at all.
func TestBatchPublishStoresEveryEventInOrderAndOnce(t *testing.T) {
	r := relaytest.StartRelay(t, relaytest.Options{})
	s := relaytest.OpenSSE(t, r.ChannelURL("/events"), relaytest.SSEOptions{})
	relaytest.Eventually(t, 5*time.Second, "subscriber registered", func() bool { return r.Hub().Subscribers() == 1 })
	ctx := context.Background()
	stream := r.Map.Shards[0].Stream

	batch := `[
		{"specversion":"1.0","id":"o-1","source":"/shop","type":"order.placed","subject":"user-1","data":{"n":1}},
		{"subject":"user-2","data":{"n":2}},
		{"specversion":"1.0","type":"note","subject":"user-1","datacontenttype":"text/plain","data":"three"}
	]`
	hdr := []string{"Idempotency-Key", "batch-1", "Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	code, a, _ := relaytest.PostBatch(t, r.ChannelURL("/messages"), batch, hdr...)
	if code != http.StatusAccepted || len(a.Events) != 3 {
		t.Fatalf("batch: %d %+v", code, a)
	}
	for i, e := range a.Events {
		if e.ID == "" || e.Duplicate || e.Status != 0 || (i > 0 && e.ID <= a.Events[i-1].ID) {
			t.Fatalf("event %d: %+v, want stored after the one before", i, e)
		}
	}
	if a.Events[0].EventID != "o-1" || a.Events[1].EventID != "0:"+a.Events[1].ID {
		t.Fatalf("event ids %q %q", a.Events[0].EventID, a.Events[1].EventID)
	}
	got := s.Messages(t, 3, 10*time.Second)
	for i, want := range []struct{ subject, typ, data string }{{"user-1", "order.placed", `{"n":1}`}, {"user-2", event.DefaultType, `{"n":2}`}, {"user-1", "note", `"three"`}} {
		ce := map[string]json.RawMessage{}
		if err := json.Unmarshal([]byte(got[i].Data), &ce); err != nil || got[i].ID != a.Events[i].ID {
			t.Fatalf("delivery %d: %+v %v", i, got[i], err)
		}
		if string(ce["subject"]) != `"`+want.subject+`"` || string(ce["type"]) != `"`+want.typ+`"` || string(ce["data"]) != want.data ||
			string(ce["traceparent"]) != `"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"` {
			t.Fatalf("delivery %d is %s, want subject %s, type %s, data %s and the request's traceparent", i, got[i].Data, want.subject, want.typ, want.data)
		}
	}

	// The same batch again: every event is a duplicate of the first time.
	code, again, _ := relaytest.PostBatch(t, r.ChannelURL("/messages"), batch, hdr...)
	if code != http.StatusAccepted {
		t.Fatalf("retry: %d %+v", code, again)
	}
	for i, e := range again.Events {
		if !e.Duplicate || e.ID != a.Events[i].ID {
			t.Fatalf("retried event %d: %+v, want a duplicate of %s", i, e, a.Events[i].ID)
		}
	}
	if n := r.Redis.XLen(ctx, stream).Val(); n != 3 {
		t.Fatalf("stream holds %d entries after the retry, want 3", n)
	}

	// An event whose id was used for other data is refused; the others are stored.
	code, mixed, _ := relaytest.PostBatch(t, r.ChannelURL("/messages?key=user-3"), `[{"data":{"n":4}},{"id":"o-1","source":"/shop","data":"other"}]`)
	if code != http.StatusConflict || len(mixed.Events) != 2 || mixed.Events[0].ID == "" || mixed.Events[1].Status != http.StatusConflict ||
		!strings.Contains(mixed.Detail, "1 of 2 events were not stored") {
		t.Fatalf("a reused id: %d %+v, want 409 with the first event stored", code, mixed)
	}

	// Nothing of a batch with a bad event is stored; the error names the event.
	for name, tc := range map[string]struct {
		query, body string
		code        int
		says        string
	}{
		"not an array":    {"", `{"subject":"a","data":1}`, 400, "JSON array"},
		"empty":           {"", `[]`, 400, "at least one event"},
		"bad event":       {"", `[{"subject":"a","data":1},{"subject":"a","specversion":"0.3"}]`, 400, "event 1: specversion"},
		"no key":          {"", `[{"subject":"a","data":1},{"data":2}]`, 400, "event 1: an event needs a key"},
		"keys differ":     {"?key=a", `[{"subject":"b","data":1}]`, 400, "event 0: ?key=\"a\" and the subject \"b\" differ"},
		"trailing":        {"", `[{"subject":"a","data":1}] x`, 400, "more than one JSON value"},
		"too many events": {"?key=a", "[" + strings.Repeat(`{"data":1},`, event.MaxBatchEvents) + `{"data":1}]`, 400, "at most 1000 events"},
		"data too large":  {"", `[{"subject":"a","data":1},{"subject":"a","data":"` + strings.Repeat("x", 70000) + `"}]`, 413, "event 1: data of 70002 bytes"},
	} {
		code, p, hdr := relaytest.PostBatch(t, r.ChannelURL("/messages"+tc.query), tc.body)
		if code != tc.code || !strings.Contains(p.Detail, tc.says) || hdr.Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s: %d %q, want %d saying %q", name, code, p.Detail, tc.code, tc.says)
		}
	}
	for name, hdr := range map[string][]string{
		"a token short":           {"Herald-Event-Keys", "k:a"},
		"a bad token":             {"Herald-Event-Keys", "k:a x:b"},
		"with an Idempotency-Key": {"Herald-Event-Keys", "k:a k:b", "Idempotency-Key", "c"},
	} {
		code, p, _ := relaytest.PostBatch(t, r.ChannelURL("/messages?key=a"), `[{"data":1},{"data":2}]`, hdr...)
		if code != http.StatusBadRequest || !strings.Contains(p.Detail, "Herald-Event-Keys") {
			t.Errorf("%s: %d %q, want 400 naming Herald-Event-Keys", name, code, p.Detail)
		}
	}
	if n := r.Redis.XLen(ctx, stream).Val(); n != 4 {
		t.Fatalf("stream holds %d entries, want 4: the refused batches stored something", n)
	}

	// Each event's own key (as the sidecar sends coalesced publishes): a retry of the second
	// event alone, with its key, is its duplicate.
	code, own, _ := relaytest.PostBatch(t, r.ChannelURL("/messages?key=user-5"), `[{"data":7},{"data":8}]`, "Herald-Event-Keys", "- k:own-8")
	if code != http.StatusAccepted || len(own.Events) != 2 {
		t.Fatalf("Herald-Event-Keys: %d %+v", code, own)
	}
	if code, single := r.Publish(t, "user-5", `8`, "Idempotency-Key", "own-8"); code != http.StatusAccepted || !single.Duplicate || single.ID != own.Events[1].ID {
		t.Fatalf("the second event again, alone with its key: %d %+v, want a duplicate of %s", code, single, own.Events[1].ID)
	}

	// With ?ack=replicated the whole batch waits for one WAIT.
	code, rep, _ := relaytest.PostBatch(t, r.ChannelURL("/messages?ack=replicated&key=user-4"), `[{"data":1},{"data":2}]`)
	if code != http.StatusAccepted || len(rep.Events) != 2 {
		t.Fatalf("ack=replicated: %d %+v", code, rep)
	}
	for i, e := range rep.Events {
		if e.Replicated == nil || !*e.Replicated || e.Replicas == nil || *e.Replicas < 1 {
			t.Fatalf("ack=replicated event %d: %+v", i, e)
		}
	}
	if got := r.Metric(t, "herald_relay_published_total"); got != 8 {
		t.Fatalf("published_total %v, want 8", got)
	}
}

// TestBatchEventsOfAnotherShardAreMisdirected: a relay takes only its own shard's events, and
// the 421 says which event and where it goes.
func TestBatchEventsOfAnotherShardAreMisdirected(t *testing.T) {
	r := relaytest.StartRelay(t, relaytest.Options{Shards: 4})
	var own, other string
	for i := 0; own == "" || other == ""; i++ {
		k := fmt.Sprintf("k%d", i)
		if r.Map.ShardFor(k) == 0 {
			own = k
		} else if other == "" {
			other = k
		}
	}
	body := fmt.Sprintf(`[{"subject":%q,"data":1},{"subject":%q,"data":2}]`, own, other)
	code, p, _ := relaytest.PostBatch(t, r.ChannelURL("/messages"), body)
	if code != http.StatusMisdirectedRequest || !strings.Contains(p.Detail, "event 1: key \""+other+"\" belongs to shard") {
		t.Fatalf("%d %q, want 421 naming event 1", code, p.Detail)
	}
	if n := r.Redis.XLen(context.Background(), r.Map.Shards[0].Stream).Val(); n != 0 {
		t.Fatalf("a misdirected batch stored %d entries", n)
	}
}
