package httpapi

import (
	"context"
	"errors"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/heraldhq/herald/relay/cursor"
	"github.com/heraldhq/herald/relay/event"
	"github.com/heraldhq/herald/relay/hub"
	"github.com/heraldhq/herald/relay/watch"
)

// A live SSE stream of a shard relay outlives its HTTP handler. After the replay the
// connection is taken over from net/http (hijacked) and handed to the hub, whose few writer
// goroutines write each batch with a non-blocking write(2) (hub.Output). An idle subscriber
// then costs its socket and its hub entry: no goroutine (one shared watcher notices peers that
// close, package watch), no net/http buffers, so thousands of idle streams stay cheap.
// A peer whose socket buffer is full gets a goroutine of its own until it has taken the batch,
// under the write timeout; one that stays behind is closed as a slow consumer by the hub.

// sseHeader starts every hijacked stream (streamHeader adds CORS headers and the opening retry
// field). The body ends when the connection does.
const sseHeader = "HTTP/1.1 200 OK\r\n" +
	"Content-Type: text/event-stream\r\n" +
	"Cache-Control: no-cache\r\n" +
	"X-Accel-Buffering: no\r\n" +
	"Connection: close\r\n\r\n"

// sseConn is one hijacked SSE stream: a Sink (blocking writes, for the replay) and then a
// hub.Output (non-blocking writes from the hub's writers, for live events).
type sseConn struct {
	conn    net.Conn
	raw     syscall.RawConn // nil: every batch takes the blocking path
	sub     *hub.Subscriber
	timeout time.Duration
	last    cursor.ID // the newest cursor sent
	seam    bool      // live events up to last were already replayed

	// One non-blocking write: rawWrite reads pending and sets wrote and werr. writeFn is
	// rawWrite bound once, so a write allocates nothing.
	pending []byte
	wrote   int
	werr    error
	writeFn func(fd uintptr) bool

	unwatch func() // stops the watcher's calls (nil when a goroutine watches)
}

// hijackSSE takes the connection over from net/http and sends the response header; nil when
// the connection cannot be taken over (HTTP/2), in which case nothing was written.
func hijackSSE(w http.ResponseWriter, sub *hub.Subscriber, timeout time.Duration) *sseConn {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil
	}
	c := &sseConn{conn: conn, sub: sub, timeout: timeout}
	c.writeFn = c.rawWrite
	if sc, ok := conn.(syscall.Conn); ok {
		c.raw, _ = sc.SyscallConn()
	}
	// The request was read whole (a GET has no body), so what net/http's reader may still
	// buffer is nothing a subscriber needs.
	_ = conn.SetDeadline(time.Time{})
	if _, err := c.blockingWrite(streamHeader(w)); err != nil {
		c.close()
		return nil
	}
	return c
}

// live hands the stream to the hub's writers and watches the peer.
func (c *sseConn) live() {
	c.watchPeer()
	c.sub.Push(c)
}

// watchPeer closes the subscriber once the peer closes (an SSE client sends nothing after its
// request), so it leaves the hub at once rather than at the next failed write. The shared
// watcher does it without a goroutine per stream; without one, a goroutine waits in Read.
func (c *sseConn) watchPeer() {
	if c.raw != nil {
		if remove, err := watch.Default.Add(c.raw, c.peerReady); err == nil {
			c.unwatch = remove
			return
		}
	}
	go func() {
		var b [16]byte
		for {
			if _, err := c.conn.Read(b[:]); err != nil {
				c.sub.Close()
				return
			}
		}
	}()
}

// peerReady runs on the watcher's goroutine when the peer sent something or went away: it
// discards what was sent and closes the subscriber at the end of input.
func (c *sseConn) peerReady() {
	if gone := discardInput(c.raw); gone {
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
func (c *sseConn) Write(_ context.Context, batch []*event.Encoded) error {
	bp := sseBuffers.Get().(*[]byte)
	defer sseBuffers.Put(bp)
	return frameBatch((*bp)[:0], batch, c.blockingWrite)
}

// Close ends the stream during the replay with a reason (Sink).
func (c *sseConn) Close(reason, _ string, _ bool) {
	_, _ = c.blockingWrite(closingComment(reason))
}

// Send writes a live batch without waiting for the peer (hub.Output).
func (c *sseConn) Send(batch []*event.Encoded) bool {
	kept := skipReplayed(batch, &c.last, &c.seam)
	bp := sseBuffers.Get().(*[]byte)
	buf := (*bp)[:0]
	defer sseBuffers.Put(bp)
	for i, e := range kept {
		if len(buf) > 0 && len(buf)+len(e.SSE) > sseWriteBytes {
			if ok, handedOff := c.tryFlush(buf, kept[i:], batch); !ok {
				return !handedOff
			}
			buf = buf[:0]
		}
		buf = append(buf, e.SSE...) // an event over the buffer size goes alone
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
func (c *sseConn) tryFlush(buf []byte, rest, batch []*event.Encoded) (ok, handedOff bool) {
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
func (c *sseConn) finish(left []byte, rest, batch []*event.Encoded) {
	err := c.waitWrite(func() error {
		if _, err := c.conn.Write(left); err != nil {
			return err
		}
		return frameBatch(make([]byte, 0, sseWriteBytes), rest, c.conn.Write)
	})
	if err != nil {
		c.sub.Close()
	}
	c.sub.Resume(batch)
}

// End closes the connection; a slow consumer, or a subscriber of a relay that lost Redis, is
// told why and where to resume (hub.Output), waiting for it on a goroutine of its own under the
// write timeout if its socket is full.
func (c *sseConn) End(err error) {
	var why string
	switch {
	case errors.Is(err, hub.ErrSlowConsumer):
		why = SlowConsumerReason(c.last.String())
	case errors.Is(err, hub.ErrUpstreamLost):
		why = UpstreamLostReason(c.last.String())
	}
	if why != "" {
		reason := closingComment(why)
		if n, full, err := c.tryWrite(reason); full && err == nil {
			go func() {
				_, _ = c.blockingWrite(reason[n:])
				c.close()
			}()
			return
		}
	}
	c.close()
}

// close ends the connection and the subscriber (it unregisters one the hub closed as slow).
func (c *sseConn) close() {
	if c.unwatch != nil {
		c.unwatch()
	}
	_ = c.conn.Close()
	c.sub.Close()
}

// tryWrite writes what the socket takes now: full reports that the peer's socket buffer
// filled before all of b went out (n bytes did).
func (c *sseConn) tryWrite(b []byte) (n int, full bool, err error) {
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
func (c *sseConn) rawWrite(fd uintptr) bool {
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
func (c *sseConn) blockingWrite(b []byte) (int, error) {
	var n int
	err := c.waitWrite(func() (err error) { n, err = c.conn.Write(b); return err })
	return n, err
}

// waitWrite runs write under the write timeout and clears the deadline after, since a
// deadline left in the past would fail the next non-blocking write too.
func (c *sseConn) waitWrite(write func() error) error {
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

// frameBatch copies a batch's SSE frames into buf, writing it whenever the next frame would
// not fit (a frame larger than the buffer is written on its own, from the shared bytes).
func frameBatch(buf []byte, batch []*event.Encoded, write func([]byte) (int, error)) error {
	for _, e := range batch {
		if len(buf) > 0 && len(buf)+len(e.SSE) > sseWriteBytes {
			if _, err := write(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
		if len(e.SSE) > sseWriteBytes {
			if _, err := write(e.SSE); err != nil {
				return err
			}
			continue
		}
		buf = append(buf, e.SSE...)
	}
	if len(buf) > 0 {
		_, err := write(buf)
		return err
	}
	return nil
}
