package sidecar_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/heraldhq/herald/internal/testing/relaytest"
)

// openRawSSE opens an SSE stream with a client that has no goroutine of its own.
func openRawSSE(t *testing.T, url string) *bufio.Reader {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	conn, err := net.Dial("tcp", req.URL.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %v %v", url, resp, err)
	}
	return br
}

// Local subscribers of a sidecar are served by its hubs' writers like a shard relay's: an idle
// SSE or WebSocket subscriber holds no goroutine, and both get their events.
func TestIdleLocalSubscribersHoldNoGoroutine(t *testing.T) {
	c := relaytest.StartChannel(t, relaytest.Options{Shards: 2}, 1)
	sc := startSidecar(t, c, "")
	wsURL := strings.Replace(sc.channelURL("/ws?key=k1"), "http://", "ws://", 1)

	// Warm up: the first streams open the upstreams and start the writers.
	openRawSSE(t, sc.channelURL("/events"))
	relaytest.Eventually(t, 10*time.Second, "the first subscriber", func() bool { return sc.metric(t, "herald_relay_sidecar_subscribers") == 1 })
	before := runtime.NumGoroutine()
	const each = 100
	var sse []*bufio.Reader
	var wss []net.Conn
	for i := range each {
		sse = append(sse, openRawSSE(t, sc.channelURL(fmt.Sprint("/events?key=k", i%2))))
		conn, _, _, err := ws.Dialer{}.Dial(context.Background(), wsURL)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		wss = append(wss, conn)
	}
	relaytest.Eventually(t, 10*time.Second, "every subscriber registered", func() bool {
		return sc.metric(t, "herald_relay_sidecar_subscribers") == 2*each+1
	})
	if grown := runtime.NumGoroutine() - before; grown > 20 {
		t.Fatalf("%d idle local subscribers added %d goroutines, want none each", 2*each, grown)
	}

	if code, p := sc.publish(t, "k1", `{"n":1}`); code != http.StatusAccepted {
		t.Fatalf("publish: %d %+v", code, p)
	}
	for _, br := range []*bufio.Reader{sse[1], sse[each-1]} {
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasPrefix(line, "data: ") {
				if !strings.Contains(line, `"n":1`) {
					t.Fatalf("an SSE subscriber of k1 got %q", line)
				}
				break
			}
		}
	}
	for _, conn := range []net.Conn{wss[0], wss[each-1]} {
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		b, op, err := wsutil.ReadServerData(conn)
		if err != nil || op != ws.OpText || !strings.Contains(string(b), `"n":1`) {
			t.Fatalf("a WebSocket subscriber of k1 got %v %q %v", op, b, err)
		}
	}
	// A WebSocket ping is answered through the sidecar too.
	if err := wsutil.WriteClientMessage(wss[0], ws.OpPing, []byte("are you there")); err != nil {
		t.Fatal(err)
	}
	_ = wss[0].SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		h, err := ws.ReadHeader(wss[0])
		if err != nil {
			t.Fatal(err)
		}
		payload := make([]byte, h.Length)
		if _, err := io.ReadFull(wss[0], payload); err != nil {
			t.Fatal(err)
		}
		if h.OpCode == ws.OpPong {
			if string(payload) != "are you there" {
				t.Fatalf("pong %q", payload)
			}
			break
		}
	}
}
