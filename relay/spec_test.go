package relay_test

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald/internal/testing/relaytest"
	"github.com/heraldhq/herald/relay"
	"github.com/heraldhq/herald/relay/httpapi"
	"github.com/heraldhq/herald/relay/stream"
)

// TestAnswersMatchTheAPIDocuments calls a live relay the ways a client can, well and badly, and
// checks every answer against api/openapi.yaml (documented status, content type, body schema)
// and every event its streams send against api/asyncapi.yaml. It also checks that the relay
// serves both documents.
func TestAnswersMatchTheAPIDocuments(t *testing.T) {
	spec := relaytest.LoadSpec(t)
	r := relaytest.StartRelay(t, relaytest.Options{Shards: 2, Modify: func(o *relay.ShardOptions) {
		o.Map.MaxMessageBytes = 1024
		o.Limits = httpapi.Limits{SubscribersPerCaller: 2}
		o.Authorize = func(r *http.Request) (string, int, string) {
			switch r.Header.Get("Authorization") {
			case "Bearer good":
				return "app/a", 0, ""
			case "Bearer other":
				return "", http.StatusForbidden, "namespace other may not use this channel"
			}
			return "", http.StatusUnauthorized, "no token"
		}
	}})
	keyOf := func(shard int) string {
		for i := 0; ; i++ {
			if k := "key-" + strconv.Itoa(i); r.Map.ShardFor(k) == shard {
				return k
			}
		}
	}
	k1, otherShardKey := keyOf(0), keyOf(1)
	messages, events, ws := "/v1/channels/{channel}/messages", "/v1/channels/{channel}/events", "/v1/channels/{channel}/ws"
	call := func(method, template, path string, header map[string]string, body string) (int, http.Header) {
		t.Helper()
		req, _ := http.NewRequest(method, r.URL+path, strings.NewReader(body))
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		spec.CheckResponse(t, method, template, resp, b)
		return resp.StatusCode, resp.Header
	}
	good := map[string]string{"Authorization": "Bearer good"}
	with := func(kv ...string) map[string]string {
		h := map[string]string{"Authorization": "Bearer good"}
		for i := 0; i+1 < len(kv); i += 2 {
			h[kv[i]] = kv[i+1]
		}
		return h
	}
	ch := "/v1/channels/" + r.Map.Channel

	for _, c := range []struct {
		name, method, template, path string
		header                       map[string]string
		body                         string
		want                         int
	}{
		{"binary publish", "POST", messages, ch + "/messages?key=" + k1, with("Content-Type", "application/json", "Idempotency-Key", "i-1"), `{"n":1}`, 202},
		{"structured publish", "POST", messages, ch + "/messages?ack=replicated", with("Content-Type", "application/cloudevents+json"), `{"specversion":"1.0","id":"e1","source":"/s","type":"t","subject":"` + k1 + `","traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","data":{"n":2}}`, 202},
		{"idempotency key reused", "POST", messages, ch + "/messages?key=" + k1, with("Content-Type", "application/json", "Idempotency-Key", "i-1"), `{"n":3}`, 409},
		{"batch", "POST", messages, ch + "/messages?key=" + k1, with("Content-Type", "application/cloudevents-batch+json", "Idempotency-Key", "b-1"), `[{"data":{"n":4}},{"id":"e2","source":"/s","data":"five"}]`, 202},
		{"batch with a reused id", "POST", messages, ch + "/messages?key=" + k1, with("Content-Type", "application/cloudevents-batch+json"), `[{"data":{"n":6}},{"id":"e2","source":"/s","data":"other"}]`, 409},
		{"batch with a bad event", "POST", messages, ch + "/messages?key=" + k1, with("Content-Type", "application/cloudevents-batch+json"), `[{"data":1},{"type":1}]`, 400},
		{"no key", "POST", messages, ch + "/messages", with("Content-Type", "application/json"), `{}`, 400},
		{"bad ack", "POST", messages, ch + "/messages?key=" + k1 + "&ack=all", with("Content-Type", "application/json"), `{}`, 400},
		{"no content type", "POST", messages, ch + "/messages?key=" + k1, good, `x`, 415},
		{"too large", "POST", messages, ch + "/messages?key=" + k1, with("Content-Type", "text/plain"), strings.Repeat("x", 2000), 413},
		{"other shard", "POST", messages, ch + "/messages?key=" + otherShardKey, with("Content-Type", "text/plain"), "x", 421},
		{"no token", "POST", messages, ch + "/messages?key=" + k1, map[string]string{"Content-Type": "text/plain"}, "x", 401},
		{"other namespace", "POST", messages, ch + "/messages?key=" + k1, map[string]string{"Content-Type": "text/plain", "Authorization": "Bearer other"}, "x", 403},
		{"unknown channel", "POST", messages, "/v1/channels/nope/messages?key=" + k1, with("Content-Type", "text/plain"), "x", 404},
		{"GET messages", "GET", messages, ch + "/messages", good, "", 405},
		{"bad cursor", "GET", events, ch + "/events?since=yesterday", good, "", 400},
		{"stream of other shard", "GET", events, ch + "/events?key=" + otherShardKey, good, "", 421},
		{"replay without cursor", "GET", events, ch + "/events?live=false", good, "", 400},
		{"plain GET of ws", "GET", ws, ch + "/ws", good, "", 426},
		{"ws of another version", "GET", ws, ch + "/ws", with("Connection", "Upgrade", "Upgrade", "websocket", "Sec-WebSocket-Version", "8", "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), "", 426},
		{"ws without a key", "GET", ws, ch + "/ws", with("Connection", "Upgrade", "Upgrade", "websocket", "Sec-WebSocket-Version", "13"), "", 400},
		{"bad interest", "GET", events, ch + "/events?interest=most", good, "", 400},
		{"change of no stream", "POST", "/v1/channels/{channel}/streams/{stream}", ch + "/streams/nope", with("Content-Type", "application/json"), `{"seq":1}`, 404},
		{"shard map", "GET", "/v1/channels/{channel}/shards", ch + "/shards", nil, "", 200},
		{"healthz", "GET", "/healthz", "/healthz", nil, "", 200},
		{"readyz", "GET", "/readyz", "/readyz", nil, "", 200},
		{"metrics", "GET", "/metrics", "/metrics", nil, "", 200},
		{"openapi", "GET", "/v1/openapi.yaml", "/v1/openapi.yaml", nil, "", 200},
		{"asyncapi", "GET", "/v1/asyncapi.yaml", "/v1/asyncapi.yaml", nil, "", 200},
	} {
		if c.name == "readyz" {
			r.WaitReady(t, 10*time.Second)
		}
		if code, _ := call(c.method, c.template, c.path, c.header, c.body); code != c.want {
			t.Fatalf("%s: %d, want %d", c.name, code, c.want)
		}
	}

	// Streams: an SSE stream resuming from a cursor ahead of the stream (a gap, then messages)
	// and a WebSocket; every event they send fits asyncapi.yaml.
	sse := relaytest.OpenSSE(t, r.URL+ch+"/events?since=99999999999999-0", relaytest.SSEOptions{Header: http.Header{"Authorization": {"Bearer good"}}})
	if gap, err := sse.Next(10 * time.Second); err != nil || gap.Event != "gap" {
		t.Fatalf("want a cursor-ahead gap first: %+v, %v", gap, err)
	} else {
		spec.CheckEvent(t, []byte(gap.Data), true)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, strings.Replace(r.URL, "http", "ws", 1)+ch+"/ws",
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer good"}}, Subprotocols: []string{stream.CloudEventsSubprotocol}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	spec.CheckResponse(t, "GET", ws, resp, nil)
	if code, _ := call("GET", events, ch+"/events", good, ""); code != http.StatusTooManyRequests {
		t.Fatalf("a third stream of the caller: %d, want 429", code)
	}
	if code, _ := call("GET", ws, ch+"/ws", with("Connection", "Upgrade", "Upgrade", "websocket", "Sec-WebSocket-Version", "13",
		"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==", "Origin", "https://elsewhere.example"), ""); code != http.StatusForbidden {
		t.Fatalf("a WebSocket from a foreign origin: %d, want 403", code)
	}
	r.MustPublishWith(t, k1, `{"n":4}`, "Authorization", "Bearer good", "Ce-Tenant", "acme", "Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	for _, ev := range sse.Messages(t, 1, 10*time.Second) {
		spec.CheckEvent(t, []byte(ev.Data), false)
	}
	_, frame, err := conn.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	spec.CheckEvent(t, frame, false)

	// An interest stream, and changes to it (the caller's two streams end first).
	sse.Close()
	conn.CloseNow()
	var interest *relaytest.SSE
	relaytest.Eventually(t, 10*time.Second, "room for another stream", func() bool {
		code, _ := call("GET", events, ch+"/events?live=false&since=0-0", good, "")
		return code == http.StatusOK
	})
	interest = relaytest.OpenSSE(t, r.URL+ch+"/events?interest=keys&key="+k1, relaytest.SSEOptions{Header: http.Header{"Authorization": {"Bearer good"}}})
	hello, err := interest.Next(10 * time.Second)
	id, ok := strings.CutPrefix(hello.Comment, "stream ")
	if err != nil || !ok {
		t.Fatalf("the interest stream opens with %+v, %v", hello, err)
	}
	change := "/v1/channels/{channel}/streams/{stream}"
	for _, c := range []struct {
		name, contentType, body string
		want                    int
	}{
		{"change", "application/json", `{"seq":1,"all":true,"add":["` + k1 + `"]}`, 200},
		{"change of another shard's key", "application/json", `{"seq":2,"add":["` + otherShardKey + `"]}`, 421},
		{"change not in JSON", "text/plain", `x`, 415},
		{"malformed change", "application/json", `{"seq":-1}`, 400},
	} {
		if code, _ := call("POST", change, ch+"/streams/"+id, with("Content-Type", c.contentType), c.body); code != c.want {
			t.Fatalf("%s: %d, want %d", c.name, code, c.want)
		}
	}
}
