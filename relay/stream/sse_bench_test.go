package stream_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/relay/cursor"
	"github.com/heraldhq/herald/relay/event"
	"github.com/heraldhq/herald/relay/hub"
	"github.com/heraldhq/herald/relay/stream"
)

// benchEvent is a 256-byte JSON message encoded as a relay encodes it (about 600 bytes of SSE).
func benchEvent(seq uint64) *event.Encoded {
	enc := event.NewEncoder("bench", "bench", 0)
	return enc.Encode(event.Message{ID: cursor.ID{Ms: 1712345678901, Seq: seq}, Key: "k", Type: event.DefaultType,
		ContentType: "application/json", Data: `{"pad":"` + strings.Repeat("x", 246) + `"}`})
}

// sseServer serves every GET with a live hub subscriber: pushed, as a shard relay's live
// streams are (hijacked, written by the hub's writers), or pumped by its own goroutine (Next,
// then one Sink.Write per batch), as a stream that cannot be taken over is.
func sseServer(b *testing.B, h *hub.Hub, pushed bool) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sub := h.Subscribe("")
		if !pushed {
			stream.ServePulledSSE(w, r, sub)
			return
		}
		if err := stream.ServeLive(w, r, sub); err != nil {
			b.Error(err)
		}
	}))
	b.Cleanup(srv.Close)
	return srv
}

// rawSSEClient opens an SSE stream with a hand-written request and counts the bytes of the body
// with a fixed buffer, so the client allocates nothing while it reads.
func rawSSEClient(b *testing.B, url string, got *atomic.Int64, wg *sync.WaitGroup) net.Conn {
	addr := strings.TrimPrefix(url, "http://")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	fmt.Fprintf(c, "GET /events HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n", addr)
	rd := bufio.NewReaderSize(c, 64<<10)
	for { // status line and headers
		line, err := rd.ReadSlice('\n')
		if err != nil {
			b.Fatal(err)
		}
		if len(line) <= 2 {
			break
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 64<<10)
		for {
			n, err := rd.Read(buf)
			got.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	return c
}

// BenchmarkSSEWrite is SSE framing on the wire: one batch of 16 encoded events written to a
// real loopback connection (pushed: one non-blocking write; goroutine: the SSE sink's write
// deadline, write and flush). Reported per event.
func BenchmarkSSEWrite(b *testing.B) {
	for _, pushed := range []bool{true, false} {
		b.Run(mode(pushed), func(b *testing.B) { benchSSEPath(b, 1, 16, pushed) })
	}
}

// BenchmarkSSEPathFanOut is the whole fan-out path per delivery: hub.Broadcast to N
// subscribers, written onto loopback TCP connections read by clients that allocate nothing,
// either by the hub's writers (pushed, the shard relay's live path) or by one goroutine per
// subscriber (the sidecar's path). allocs/delivery counts the server side per subscriber per
// message; compare the two modes of one run.
func BenchmarkSSEPathFanOut(b *testing.B) {
	for _, pushed := range []bool{true, false} {
		for _, n := range []int{100, 1000} {
			b.Run(fmt.Sprintf("%s/subscribers=%d", mode(pushed), n), func(b *testing.B) { benchSSEPath(b, n, 1, pushed) })
		}
	}
}

func mode(pushed bool) string {
	if pushed {
		return "pushed"
	}
	return "goroutine"
}

func benchSSEPath(b *testing.B, n, perOp int, pushed bool) {
	h := hub.New(64 << 20)
	defer h.Close()
	srv := sseServer(b, h, pushed)
	var got atomic.Int64
	var wg sync.WaitGroup
	conns := make([]net.Conn, n)
	for i := range conns {
		conns[i] = rawSSEClient(b, srv.URL, &got, &wg)
	}
	for h.Subscribers() < int64(n) {
		time.Sleep(time.Millisecond)
	}
	e := benchEvent(1)
	frame := int64(len(e.SSE))
	// Warm up: buffers, queues and pools reach their working size.
	for range 64 {
		h.Broadcast(e)
	}
	for got.Load() < 64*frame*int64(n) {
		time.Sleep(time.Millisecond)
	}
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	start := got.Load()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for range perOp {
			h.Broadcast(e)
		}
	}
	want := start + int64(b.N)*int64(perOp)*frame*int64(n)
	deadline := time.Now().Add(60 * time.Second)
	for got.Load() < want && time.Now().Before(deadline) {
		time.Sleep(100 * time.Microsecond)
	}
	b.StopTimer()
	runtime.ReadMemStats(&ms1)
	if got.Load() < want {
		b.Fatalf("%d of %d bytes arrived", got.Load()-start, want-start)
	}
	deliveries := float64(b.N) * float64(perOp) * float64(n)
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/deliveries, "allocs/delivery")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/deliveries, "ns/delivery")
	for _, c := range conns {
		c.Close()
	}
	srv.CloseClientConnections()
	wg.Wait()
}
