package relay_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald/internal/testing/relaytest"
)

func TestPublishReachesSSEAndWebSocketSubscribers(t *testing.T) {
	r := relaytest.StartRelay(t, relaytest.Options{})
	all := relaytest.OpenSSE(t, r.ChannelURL("/events"), relaytest.SSEOptions{})
	onlyA := relaytest.OpenSSE(t, r.ChannelURL("/events?key=user-a"), relaytest.SSEOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, strings.Replace(r.ChannelURL("/ws"), "http://", "ws://", 1), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	wsA, _, err := websocket.Dial(ctx, strings.Replace(r.ChannelURL("/ws?key=user-a"), "http://", "ws://", 1), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer wsA.CloseNow()
	relaytest.Eventually(t, 5*time.Second, "4 subscribers registered", func() bool { return r.Hub().Subscribers() == 4 })

	type sent struct{ key, id, body string }
	var msgs []sent
	for i, key := range []string{"user-a", "user-b", "user-a", "user-c"} {
		body := fmt.Sprintf(`{"n":%d}`, i)
		msgs = append(msgs, sent{key, r.MustPublish(t, key, body), body})
	}

	// Every key on the unfiltered streams, in order; only user-a on the filtered ones.
	wantAll, wantA := msgs, []sent{msgs[0], msgs[2]}
	check := func(name string, got []relaytest.CloudEvent, want []sent) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: got %d events, want %d", name, len(got), len(want))
		}
		for i, ce := range got {
			w := want[i]
			if ce.Cursor != w.id || ce.ID != "0:"+w.id || ce.Subject != w.key || string(ce.Data) != w.body || ce.SpecVersion != "1.0" ||
				ce.Source != "/namespaces/test/notificationchannels/"+r.Map.Channel || ce.Type != "dev.herald.message" ||
				ce.DataContentType != "application/json" || ce.Time == "" {
				t.Fatalf("%s: event %d = %+v, want id %s subject %s data %s", name, i, ce, w.id, w.key, w.body)
			}
		}
	}
	sseEvents := func(s *relaytest.SSE, n int) []relaytest.CloudEvent {
		var out []relaytest.CloudEvent
		for _, ev := range s.Messages(t, n, 10*time.Second) {
			ce := ev.CloudEvent(t)
			if ev.ID != ce.Cursor {
				t.Fatalf("SSE id %q differs from the CloudEvent's heraldcursor %q", ev.ID, ce.Cursor)
			}
			out = append(out, ce)
		}
		return out
	}
	wsEvents := func(c *websocket.Conn, n int) []relaytest.CloudEvent {
		var out []relaytest.CloudEvent
		for range n {
			typ, b, err := c.Read(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if typ != websocket.MessageText {
				t.Fatalf("frame type %v, want text", typ)
			}
			var ce relaytest.CloudEvent
			if err := json.Unmarshal(b, &ce); err != nil {
				t.Fatalf("frame is not one JSON event: %q", b)
			}
			out = append(out, ce)
		}
		return out
	}
	check("SSE, no key", sseEvents(all, 4), wantAll)
	if retry, _ := all.Retry.Load().(string); !between(retry, 1500, 2999) {
		t.Fatalf("the SSE stream opened with retry %q, want 1500-2999 (ms, drawn per stream): an EventSource reconnects after it", retry)
	}
	// Drawn per stream: of several streams' openings, not all are the same.
	seen := map[string]bool{}
	for range 8 {
		s := relaytest.OpenSSE(t, r.ChannelURL("/events"), relaytest.SSEOptions{})
		relaytest.Eventually(t, 5*time.Second, "the retry field", func() bool { _, ok := s.Retry.Load().(string); return ok })
		retry, _ := s.Retry.Load().(string)
		seen[retry] = true
		s.Close()
	}
	if len(seen) < 2 {
		t.Fatalf("8 streams all opened with retry %v: the delay is not spread", seen)
	}
	check("SSE, key=user-a", sseEvents(onlyA, 2), wantA)
	check("WebSocket, no key", wsEvents(ws, 4), wantAll)
	check("WebSocket, key=user-a", wsEvents(wsA, 2), wantA)

	// Nothing else arrives on the filtered stream: the next thing it gets is the next user-a message.
	id := r.MustPublish(t, "user-a", `{"n":99}`)
	if got := sseEvents(onlyA, 1); got[0].Cursor != id {
		t.Fatalf("filtered stream got %s, want %s", got[0].Cursor, id)
	}
	if r.Metric(t, "herald_relay_published_total") != 5 {
		t.Fatalf("published_total = %v, want 5", r.Metric(t, "herald_relay_published_total"))
	}
}

func TestResumeWithLastEventIDReplaysExactlyTheMissedMessagesThenLive(t *testing.T) {
	r := relaytest.StartRelay(t, relaytest.Options{})
	first := relaytest.OpenSSE(t, r.ChannelURL("/events"), relaytest.SSEOptions{})
	relaytest.Eventually(t, 5*time.Second, "subscriber registered", func() bool { return r.Hub().Subscribers() == 1 })
	cursor := r.MustPublish(t, "k", `{"seq":-1}`)
	if ev := first.Messages(t, 1, 10*time.Second)[0]; ev.ID != cursor {
		t.Fatalf("got %s, want %s", ev.ID, cursor)
	}
	first.Close()

	var missed []string
	for i := range 500 {
		missed = append(missed, r.MustPublish(t, "k", fmt.Sprintf(`{"seq":%d}`, i)))
	}
	// Keep publishing while the subscriber resumes, so the replay/live seam is crossed under traffic.
	more := make(chan string, 200)
	go func() {
		defer close(more)
		for i := range 200 {
			code, pr := r.Publish(t, "k", fmt.Sprintf(`{"seq":%d}`, 500+i))
			if code != http.StatusAccepted {
				return
			}
			more <- pr.ID
		}
	}()
	resumed := relaytest.OpenSSE(t, r.ChannelURL("/events"), relaytest.SSEOptions{LastEventID: cursor})
	got := resumed.Messages(t, 500, 20*time.Second)
	for i, ev := range got {
		if ev.ID != missed[i] {
			t.Fatalf("replayed event %d has id %s, want %s", i, ev.ID, missed[i])
		}
	}
	var live []string
	for id := range more {
		live = append(live, id)
	}
	if len(live) != 200 {
		t.Fatalf("only %d of the concurrent publishes succeeded", len(live))
	}
	for i, ev := range resumed.Messages(t, 200, 20*time.Second) {
		if ev.ID != live[i] {
			t.Fatalf("event %d after the replay has id %s, want %s (gap or duplicate at the seam)", i, ev.ID, live[i])
		}
	}
	if ev, err := resumed.Next(300 * time.Millisecond); err != relaytest.ErrTimeout {
		t.Fatalf("extra frame after all messages: %+v %v", ev, err)
	}
	// ?since= works the same way and on WebSocket.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, strings.Replace(r.ChannelURL("/ws?since="+missed[497]), "http://", "ws://", 1), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	for _, want := range append([]string{missed[498], missed[499]}, live[0]) {
		_, b, err := ws.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var ce relaytest.CloudEvent
		_ = json.Unmarshal(b, &ce)
		if ce.Cursor != want {
			t.Fatalf("WebSocket resume got %s, want %s", ce.Cursor, want)
		}
	}
}

// A live SSE stream is served by the hub's writers after its handler returned: it must still
// leave the hub as soon as its client goes, and end when the relay shuts down.
func TestLiveStreamLeavesWithItsClientAndEndsOnShutdown(t *testing.T) {
	r := relaytest.StartRelay(t, relaytest.Options{})
	gone := relaytest.OpenSSE(t, r.ChannelURL("/events"), relaytest.SSEOptions{})
	stays := relaytest.OpenSSE(t, r.ChannelURL("/events"), relaytest.SSEOptions{})
	relaytest.Eventually(t, 5*time.Second, "2 subscribers registered", func() bool { return r.Hub().Subscribers() == 2 })
	id := r.MustPublish(t, "k", `{"n":1}`)
	for _, s := range []*relaytest.SSE{gone, stays} {
		if ev := s.Messages(t, 1, 10*time.Second); ev[0].ID != id {
			t.Fatalf("got %s, want %s", ev[0].ID, id)
		}
	}

	gone.Close() // well within the 15 s heartbeat: the relay notices the close, not a failed write
	relaytest.Eventually(t, 3*time.Second, "closed stream unregistered", func() bool { return r.Hub().Subscribers() == 1 })
	id = r.MustPublish(t, "k", `{"n":2}`)
	if ev := stays.Messages(t, 1, 10*time.Second); ev[0].ID != id {
		t.Fatalf("got %s, want %s", ev[0].ID, id)
	}

	r.Kill() // shutdown: the stream ends, its client sees the end of the body
	if ev, err := stays.Next(10 * time.Second); err != io.EOF {
		t.Fatalf("after shutdown the stream gave %+v, %v; want its end", ev, err)
	}
	if n := r.Hub().Subscribers(); n != 0 {
		t.Fatalf("%d subscribers still registered after shutdown", n)
	}
}

// between reports whether s is a whole number from lo to hi.
func between(s string, lo, hi int) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n >= lo && n <= hi
}

// A publish the relay receives while it shuts down (request contexts end then, so that streams
// end) is still stored and answered: 202, never an empty 200 that says nothing of the message.
// The same for a batch.
func TestAPublishIsAnsweredWhileTheRelayShutsDown(t *testing.T) {
	shutdown, begin := context.WithCancel(context.Background())
	defer begin()
	r := relaytest.StartRelay(t, relaytest.Options{Server: func(s *httptest.Server) {
		s.Config.BaseContext = func(net.Listener) context.Context { return shutdown }
	}})
	begin() // every request from now on runs in an ended context, as during a shutdown
	code, pr := r.Publish(t, "k", `{"n":1}`, "Idempotency-Key", "during-shutdown")
	if code != http.StatusAccepted || pr.ID == "" {
		t.Fatalf("publish during shutdown: %d %+v, want 202 with its id", code, pr)
	}
	if code, again := r.Publish(t, "k", `{"n":1}`, "Idempotency-Key", "during-shutdown"); code != http.StatusAccepted || !again.Duplicate || again.ID != pr.ID {
		t.Fatalf("the same publish again: %d %+v, want the stored one (%s) as a duplicate", code, again, pr.ID)
	}
	code, a, _ := relaytest.PostBatch(t, r.ChannelURL("/messages"), `[{"subject":"k","data":{"n":2}},{"subject":"k","data":{"n":3}}]`,
		"Idempotency-Key", "batch-during-shutdown")
	if code != http.StatusAccepted || len(a.Events) != 2 || a.Events[0].ID == "" || a.Events[1].ID == "" {
		t.Fatalf("batch during shutdown: %d %+v, want 202 with both stored", code, a)
	}
}
