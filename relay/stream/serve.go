package stream

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/heraldhq/herald/relay/cursor"
	"github.com/heraldhq/herald/relay/event"
	"github.com/heraldhq/herald/relay/hub"
)

// Source is what a role knows of one subscriber: what it missed, how live events reach it and
// where it is. A shard relay's source replays its Redis stream; a sidecar's replays every shard
// from the shard relays and gives merged events the subscriber's composite cursor.
type Source interface {
	// Replay writes what the subscriber missed, and whatever must precede live events (an
	// interest stream's announcement). It returns false when the stream ended; a failure is
	// told to the subscriber with Sink.Close before it returns.
	Replay(ctx context.Context, out Sink) bool
	// Filter prepares a live batch in place (drops what the replay sent, see Advance) and
	// returns what goes out. It is called with one batch at a time, never with Cursor.
	Filter(batch []*event.Encoded) []*event.Encoded
	// Cursor is where the subscriber resumes from: the cursor of the last event it was sent.
	Cursor() string
}

// Sink writes batches of events to one subscriber connection, SSE or WebSocket, waiting for
// the peer: what a Source's replay writes to.
type Sink interface {
	// Write sends a batch (one flush, one write deadline).
	Write(ctx context.Context, batch []*event.Encoded) error
	// Close ends the stream telling the subscriber why; last is the last cursor it was sent.
	Close(reason, last string, slow bool)
}

// Admission is what a stream holds of its server's limits (a shard relay's per-caller caps):
// its replay slot, given back once the replay is over, and the stream itself, given back when
// the stream ends. Both may be called more than once.
type Admission interface {
	ReplayDone()
	Release()
}

// Protocol is the transport a subscriber asked for.
type Protocol uint8

const (
	SSE       Protocol = iota // text/event-stream (GET .../events)
	WebSocket                 // RFC 6455, one CloudEvent per text frame (GET .../ws)
)

// Options say how Serve serves one stream.
type Options struct {
	Protocol     Protocol
	WriteTimeout time.Duration // bound of one batch write. Defaults to DefaultWriteTimeout.
	ReplayOnly   bool          // end with EndOfReplay once the replay is done (?live=false)
	Admission    Admission     // nil: the stream holds nothing of any limit
	// Commands, when set, takes what a WebSocket client sends once its stream is live (an
	// edge's follow, unfollow, fresh token): each command's text, one at a time in the order
	// they came, on a goroutine of the stream's own, so it may wait; it answers with TextNotice
	// through the subscriber. Nil (shard relays, sidecars): a subscriber only listens, and one
	// that sends a message is closed with 1008.
	Commands func(text []byte)
}

// Defaults of every role's streams; flags, options and tests read them here.
const (
	// DefaultWriteTimeout bounds one batch write to a subscriber: a peer that takes no bytes
	// for that long is gone or hopelessly behind, and its connection is closed.
	DefaultWriteTimeout = 10 * time.Second
	// DefaultHeartbeat is the interval of SSE heartbeat comments and WebSocket pings: under
	// the 30 to 60 s idle timeouts of common proxies and load balancers, and frequent enough
	// that a sidecar notices a silent relay (its idle timeout is three heartbeats).
	DefaultHeartbeat = 15 * time.Second
)

// ErrCannotTakeOver is what Serve returns for a WebSocket whose connection net/http cannot hand
// over (HTTP/2 has no upgrade): nothing was written, the handler answers.
var ErrCannotTakeOver = errors.New("the connection cannot be taken over for a WebSocket (it needs HTTP/1.1)")

// EndOfReplay is the SSE comment that ends a replay-only stream (?live=false): everything
// stored after the cursor was sent. A WebSocket ends with a normal closure instead.
const EndOfReplay = "end of replay"

// Ended is an error that ends a live stream (hub.Subscriber.Stop) with a reason the subscriber
// can act on, such as a token that expired: SSE sends Reason and the cursor to resume from as
// the closing comment, WebSocket as the close frame's reason with Code.
type Ended struct {
	Reason string
	Code   uint16 // the WebSocket close code (4000-4999: an application's own)
}

func (e *Ended) Error() string { return e.Reason }

// StatusTokenExpired is the WebSocket close code of a stream whose token expired (4401 echoes
// HTTP 401): reconnect with a fresh token and ?since=<last id>.
const StatusTokenExpired = 4401

// SlowConsumerReason is what a subscriber closed as a slow consumer is told.
func SlowConsumerReason(last string) string {
	return "slow consumer: more than the queue limit was waiting for this connection; reconnect with Last-Event-ID " + last + " to resume"
}

// UpstreamLostReason is what a subscriber is told when the relay lost Redis for longer than it
// waits: another replica (the Service routes only to ready ones) serves the rest.
func UpstreamLostReason(last string) string {
	return "this relay lost its Redis subscription; reconnect with Last-Event-ID " + last + " to resume on another replica"
}

// Serve serves sub's stream from src, its whole life: it takes the connection over from
// net/http (a GET; HEAD and HTTP/2 SSE streams are served on the handler's goroutine
// instead), writes the replay, then hands the stream to sub's hub, whose writers push live
// events to it until it ends, and returns. sub must be registered before the replay starts, so
// nothing published meanwhile is missed; Serve owns it from then on and closes it however the
// stream ends, giving back what o.Admission holds.
func Serve(w http.ResponseWriter, r *http.Request, sub *hub.Subscriber, src Source, o Options) error {
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.Admission != nil {
		sub.OnClose(o.Admission.Release)
	}
	if r.Method == http.MethodGet {
		c, done := takeOver(w, r, sub, o)
		switch {
		case done: // the WebSocket handshake failed and was answered, or the connection failed
			sub.Close()
			return nil
		case c != nil:
			if !o.replay(r.Context(), c, src) {
				c.close()
				return nil
			}
			c.goLive(src)
			return nil
		}
	}
	defer sub.Close()
	if o.Protocol == WebSocket {
		return ErrCannotTakeOver
	}
	out := &sseSink{w: w, rc: http.NewResponseController(w), timeout: o.WriteTimeout}
	if startSSE(w) != nil {
		return nil
	}
	o.pump(r.Context(), sub, out, src)
	return nil
}

// takeOver hijacks the connection with the transport's framer. done reports that nothing is
// left to do (a WebSocket handshake failed and was answered, or the connection failed once
// taken over); a nil stream and false: it cannot be taken over (HTTP/2), nothing was written.
func takeOver(w http.ResponseWriter, r *http.Request, sub *hub.Subscriber, o Options) (c *conn, done bool) {
	if o.Protocol == WebSocket {
		return hijackWebSocket(w, r, sub, o)
	}
	return hijackSSE(w, sub, o.WriteTimeout)
}

// replay writes what the subscriber missed and reports whether the stream goes live: a
// replay-only stream ends here, with EndOfReplay once its admission is given back (so its
// caller, told the replay is over, finds the slot free when it comes back).
func (o Options) replay(ctx context.Context, out Sink, src Source) bool {
	ok := src.Replay(ctx, out)
	if o.Admission != nil {
		o.Admission.ReplayDone()
	}
	if ok && o.ReplayOnly {
		if o.Admission != nil {
			o.Admission.Release()
		}
		out.Close(EndOfReplay, src.Cursor(), false)
		return false
	}
	return ok
}

// pump feeds a stream that could not be taken over from the handler's goroutine: the replay,
// then live events from the hub (Next), filtered, one write per batch.
func (o Options) pump(ctx context.Context, sub *hub.Subscriber, out Sink, src Source) {
	if !o.replay(ctx, out, src) {
		return
	}
	var batch []*event.Encoded
	for {
		var err error
		batch, err = sub.Next(ctx, batch)
		if err != nil {
			switch last := src.Cursor(); {
			case errors.Is(err, hub.ErrSlowConsumer):
				out.Close(SlowConsumerReason(last), last, true)
			case errors.Is(err, hub.ErrUpstreamLost):
				out.Close(UpstreamLostReason(last), last, false)
			default:
				if e, ok := errors.AsType[*Ended](err); ok {
					out.Close(e.Reason+"; reconnect with Last-Event-ID "+last+" to resume", last, false)
				}
			}
			return
		}
		kept := src.Filter(batch)
		if len(kept) == 0 {
			continue
		}
		if err := out.Write(ctx, kept); err != nil {
			return
		}
	}
}

// Advance reports whether live event e goes to a subscriber whose last event is *last, and
// moves *last to it. While *seam is set (the subscriber's replay ended at *last, and live
// events up to there were queued meanwhile) messages up to *last are dropped: the replay sent
// them. A gap or the first newer message closes the seam; after a gap IDs may legitimately go
// lower. Heartbeats and notices belong to no position: they go, and move nothing.
func Advance(e *event.Encoded, last *cursor.ID, seam *bool) bool {
	switch e.Kind {
	case event.KindHeartbeat, event.KindNotice:
		return true
	case event.KindMessage:
		if *seam && !last.Less(e.ID) {
			return false
		}
	}
	*seam = false
	*last = e.ID
	return true
}
