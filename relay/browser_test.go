package relay_test

import (
	"encoding/json"
	"net/url"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/testing/relaytest"
	"github.com/heraldhq/herald/relay"
	"github.com/heraldhq/herald/relay/httpapi"
	"github.com/heraldhq/herald/relay/stream"
)

// TestBrowserStreamsResumeWithoutLoss runs testdata/browser.html in a real browser (headless
// Chromium): a page of another origin opens an EventSource and a WebSocket to a relay (CORS,
// WebSocket origins), publishes, has its connections cut, publishes more while they are down,
// and reports what each stream got. Both must get every message once, in order.
func TestBrowserStreamsResumeWithoutLoss(t *testing.T) {
	const total = 60
	pages := relaytest.ServePages(t, "testdata")
	r := relaytest.StartRelay(t, relaytest.Options{Modify: func(o *relay.ShardOptions) {
		o.Browser = httpapi.Browser{CORSOrigins: []string{pages.URL}}
	}})
	proxy := relaytest.StartProxy(t, r.URL)
	cut := 0
	pages.OnCut = func() { cut = proxy.Cut() }
	channel := proxy.URL + "/v1/channels/" + r.Map.Channel
	report := pages.Run(t, "/browser.html?"+url.Values{"relay": {channel}, "n": {strconv.Itoa(total)}}.Encode(), 90*time.Second)

	var res struct {
		SSE        []int  `json:"sse"`
		WS         []int  `json:"ws"`
		SSEOpens   int    `json:"sseOpens"`
		WSOpens    int    `json:"wsOpens"`
		WSProtocol string `json:"wsProtocol"`
	}
	if err := json.Unmarshal(report, &res); err != nil {
		t.Fatalf("report %s: %v", report, err)
	}
	if cut < 2 {
		t.Fatalf("the cut closed %d connections, want both streams", cut)
	}
	want := make([]int, total)
	for i := range want {
		want[i] = i
	}
	if !slices.Equal(res.SSE, want) || !slices.Equal(res.WS, want) {
		t.Fatalf("EventSource got %v\nWebSocket got %v\nwant 0..%d once each, in order", res.SSE, res.WS, total-1)
	}
	if res.SSEOpens < 2 || res.WSOpens < 2 {
		t.Fatalf("streams opened %d (EventSource) and %d (WebSocket) times: neither resumed", res.SSEOpens, res.WSOpens)
	}
	if res.WSProtocol != stream.CloudEventsSubprotocol {
		t.Fatalf("WebSocket subprotocol %q, want %s", res.WSProtocol, stream.CloudEventsSubprotocol)
	}
}
