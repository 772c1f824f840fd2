package stream

import (
	"context"
	"errors"
	"net"
	"syscall"
	"time"

	"github.com/heraldhq/herald/relay/event"
	"github.com/heraldhq/herald/relay/hub"
	"github.com/heraldhq/herald/relay/watch"
)

// A live stream, SSE or WebSocket, of a shard relay or a sidecar outlives its HTTP handler. The connection
// is taken over from net/http (hijacked), the replay is written from the handler, and then the
// stream is handed to the hub, whose few writer goroutines write each batch with a non-blocking
// write(2) (hub.Output). An idle subscriber then costs its socket and its hub entry: no
// goroutine (one shared watcher notices peers that close or send a control frame, package
// watch), no net/http buffers, so thousands of idle streams stay cheap. A peer whose socket
// buffer is full gets a goroutine of its own until it has taken the batch, under the write
// timeout; one that stays behind is closed as a slow consumer by the hub. SSE and WebSocket
// differ only in their framer: how an event, a heartbeat and the end look on the wire.

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
	input(c *conn) (end bool)
}

// conn is one hijacked stream: a Sink (blocking writes, for the replay) and then a
// hub.Output (non-blocking writes from the hub's writers, for live events).
type conn struct {
	framer
	nc      net.Conn
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

	src Source // set by goLive: filters live batches, says where the subscriber is at the end
}

func newConn(nc net.Conn, f framer, sub *hub.Subscriber, timeout time.Duration) *conn {
	c := &conn{framer: f, nc: nc, sub: sub, timeout: timeout}
	c.writeFn = c.rawWrite
	if sc, ok := nc.(syscall.Conn); ok {
		c.raw, _ = sc.SyscallConn()
	}
	_ = nc.SetDeadline(time.Time{})
	return c
}

// goLive hands the stream to the hub's writers and watches the peer: src filters each live
// batch (on the writers, one batch at a time) and says where the subscriber is at the end.
func (c *conn) goLive(src Source) {
	c.src = src
	c.watchPeer()
	c.sub.Push(c)
}

// watchPeer closes the subscriber once the peer closes, and hands what the peer sends to the
// framer, so it leaves the hub at once rather than at the next failed write. The shared watcher
// does it without a goroutine per stream; without one, a goroutine waits in Read.
func (c *conn) watchPeer() {
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
				if _, err := c.nc.Read(b[:]); err != nil {
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
func (c *conn) peerReady() {
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
func (c *conn) Write(_ context.Context, batch []*event.Encoded) error {
	bp := buffers.Get().(*[]byte)
	defer buffers.Put(bp)
	return frameBatch(c.framer, (*bp)[:0], batch, c.blockingWrite)
}

// Close ends the stream during the replay with a reason (Sink).
func (c *conn) Close(reason, last string, slow bool) {
	_, _ = c.blockingWrite(c.closing(reason, last, slow))
}

// Send writes a live batch without waiting for the peer (hub.Output).
func (c *conn) Send(batch []*event.Encoded) bool {
	kept := c.src.Filter(batch)
	bp := buffers.Get().(*[]byte)
	buf := (*bp)[:0]
	defer buffers.Put(bp)
	for i, e := range kept {
		if len(buf) > 0 && len(buf)+e.Size() > writeBytes {
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
func (c *conn) tryFlush(buf []byte, rest, batch []*event.Encoded) (ok, handedOff bool) {
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
func (c *conn) finish(left []byte, rest, batch []*event.Encoded) {
	err := c.waitWrite(func() error {
		if _, err := c.nc.Write(left); err != nil {
			return err
		}
		return frameBatch(c.framer, make([]byte, 0, writeBytes), rest, c.nc.Write)
	})
	if err != nil {
		c.sub.Close()
	}
	c.sub.Resume(batch)
}

// End closes the connection; a slow consumer, or a subscriber of a relay that lost Redis, is
// told why and where to resume (hub.Output), waiting for it on a goroutine of its own under the
// write timeout if its socket is full.
func (c *conn) End(err error) {
	if msg := c.ending(err, c.src.Cursor()); msg != nil {
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
func (c *conn) close() {
	if c.unwatch != nil {
		c.unwatch()
	}
	_ = c.nc.Close()
	c.sub.Close()
}

// tryWrite writes what the socket takes now: full reports that the peer's socket buffer
// filled before all of b went out (n bytes did).
func (c *conn) tryWrite(b []byte) (n int, full bool, err error) {
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
func (c *conn) rawWrite(fd uintptr) bool {
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
func (c *conn) blockingWrite(b []byte) (int, error) {
	var n int
	err := c.waitWrite(func() (err error) { n, err = c.nc.Write(b); return err })
	return n, err
}

// waitWrite runs write under the write timeout and clears the deadline after, since a
// deadline left in the past would fail the next non-blocking write too.
func (c *conn) waitWrite(write func() error) error {
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.timeout))
	err := write()
	_ = c.nc.SetWriteDeadline(time.Time{})
	return err
}

// frameBatch frames a batch into buf, writing it whenever the next event would not fit (an
// event larger than the buffer is written on its own).
func frameBatch(f framer, buf []byte, batch []*event.Encoded, write func([]byte) (int, error)) error {
	for _, e := range batch {
		if len(buf) > 0 && len(buf)+e.Size() > writeBytes {
			if _, err := write(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
		buf = f.appendEvent(buf, e)
		if len(buf) > writeBytes {
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
