package relay_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/heraldhq/herald/internal/testing/relaytest"
)

// dialRaw opens a WebSocket to the relay with a client that has no goroutine of its own and
// lets the test write any frame.
func dialRaw(t *testing.T, r *relaytest.Relay, path string) (net.Conn, *bufio.Reader) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, br, _, err := ws.Dialer{}.Dial(ctx, strings.Replace(r.ChannelURL(path), "http://", "ws://", 1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if br == nil {
		br = bufio.NewReader(conn)
	}
	return conn, br
}

// closeOf reads frames until a close frame and returns its code and reason.
func closeOf(t *testing.T, conn net.Conn, br *bufio.Reader) (ws.StatusCode, string) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		h, err := ws.ReadHeader(br)
		if err != nil {
			t.Fatalf("no close frame: %v", err)
		}
		payload := make([]byte, h.Length)
		if _, err := io.ReadFull(br, payload); err != nil {
			t.Fatal(err)
		}
		if h.OpCode == ws.OpClose {
			return ws.ParseCloseFrameData(payload)
		}
	}
}

// The relay's WebSocket streams follow RFC 6455 on the hub's writers: pings are answered, a
// client's close is echoed, a message from a subscriber or a malformed frame ends the stream
// with 1008 or 1002, and an idle stream holds no goroutine.
func TestWebSocketStreamsSpeakTheProtocolWithoutAGoroutineEach(t *testing.T) {
	r := relaytest.StartRelay(t, relaytest.Options{})

	// A library client pings while it reads events.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, strings.Replace(r.ChannelURL("/ws"), "http://", "ws://", 1), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	frames := make(chan string, 1)
	go func() {
		_, b, err := c.Read(ctx)
		if err == nil {
			frames <- string(b)
		}
	}()
	relaytest.Eventually(t, 5*time.Second, "the stream to go live", func() bool { return r.Hub().Subscribers() == 1 })
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	id := r.MustPublish(t, "k", `{"n":1}`)
	if got := <-frames; !strings.Contains(got, id) {
		t.Fatalf("after the pong came %q, want the event %s", got, id)
	}
	c.Close(websocket.StatusNormalClosure, "")
	relaytest.Eventually(t, 5*time.Second, "the stream to leave", func() bool { return r.Hub().Subscribers() == 0 })

	for _, tc := range []struct {
		name  string
		send  func(net.Conn) error
		code  ws.StatusCode
		about string
	}{
		{"the client closes", func(c net.Conn) error {
			return wsutil.WriteClientMessage(c, ws.OpClose, ws.NewCloseFrameBody(4000, "bye"))
		}, 4000, ""},
		{"the client sends a message", func(c net.Conn) error { return wsutil.WriteClientText(c, []byte("hello")) },
			ws.StatusPolicyViolation, "send no messages"},
		{"the client does not mask", func(c net.Conn) error { return ws.WriteFrame(c, ws.NewPingFrame([]byte("x"))) },
			ws.StatusProtocolError, "mask"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, br := dialRaw(t, r, "/ws")
			relaytest.Eventually(t, 5*time.Second, "the stream to go live", func() bool { return r.Hub().Subscribers() == 1 })
			if err := tc.send(conn); err != nil {
				t.Fatal(err)
			}
			if code, reason := closeOf(t, conn, br); code != tc.code || !strings.Contains(reason, tc.about) {
				t.Fatalf("closed with %d %q, want %d about %q", code, reason, tc.code, tc.about)
			}
			relaytest.Eventually(t, 5*time.Second, "the stream to leave", func() bool { return r.Hub().Subscribers() == 0 })
		})
	}

	// 200 idle streams: no goroutine each (the clients have none either).
	before := runtime.NumGoroutine()
	for range 200 {
		dialRaw(t, r, "/ws")
	}
	relaytest.Eventually(t, 10*time.Second, "200 live streams", func() bool { return r.Hub().Subscribers() == 200 })
	if grown := runtime.NumGoroutine() - before; grown > 20 {
		t.Fatalf("200 idle WebSocket streams added %d goroutines, want none each", grown)
	}
}

// A client that pings without reading cannot grow the relay: it holds at most one unsent pong
// in its queue, and past its budget of control frames its stream ends with 1008. Other
// subscribers keep getting their events.
func TestAPingFloodEndsTheStreamAndCostsOthersNothing(t *testing.T) {
	r := relaytest.StartRelay(t, relaytest.Options{})
	other := relaytest.OpenSSE(t, r.ChannelURL("/events"), relaytest.SSEOptions{})
	conn, br := dialRaw(t, r, "/ws")
	relaytest.Eventually(t, 5*time.Second, "both streams to go live", func() bool { return r.Hub().Subscribers() == 2 })

	// The flood: large pings as fast as the socket takes them, without reading a pong; a
	// bounded count, and it stops as soon as the relay closes the connection.
	payload := strings.Repeat("p", 125)
	sent := 0
	_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	for ; sent < 20_000; sent++ {
		if err := wsutil.WriteClientMessage(conn, ws.OpPing, []byte(payload)); err != nil {
			break
		}
	}
	pongs := 0
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		h, err := ws.ReadHeader(br)
		if err != nil {
			t.Fatalf("after %d pings and %d pongs, no close frame: %v", sent, pongs, err)
		}
		body := make([]byte, h.Length)
		if _, err := io.ReadFull(br, body); err != nil {
			t.Fatal(err)
		}
		if h.OpCode == ws.OpPong {
			pongs++
			continue
		}
		if h.OpCode != ws.OpClose {
			continue
		}
		code, reason := ws.ParseCloseFrameData(body)
		if code != ws.StatusPolicyViolation || !strings.Contains(reason, "control frames") {
			t.Fatalf("the flood ended with %d %q, want 1008 about control frames", code, reason)
		}
		break
	}
	if pongs > 64 {
		t.Fatalf("the relay answered %d of %d pings, want at most its budget of 64", pongs, sent)
	}
	relaytest.Eventually(t, 5*time.Second, "the flooding stream to leave", func() bool { return r.Hub().Subscribers() == 1 })

	id := r.MustPublish(t, "k", `{"n":1}`)
	if ev := nextFrame(t, other); ev.ID != id {
		t.Fatalf("the other subscriber got %+v, want the event %s", ev, id)
	}
}
