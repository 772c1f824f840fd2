package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/internal/testing/relaytest"
)

// TestSubscribeResumesThroughACutWithoutLoss: a subscriber following a real relay through a
// connection that is cut gets every message once, in order, and its handler never sees the
// break.
func TestSubscribeResumesThroughACutWithoutLoss(t *testing.T) {
	r := relaytest.StartRelay(t, relaytest.Options{})
	proxy := relaytest.StartProxy(t, r.URL)
	c := client.New(proxy.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var mu sync.Mutex
	var got []int
	var ids []string
	done := make(chan error, 1)
	go func() {
		done <- c.Subscribe(ctx, r.Map.Channel, client.SubscribeOptions{}, func(e client.Event) error {
			if e.Gap != nil {
				return fmt.Errorf("unexpected gap %+v", *e.Gap)
			}
			var d struct{ N int }
			if err := json.Unmarshal(e.Data, &d); err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			got, ids = append(got, d.N), append(ids, e.ID)
			return nil
		})
	}()
	relaytest.Eventually(t, 10*time.Second, "subscribed", func() bool { return r.Metric(t, "herald_relay_subscribers") == 1 })
	publish := func(from, to int) {
		for n := from; n < to; n++ {
			p, err := c.Publish(ctx, r.Map.Channel, client.Message{Key: fmt.Sprintf("k%d", n%5), Data: []byte(fmt.Sprintf(`{"n":%d}`, n))})
			if err != nil || p.ID == "" || p.EventID != "0:"+p.ID {
				t.Fatalf("publish %d: %+v, %v", n, p, err)
			}
		}
	}
	publish(0, 20)
	relaytest.Eventually(t, 10*time.Second, "first 20", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 20 })
	if n := proxy.Cut(); n < 1 {
		t.Fatalf("cut %d connections", n)
	}
	publish(20, 40)
	relaytest.Eventually(t, 10*time.Second, "all 40", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) >= 40 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Subscribe ended with %v", err)
	}
	want := make([]int, 40)
	for i := range want {
		want[i] = i
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want 0..39 once each, in order", got)
	}
	if slices.Contains(ids, "") {
		t.Fatal("an event without its CloudEvents id")
	}
}

// TestSubscribeSurfacesGaps: a cursor the stream cannot resume from arrives as a Gap event, and
// delivery goes on after it.
func TestSubscribeSurfacesGaps(t *testing.T) {
	r := relaytest.StartRelay(t, relaytest.Options{})
	c := client.New(r.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	events := make(chan client.Event, 4)
	go func() {
		_ = c.Subscribe(ctx, r.Map.Channel, client.SubscribeOptions{Key: "k", After: "99999999999999-0"}, func(e client.Event) error {
			events <- e
			return nil
		})
	}()
	first := <-events
	if first.Gap == nil || first.Gap.Reason != "cursor-ahead" || first.Cursor == "" {
		t.Fatalf("first event %+v, want a cursor-ahead gap", first)
	}
	relaytest.Eventually(t, 10*time.Second, "subscribed", func() bool { return r.Metric(t, "herald_relay_subscribers") == 1 })
	if _, err := c.Publish(ctx, r.Map.Channel, client.Message{Key: "k", ContentType: "text/plain", Data: []byte("after the gap")}); err != nil {
		t.Fatal(err)
	}
	if e := <-events; e.Gap != nil || e.Text() != "after the gap" || e.Subject != "k" {
		t.Fatalf("then %+v (%q)", e, e.Text())
	}
}

// TestPublishRetriesWithOneIdempotencyKey: a 503 (here from a proxy in front of the relay) is
// retried after Retry-After with the same key, so the message is stored once; a 400 is not
// retried and comes back as an *Error with the problem's detail.
func TestPublishRetriesWithOneIdempotencyKey(t *testing.T) {
	r := relaytest.StartRelay(t, relaytest.Options{})
	target, _ := url.Parse(r.URL)
	forward := httputil.NewSingleHostReverseProxy(target)
	var calls atomic.Int32
	var keys sync.Map
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		n := calls.Add(1)
		keys.Store(req.Header.Get("Idempotency-Key"), true)
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"type":"https://herald.dev/problems/unavailable","title":"Service Unavailable","status":503,"detail":"try again","retryAfter":1}`))
			return
		}
		forward.ServeHTTP(w, req)
	}))
	defer front.Close()
	c := client.New(front.URL)
	ctx := context.Background()
	start := time.Now()
	p, err := c.Publish(ctx, r.Map.Channel, client.Message{Key: "k", Data: []byte(`{"n":1}`)})
	if err != nil || p.Duplicate {
		t.Fatalf("publish: %+v, %v", p, err)
	}
	if calls.Load() != 2 || time.Since(start) < time.Second {
		t.Fatalf("%d calls in %v: want a retry after Retry-After", calls.Load(), time.Since(start))
	}
	n := 0
	keys.Range(func(k, _ any) bool { n++; return k.(string) != "" })
	if n != 1 {
		t.Fatalf("the attempts sent %d different Idempotency-Keys, want 1", n)
	}
	_, err = c.Publish(ctx, r.Map.Channel, client.Message{Data: []byte(`{}`)}) // no key
	var herr *client.Error
	if !errors.As(err, &herr) || herr.Status != http.StatusBadRequest || herr.Type != "https://herald.dev/problems/invalid-request" || calls.Load() != 3 {
		t.Fatalf("publish without a key: %v (%d calls), want one 400 problem", err, calls.Load())
	}
}
