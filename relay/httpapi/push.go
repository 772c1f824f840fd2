package httpapi

import (
	"context"
	"errors"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/heraldhq/herald/relay/event"
	"github.com/heraldhq/herald/relay/hub"
	"github.com/heraldhq/herald/relay/watch"
)

// A live stream of a shard relay, SSE or WebSocket, outlives its HTTP handler. The connection
// is taken over from net/http (hijacked), the replay is written from the handler, and then the
// stream is handed to the hub, whose few writer goroutines write each batch with a non-blocking
// write(2) (hub.Output). An idle subscriber then costs its socket and its hub entry: no
// goroutine (one shared watcher notices peers that close or send a control frame, package
// watch), no net/http buffers, so thousands of idle streams stay cheap. A peer whose socket
// buffer is full gets a goroutine of its own until it has taken the batch, under the write
// timeout; one that stays behind is closed as a slow consumer by the hub. SSE and WebSocket
// differ only in their framer: how an event, a heartbeat and the end look on the wire.

// sseHeader starts every hijacked stream (streamHeader adds CORS headers and the opening retry
// field). The body ends when the connection does.
const sseHeader = "HTTP/1.1 200 OK\r\n" +
	"Content-Type: text/event-stream\r\n" +
	"Cache-Control: no-cache\r\n" +
	"X-Accel-Buffering: no\r\n" +
	"Connection: close\r\n\r\n"

// framer is what a transport writes: events, and the end of a stream.
type framer interface {
	// appendEvent appends e as the transport frames it (a heartbeat or notice included).
	appendEvent(dst []byte, e *event.Encoded) []byte
	// ending is what ends a stream that stops for err (hub.ErrSlowConsumer, ErrUpstreamLost,
	// ErrClosed) after cursor last; nil: nothing, just close.
	ending(err error, last string) []byte
	// closing is what ends a stream during its replay (Sink.Close).
	closing(reason, last string, slow bool) []byte
	// input handles what the peer sent (the watcher calls it); it reports whether the stream
	// must end.
	input(c *pushConn) (end bool)
}

// pushConn is one hijacked stream: a Sink (blocking writes, for the replay) and then a
// hub.Output (non-blocking writes from the hub's writers, for live events).
type pushConn struct {
	framer
	conn    net.Conn
	raw     syscall.RawConn // nil: every batch takes the blocking path
	sub     *hub.Subscriber
	timeout time.Duration

	// One non-blocking write: rawWrite reads pending and sets wrote and werr. writeFn is
	// rawWrite bound once, so a write allocates nothing.
	pending []byte
	wrote   int
	werr    error
	writeFn func(fd uintptr) bool

	unwatch func() // stops the watcher's calls (nil when a goroutine watches)

	// Set by goLive: filter prepares each live batch (drops what the replay sent, gives events
	// the subscriber's cursor) and cursor says where the subscriber is when its stream ends.
	filter func(batch []*event.Encoded) []*event.Encoded
	cursor func() string
}

// hijackSSE takes an SSE stream's connection over from net/http and sends the response
// header (unless a held stream sent it already); nil when the connection cannot be taken over
// (HTTP/2), in which case nothing was written.
func hijackSSE(w http.ResponseWriter, sub *hub.Subscriber, timeout time.Duration) *pushConn {
	held, started := w.(*heldSSE)
	if started {
		w = held.ResponseWriter
	}
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil
	}
	// The request was read whole (a GET has no body), so what net/http's reader may still
	// buffer is nothing a subscriber needs.
	c := newPushConn(conn, sseFramer{}, sub, timeout)
	if started {
		return c
	}
	if _, err := c.blockingWrite(streamHeader(w)); err != nil {
		c.close()
		return nil
	}
	return c
}

func newPushConn(conn net.Conn, f framer, sub *hub.Subscriber, timeout time.Duration) *pushConn {
	c := &pushConn{framer: f, conn: conn, sub: sub, timeout: timeout}
	c.writeFn = c.rawWrite
	if sc, ok := conn.(syscall.Conn); ok {
		c.raw, _ = sc.SyscallConn()
	}
	_ = conn.SetDeadline(time.Time{})
	return c
}

// Stream is a subscriber's connection taken over from net/http, for a sidecar to serve like a
// shard relay serves its own: write the replay through Sink, then hand it to the hub with Live.
type Stream struct{ c *pushConn }

// HijackSSE takes an SSE stream over and answers 200 (a held stream was answered already); nil
// when it cannot be taken over (HTTP/2): serve it with Streams.SSE then.
func HijackSSE(w http.ResponseWriter, sub *hub.Subscriber, timeout time.Duration) *Stream {
	if c := hijackSSE(w, sub, timeout); c != nil {
		return &Stream{c}
	}
	return nil
}

// HijackWebSocket completes a WebSocket handshake and takes the stream over. ok is false when
// the handshake failed and was answered; a nil stream with ok true means the connection cannot
// be taken over (HTTP/2): serve it with Streams.WebSocket then. The request must have passed
// Streams.RefuseWebSocket.
func HijackWebSocket(w http.ResponseWriter, r *http.Request, sub *hub.Subscriber, timeout time.Duration) (s *Stream, ok bool) {
	c, ok := hijackWebSocket(w, r, sub, timeout)
	if c == nil {
		return nil, ok
	}
	return &Stream{c}, true
}

// Sink writes the replay, waiting for the peer.
func (s *Stream) Sink() Sink { return s.c }

// Live hands the stream to the subscriber's hub: filter prepares each batch (it runs on the
// hub's writers, one batch of this subscriber at a time) and cursor names where the subscriber
// is when its stream ends.
func (s *Stream) Live(filter func(batch []*event.Encoded) []*event.Encoded, cursor func() string) {
	s.c.goLive(filter, cursor)
}

// End closes a stream that does not go live (its replay failed, or was all it asked for).
func (s *Stream) End() { s.c.close() }

// goLive hands the stream to the hub's writers and watches the peer; filter and cursor are
// the subscriber's (see the fields).
func (c *pushConn) goLive(filter func(batch []*event.Encoded) []*event.Encoded, cursor func() string) {
	c.filter, c.cursor = filter, cursor
	c.watchPeer()
	c.sub.Push(c)
}

// watchPeer closes the subscriber once the peer closes, and hands what the peer sends to the
// framer, so it leaves the hub at once rather than at the next failed write. The shared watcher
// does it without a goroutine per stream; without one, a goroutine waits in Read.
func (c *pushConn) watchPeer() {
	if c.raw != nil {
		if remove, err := watch.Default.Add(c.raw, c.peerReady); err == nil {
			c.unwatch = remove
			return
		}
	}
	go func() {
		if c.raw == nil {
			var b [16]byte
			for {
				if _, err := c.conn.Read(b[:]); err != nil {
					c.sub.Close()
					return
				}
			}
		}
		for {
			waited := false // the first call waits for input, the second lets input run
			err := c.raw.Read(func(uintptr) bool { done := waited; waited = true; return done })
			if err != nil || c.input(c) {
				c.sub.Close()
				return
			}
		}
	}()
}

// peerReady runs on the watcher's goroutine when the peer sent something or went away.
func (c *pushConn) peerReady() {
	if c.input(c) {
		c.sub.Close()
	}
}

// discardInput reads everything rc has without waiting and reports whether the peer is gone
// (end of input, or an error).
func discardInput(rc syscall.RawConn) (gone bool) {
	var buf [512]byte
	err := rc.Read(func(fd uintptr) bool {
		for {
			n, err := syscall.Read(int(fd), buf[:])
			switch {
			case n > 0:
				continue
			case err == syscall.EINTR:
				continue
			case err == syscall.EAGAIN:
			default: // n == 0: end of input; or a failed socket
				gone = true
			}
			return true
		}
	})
	return gone || err != nil
}

// Write sends a replay batch, waiting for the peer (Sink).
func (c *pushConn) Write(_ context.Context, batch []*event.Encoded) error {
	bp := sseBuffers.Get().(*[]byte)
	defer sseBuffers.Put(bp)
	return frameBatch(c.framer, (*bp)[:0], batch, c.blockingWrite)
}

// Close ends the stream during the replay with a reason (Sink).
func (c *pushConn) Close(reason, last string, slow bool) {
	_, _ = c.blockingWrite(c.closing(reason, last, slow))
}

// Send writes a live batch without waiting for the peer (hub.Output).
func (c *pushConn) Send(batch []*event.Encoded) bool {
	kept := c.filter(batch)
	bp := sseBuffers.Get().(*[]byte)
	buf := (*bp)[:0]
	defer sseBuffers.Put(bp)
	for i, e := range kept {
		if len(buf) > 0 && len(buf)+e.Size() > sseWriteBytes {
			if ok, handedOff := c.tryFlush(buf, kept[i:], batch); !ok {
				return !handedOff
			}
			buf = buf[:0]
		}
		buf = c.appendEvent(buf, e) // an event over the buffer size goes alone
	}
	if len(buf) == 0 {
		return true
	}
	_, handedOff := c.tryFlush(buf, nil, batch)
	return !handedOff
}

// tryFlush writes buf without waiting; ok reports that it all went out. When the peer's socket
// buffer is full it copies the unwritten part and, with the events not yet framed (rest),
// finishes the batch on a goroutine of its own (handedOff). A failed connection closes the
// subscriber.
func (c *pushConn) tryFlush(buf []byte, rest, batch []*event.Encoded) (ok, handedOff bool) {
	n, full, err := c.tryWrite(buf)
	if err != nil {
		c.sub.Close()
		return false, false
	}
	if !full {
		return true, false
	}
	left := append([]byte(nil), buf[n:]...)
	rest = append([]*event.Encoded(nil), rest...)
	go c.finish(left, rest, batch)
	return false, true
}

// finish sends the rest of a batch the peer was slow to take, under the write timeout, then
// hands the batch back to the hub (which then ends the stream if it was closed meanwhile).
func (c *pushConn) finish(left []byte, rest, batch []*event.Encoded) {
	err := c.waitWrite(func() error {
		if _, err := c.conn.Write(left); err != nil {
			return err
		}
		return frameBatch(c.framer, make([]byte, 0, sseWriteBytes), rest, c.conn.Write)
	})
	if err != nil {
		c.sub.Close()
	}
	c.sub.Resume(batch)
}

// End closes the connection; a slow consumer, or a subscriber of a relay that lost Redis, is
// told why and where to resume (hub.Output), waiting for it on a goroutine of its own under the
// write timeout if its socket is full.
func (c *pushConn) End(err error) {
	if msg := c.ending(err, c.cursor()); msg != nil {
		if n, full, err := c.tryWrite(msg); full && err == nil {
			go func() {
				_, _ = c.blockingWrite(msg[n:])
				c.close()
			}()
			return
		}
	}
	c.close()
}

// close ends the connection and the subscriber (it unregisters one the hub closed as slow).
func (c *pushConn) close() {
	if c.unwatch != nil {
		c.unwatch()
	}
	_ = c.conn.Close()
	c.sub.Close()
}

// tryWrite writes what the socket takes now: full reports that the peer's socket buffer
// filled before all of b went out (n bytes did).
func (c *pushConn) tryWrite(b []byte) (n int, full bool, err error) {
	if c.raw == nil {
		return 0, true, nil
	}
	c.pending, c.wrote, c.werr = b, 0, nil
	err = c.raw.Write(c.writeFn)
	c.pending = nil
	if err == nil {
		err = c.werr
	}
	if errors.Is(err, syscall.EAGAIN) {
		return c.wrote, true, nil
	}
	return c.wrote, false, err
}

// rawWrite is one non-blocking write(2) of pending (the socket is non-blocking, as every Go
// socket is); returning true tells the runtime not to wait for the socket to be writable.
func (c *pushConn) rawWrite(fd uintptr) bool {
	for c.wrote < len(c.pending) {
		n, err := syscall.Write(int(fd), c.pending[c.wrote:])
		if n > 0 {
			c.wrote += n
		}
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			c.werr = err
			return true
		}
	}
	return true
}

// blockingWrite waits for the peer under the write timeout.
func (c *pushConn) blockingWrite(b []byte) (int, error) {
	var n int
	err := c.waitWrite(func() (err error) { n, err = c.conn.Write(b); return err })
	return n, err
}

// waitWrite runs write under the write timeout and clears the deadline after, since a
// deadline left in the past would fail the next non-blocking write too.
func (c *pushConn) waitWrite(write func() error) error {
	_ = c.conn.SetWriteDeadline(time.Now().Add(c.timeout))
	err := write()
	_ = c.conn.SetWriteDeadline(time.Time{})
	return err
}

func closingComment(reason string) []byte {
	if reason == EndOfReplay {
		return []byte(": " + EndOfReplay + "\n\n")
	}
	return []byte(": closed: " + reason + "\n\n")
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
	return nil
}

func (sseFramer) closing(reason, _ string, _ bool) []byte { return closingComment(reason) }

// input discards what the peer sent (an SSE client sends nothing after its request) and ends
// the stream at the end of its input.
func (sseFramer) input(c *pushConn) bool { return discardInput(c.raw) }

// frameBatch frames a batch into buf, writing it whenever the next event would not fit (an
// event larger than the buffer is written on its own).
func frameBatch(f framer, buf []byte, batch []*event.Encoded, write func([]byte) (int, error)) error {
	for _, e := range batch {
		if len(buf) > 0 && len(buf)+e.Size() > sseWriteBytes {
			if _, err := write(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
		buf = f.appendEvent(buf, e)
		if len(buf) > sseWriteBytes {
			if _, err := write(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
	}
	if len(buf) > 0 {
		_, err := write(buf)
		return err
	}
	return nil
}
