package relay_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/testing/relaytest"
	"github.com/heraldhq/herald/relay"
	"github.com/heraldhq/herald/relay/problem"
)

// heapInUse is the live heap after a collection: what the process holds, not what it made.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// Requests that announce large bodies and trickle them hold what they sent, not what they
// announced; a caller reads at most its share of bodies at once (429 past it); a body that does
// not arrive in time is answered 408 and its connection closed; other callers go on.
func TestSlowBodiesHoldLittleAndTimeOut(t *testing.T) {
	const slow, announced = 16, 4_000_000
	r := relaytest.StartRelay(t, relaytest.Options{Modify: func(o *relay.ShardOptions) {
		o.BodyReadTimeout = 3 * time.Second
		o.Limits.BodiesPerCaller = slow
	}})
	u, _ := url.Parse(r.ChannelURL("/messages?key=k"))
	before := heapInUse()

	// The attack: requests that say 4 MB are coming and send 100 bytes.
	conns := make([]net.Conn, slow)
	for i := range conns {
		c, err := net.Dial("tcp", u.Host)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/cloudevents-batch+json\r\nContent-Length: %d\r\n\r\n[%s",
			u.RequestURI(), u.Host, announced, strings.Repeat(" ", 99))
		conns[i] = c
	}
	started := time.Now()

	// Once all of them are being read, the caller's next body is refused.
	var refused map[string]any
	relaytest.Eventually(t, 5*time.Second, "the caller's share of body reads to be taken", func() bool {
		resp, err := http.Post(u.String(), "application/json", strings.NewReader(`{"n":1}`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		refused = nil
		_ = json.NewDecoder(resp.Body).Decode(&refused)
		return resp.StatusCode == http.StatusTooManyRequests
	})
	if refused["limit"] != "bodies_per_caller" || refused["type"] != problem.Base+"limit-reached" {
		t.Fatalf("refused with %v, want the bodies_per_caller limit", refused)
	}
	if grown := int64(heapInUse()) - int64(before); grown > slow*announced/8 {
		t.Fatalf("%d requests announcing %d bytes each grew the heap by %d bytes, want what they sent", slow, announced, grown)
	}

	// Each slow request is answered 408 once the timeout passed, and its connection closed.
	for i, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("slow request %d: no answer: %v", i, err)
		}
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestTimeout || body["type"] != problem.Base+"request-timeout" {
			t.Fatalf("slow request %d answered %d %v, want 408 request-timeout", i, resp.StatusCode, body)
		}
	}
	if waited := time.Since(started); waited < 2*time.Second {
		t.Fatalf("the slow requests were answered after %v, before their timeout", waited)
	}
	r.MustPublish(t, "k", `{"n":2}`) // the relay serves on
}
