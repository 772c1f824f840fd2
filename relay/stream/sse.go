package stream

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald/relay/event"
	"github.com/heraldhq/herald/relay/hub"
)

// retryField opens every SSE stream: the reconnection delay (milliseconds) an EventSource waits
// after the stream breaks before it reconnects with Last-Event-ID. It is 1.5 to 3 s, drawn per
// stream, so that the clients of a relay or an edge that went away do not all come back in the
// same instant.
func retryField() string { return "retry: " + strconv.Itoa(1500+rand.IntN(1500)) + "\n\n" }

// sseHeader starts every hijacked stream (streamHeader adds the headers set on the writer and
// the opening retry field). The body ends when the connection does.
const sseHeader = "HTTP/1.1 200 OK\r\n" +
	"Content-Type: text/event-stream\r\n" +
	"Cache-Control: no-cache\r\n" +
	"X-Accel-Buffering: no\r\n" +
	"Connection: close\r\n\r\n"

// hijackSSE takes an SSE stream's connection over from net/http and sends the response
// header (unless a held stream sent it already). A nil stream: the connection cannot be taken
// over (HTTP/2) and nothing was written, or, with done, writing the header failed and the
// connection is closed.
func hijackSSE(w http.ResponseWriter, sub *hub.Subscriber, timeout time.Duration) (c *conn, done bool) {
	held, started := w.(*heldSSE)
	if started {
		w = held.ResponseWriter
	}
	nc, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, false
	}
	// The request was read whole (a GET has no body), so what net/http's reader may still
	// buffer is nothing a subscriber needs.
	c = newConn(nc, sseFramer{}, sub, timeout)
	if started {
		return c, false
	}
	if _, err := c.blockingWrite(streamHeader(w)); err != nil {
		c.close()
		return nil, true
	}
	return c, false
}

// streamHeader is the response header of a hijacked SSE stream, with the headers a handler
// set on w for it (CORS, Vary, Herald-*), and the stream's opening retry field.
func streamHeader(w http.ResponseWriter) []byte {
	var b bytes.Buffer
	b.WriteString(sseHeader[:len(sseHeader)-2])
	for name, values := range w.Header() {
		if !strings.HasPrefix(name, "Access-Control-") && name != "Vary" && !strings.HasPrefix(name, "Herald-") {
			continue
		}
		for _, v := range values {
			b.WriteString(name + ": " + v + "\r\n")
		}
	}
	b.WriteString("\r\n" + retryField())
	return b.Bytes()
}

// startSSE answers 200 text/event-stream, opens the stream with its retry field and flushes.
func startSSE(w http.ResponseWriter) error {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	// An event stream ends only when the connection does, so HTTP/1.1 chunking buys nothing
	// here and costs on every flush: a chunk header formatted with fmt.Fprintf (one allocation
	// per chunk) and extra copies. "identity" makes net/http send the body as is and close the
	// connection after it (HTTP/2 ignores the header). See docs/performance.md.
	h.Set("Transfer-Encoding", "identity")
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write([]byte(retryField())); err != nil {
		return err
	}
	return http.NewResponseController(w).Flush()
}

// sseSink writes an SSE stream through net/http (a stream that could not be taken over).
type sseSink struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	armed   time.Time // when the write deadline was last set
}

// writeBytes bounds the scratch buffer one batch is copied into: a batch goes out in as few
// writes of at most this size as it can (one syscall each), not one small write per event.
const writeBytes = 32 << 10

// buffers holds the scratch buffers of batch writes; an idle subscriber holds none.
var buffers = sync.Pool{New: func() any { b := make([]byte, 0, writeBytes); return &b }}

// Write sends a batch with one flush under one write deadline: the events are copied into one
// pooled buffer and written together (the shared event bytes are only read).
func (o *sseSink) Write(_ context.Context, batch []*event.Encoded) error {
	o.armDeadline()
	bp := buffers.Get().(*[]byte)
	err := frameBatch(sseFramer{}, (*bp)[:0], batch, o.w.Write)
	buffers.Put(bp)
	if err != nil {
		return err
	}
	return o.rc.Flush()
}

// armDeadline sets the write deadline of a batch. Setting it costs a timer update in the
// runtime poller, so a deadline set less than a quarter of the timeout ago is kept: every
// batch is still bounded by between 3/4 of the timeout and the timeout.
func (o *sseSink) armDeadline() {
	now := time.Now()
	if now.Sub(o.armed) < o.timeout/4 {
		return
	}
	o.armed = now
	_ = o.rc.SetWriteDeadline(now.Add(o.timeout))
}

func (o *sseSink) Close(reason, _ string, _ bool) {
	o.armed = time.Now()
	_ = o.rc.SetWriteDeadline(o.armed.Add(o.timeout))
	_, _ = o.w.Write(closingComment(reason))
	_ = o.rc.Flush()
}

func closingComment(reason string) []byte {
	if reason == EndOfReplay {
		return []byte(": " + EndOfReplay + "\n\n")
	}
	return []byte(": closed: " + oneLine(reason) + "\n\n")
}

// sseFramer frames Server-Sent Events: every event is its SSE bytes as encoded.
type sseFramer struct{}

func (sseFramer) appendEvent(dst []byte, e *event.Encoded) []byte { return append(dst, e.SSE...) }

func (sseFramer) ending(err error, last string) []byte {
	switch {
	case errors.Is(err, hub.ErrSlowConsumer):
		return closingComment(SlowConsumerReason(last))
	case errors.Is(err, hub.ErrUpstreamLost):
		return closingComment(UpstreamLostReason(last))
	}
	if e, ok := errors.AsType[*Ended](err); ok {
		return closingComment(e.Reason + "; reconnect with Last-Event-ID " + last + " to resume")
	}
	return nil
}

func (sseFramer) closing(reason, _ string, _ bool) []byte { return closingComment(reason) }

// input discards what the peer sent (an SSE client sends nothing after its request) and ends
// the stream at the end of its input.
func (sseFramer) input(c *conn) bool { return discardInput(c.raw) }

// HoldSSE answers an SSE request 200 at once, for a stream that cannot start yet: an
// EventSource gives up on any other answer, while a held stream starts when ready and, if it
// must end instead, ends with a comment and is retried after the retry delay. It returns the
// writer to serve the stream with: its WriteHeader does nothing (the header is sent), and an
// error written through it becomes an SSE comment.
func HoldSSE(w http.ResponseWriter) http.ResponseWriter {
	_ = startSSE(w) // a failed write shows in the next one
	return &heldSSE{ResponseWriter: w}
}

// Comment writes an SSE comment (a line that EventSource ignores) and flushes it.
func Comment(w http.ResponseWriter, text string) error {
	if _, err := w.Write([]byte(": " + oneLine(text) + "\n\n")); err != nil {
		return err
	}
	return http.NewResponseController(w).Flush()
}

type heldSSE struct {
	http.ResponseWriter
	failed bool // an error status was written: the body becomes a comment
}

func (h *heldSSE) WriteHeader(code int) { h.failed = code != http.StatusOK }

func (h *heldSSE) Write(b []byte) (int, error) {
	if !h.failed {
		return h.ResponseWriter.Write(b)
	}
	if err := Comment(h.ResponseWriter, "error: "+string(b)); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (h *heldSSE) Unwrap() http.ResponseWriter { return h.ResponseWriter }

// oneLine keeps text on one SSE line.
func oneLine(s string) string {
	return string(bytes.Map(func(r rune) rune {
		if r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, bytes.TrimSpace([]byte(s))))
}

// WaitSSE holds an SSE stream (HoldSSE) until ready reports nil: it tries every second and
// tells the subscriber why it waits in a comment. It returns the writer to serve the stream
// with, or nil when the subscriber left first.
func WaitSSE(ctx context.Context, w http.ResponseWriter, ready func(context.Context) error) http.ResponseWriter {
	err := ready(ctx)
	if err == nil {
		return w
	}
	w = HoldSSE(w)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		if Comment(w, "waiting: "+err.Error()) != nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err = ready(ctx); err == nil {
			return w
		}
	}
}
