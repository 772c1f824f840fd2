package stream

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"

	"github.com/heraldhq/herald/relay/event"
	"github.com/heraldhq/herald/relay/hub"
)

// A live WebSocket stream runs on the hub's writers like an SSE one (conn.go): the handshake
// is gobwas/ws's, and the few frames a subscriber stream needs are framed here. The server
// sends one text frame per event (its CloudEvent JSON), a ping per heartbeat and a close frame
// at the end; the client may ping (answered with a pong, in order with the events), pong and
// close. A message from the client ends the stream with 1008, as the client broke the
// protocol, unless the role takes commands (Options.Commands, an edge): then each unfragmented
// text frame of at most MaxCommandBytes is one command, handed to a goroutine of the stream's
// own that exists only while commands wait (commandQueue), so the watcher never waits for one.
// More than maxControlFrames control frames in a controlWindow end the stream with 1008 too: a
// client that pings without reading must not keep the relay answering it (only the newest
// unsent pong is kept, see hub.Subscriber.Reply); so do more than maxWaitingCommands commands
// waiting for their turn.

// CloudEventsSubprotocol is the WebSocket subprotocol of CloudEvents in JSON (the CloudEvents
// WebSocket binding): each text frame is one structured CloudEvent, as Herald sends anyway.
const CloudEventsSubprotocol = "cloudevents.json"

// StatusSlowConsumer is the WebSocket close code of a subscriber that fell too far behind
// (application range 4000-4999; 4429 echoes HTTP 429). Reconnect with ?since=<last id>.
const StatusSlowConsumer ws.StatusCode = 4429

// hijackWebSocket completes the handshake of a checked upgrade request (the handler refused
// bad origins and requests that are not upgrades first) and returns the stream. answered is
// true when the handshake failed (it was answered, or the peer is gone); nil and false: the
// connection cannot be taken over (HTTP/2).
func hijackWebSocket(w http.ResponseWriter, r *http.Request, sub *hub.Subscriber, o Options) (c *conn, answered bool) {
	if !canHijack(w) {
		return nil, false
	}
	up := ws.HTTPUpgrader{Timeout: o.WriteTimeout, Protocol: func(p string) bool { return p == CloudEventsSubprotocol }}
	nc, _, _, err := up.Upgrade(r, hijacker{w})
	if err != nil {
		if nc != nil {
			_ = nc.Close()
		}
		return nil, true
	}
	f := &wsFramer{}
	if o.Commands != nil {
		f.commands = &commandQueue{run: o.Commands, sub: sub}
	}
	return newConn(nc, f, sub, o.WriteTimeout), false
}

// hijacker lets the upgrader take over a writer that wraps net/http's own (a CORS or metrics
// middleware): http.ResponseController finds the connection through Unwrap.
type hijacker struct{ http.ResponseWriter }

func (h hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(h.ResponseWriter).Hijack()
}

// canHijack reports, without taking anything over, whether w or a writer it wraps can be
// hijacked (an HTTP/2 writer cannot).
func canHijack(w http.ResponseWriter) bool {
	for {
		if _, ok := w.(http.Hijacker); ok {
			return true
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return false
		}
		w = u.Unwrap()
	}
}

// wsFramer frames one WebSocket stream; it keeps what it needs of the peer's input.
type wsFramer struct {
	mu      sync.Mutex
	partial []byte // the start of a frame from the peer whose rest has not come yet
	code    ws.StatusCode
	reason  string // the close frame to end with, once the peer closed or broke the protocol

	window   time.Time // when the current control-frame window started
	controls int       // control frames the peer sent in it

	commands *commandQueue // nil: the role takes no commands, a message ends the stream
}

// A client may send maxControlFrames control frames (pings, pongs) per controlWindow. Clients
// ping every few seconds at most and answer the relay's heartbeat pings (one per 15 s by
// default); a burst of reconnect-time pings fits with room to spare.
const (
	maxControlFrames = 64
	controlWindow    = 10 * time.Second
)

// allowControl counts one control frame from the peer and reports whether it is within its
// budget; f.mu is held.
func (f *wsFramer) allowControl() bool {
	if now := time.Now(); now.Sub(f.window) > controlWindow {
		f.window, f.controls = now, 0
	}
	f.controls++
	return f.controls <= maxControlFrames
}

// Server frames are unmasked: the header is 2, 4 or 10 bytes.
func appendFrameHeader(dst []byte, op ws.OpCode, n int) []byte {
	b0 := 0x80 | byte(op) // FIN
	switch {
	case n < 126:
		return append(dst, b0, byte(n))
	case n < 1<<16:
		return append(dst, b0, 126, byte(n>>8), byte(n))
	default:
		return append(dst, b0, 127, byte(n>>56), byte(n>>48), byte(n>>40), byte(n>>32), byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}

// wsPing is the frame a heartbeat becomes.
var wsPing = []byte{0x80 | byte(ws.OpPing), 0}

func (*wsFramer) appendEvent(dst []byte, e *event.Encoded) []byte {
	switch e.Kind {
	case event.KindHeartbeat:
		return append(dst, wsPing...)
	case event.KindNotice:
		return append(dst, e.SSE...) // a frame made for this stream: a pong, a command's reply
	}
	return append(appendFrameHeader(dst, ws.OpText, len(e.JSON)), e.JSON...)
}

func closeFrame(code ws.StatusCode, reason string) []byte {
	body := ws.NewCloseFrameBody(code, reason) // the reason is cut to fit a control frame
	return append(appendFrameHeader(nil, ws.OpClose, len(body)), body...)
}

func (f *wsFramer) ending(err error, last string) []byte {
	switch {
	case errors.Is(err, hub.ErrSlowConsumer):
		return closeFrame(StatusSlowConsumer, "slow consumer; reconnect with ?since="+last)
	case errors.Is(err, hub.ErrUpstreamLost):
		return closeFrame(statusTryAgainLater, "relay lost Redis; reconnect with ?since="+last)
	}
	if e, ok := errors.AsType[*Ended](err); ok {
		return closeFrame(ws.StatusCode(e.Code), e.Reason+"; reconnect with ?since="+last)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.code != 0 {
		return closeFrame(f.code, f.reason)
	}
	return closeFrame(ws.StatusGoingAway, "relay closing the stream")
}

func (*wsFramer) closing(reason, last string, slow bool) []byte {
	switch {
	case slow:
		return closeFrame(StatusSlowConsumer, "slow consumer; reconnect with ?since="+last)
	case reason == EndOfReplay:
		return closeFrame(ws.StatusNormalClosure, "")
	}
	return closeFrame(statusTryAgainLater, reason)
}

// maxPartial bounds what is kept of an incomplete frame: a control frame is at most 131 bytes,
// a command at most MaxCommandBytes and its header.
const (
	maxPartial        = 256
	maxPartialCommand = MaxCommandBytes + 14
)

// input reads what the peer sent, handling each chunk's complete frames as it comes (so what
// is kept stays under maxPartial, or maxPartialCommand): pings are answered in order with the
// events, commands are queued, a close or a protocol error ends the stream (with the close
// frame to answer it).
func (f *wsFramer) input(c *conn) bool {
	var buf [512]byte
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.code != 0 {
		return true // it ended already; what else came is not read
	}
	gone, closed := false, false
	control := func(pong []byte) bool {
		if !f.allowControl() {
			return false
		}
		if pong != nil {
			c.sub.Reply(&event.Encoded{Kind: event.KindNotice, SSE: pong})
		}
		return true
	}
	var command func(text []byte) bool
	if f.commands != nil {
		command = f.commands.push
	}
	err := c.raw.Read(func(fd uintptr) bool {
		for !closed {
			n, err := syscall.Read(int(fd), buf[:])
			switch {
			case n > 0:
				var rest []byte
				rest, closed, f.code, f.reason = readClientFrames(append(f.partial, buf[:n]...), control, command)
				f.partial = append(f.partial[:0], rest...)
				continue
			case err == syscall.EINTR:
				continue
			case err == syscall.EAGAIN:
			default:
				gone = true
			}
			return true
		}
		return true
	})
	if len(f.partial) == 0 {
		f.partial = nil // an idle stream keeps no buffer
	}
	return closed || gone || err != nil
}

// readClientFrames handles the complete frames at the head of b, from a client: control is
// called for each ping (with its pong frame) and pong (with nil), and returns false when the
// client sent more than it may; command (nil: a message breaks the protocol) is called with
// each command's text, its own copy, and returns false when too many wait. It returns what is
// left (the start of a frame), or closed with the close frame to end with: the client's own
// close code echoed, or 1008/1002 for a client that sent a message, too many control frames or
// commands, or broke the protocol (1003, 1007, 1009: a command that is not one text frame of
// UTF-8 within MaxCommandBytes).
func readClientFrames(b []byte, control func(pong []byte) bool, command func(text []byte) bool) (rest []byte, closed bool, code ws.StatusCode, reason string) {
	for len(b) > 0 {
		rd := bytes.NewReader(b)
		h, err := ws.ReadHeader(rd)
		if err != nil {
			if len(b) < 14 { // the longest header, masked
				return b, false, 0, ""
			}
			return nil, true, ws.StatusProtocolError, "malformed frame"
		}
		if err := ws.CheckHeader(h, ws.StateServerSide); err != nil {
			return nil, true, ws.StatusProtocolError, err.Error()
		}
		if !h.OpCode.IsControl() {
			switch {
			case command == nil:
				return nil, true, ws.StatusPolicyViolation, "subscribers send no messages on this stream"
			case h.OpCode != ws.OpText:
				return nil, true, ws.StatusUnsupportedData, "commands are JSON in text frames, not binary"
			case !h.Fin: // a command is small: a fragment is a client's mistake, not worth a reassembly buffer
				return nil, true, ws.StatusPolicyViolation, "a command is one unfragmented text frame"
			case h.Length > MaxCommandBytes:
				return nil, true, ws.StatusMessageTooBig, tooBigCommand
			}
		}
		start := len(b) - rd.Len()
		if int64(len(b)-start) < h.Length {
			return b, false, 0, ""
		}
		payload := append([]byte(nil), b[start:start+int(h.Length)]...)
		ws.Cipher(payload, h.Mask, 0)
		b = b[start+int(h.Length):]
		switch h.OpCode {
		case ws.OpText:
			if !utf8.Valid(payload) {
				return nil, true, ws.StatusInvalidFramePayloadData, "a text frame that is not UTF-8"
			}
			if !command(payload) {
				return nil, true, ws.StatusPolicyViolation, tooManyCommands
			}
		case ws.OpPing:
			if !control(append(appendFrameHeader(nil, ws.OpPong, len(payload)), payload...)) {
				return nil, true, ws.StatusPolicyViolation, tooManyControlFrames
			}
		case ws.OpPong:
			if !control(nil) {
				return nil, true, ws.StatusPolicyViolation, tooManyControlFrames
			}
		case ws.OpClose:
			code, reason := ws.ParseCloseFrameData(payload)
			if code.Empty() {
				code = ws.StatusNormalClosure
			}
			if !validCloseCode(code) || !utf8.ValidString(reason) {
				return nil, true, ws.StatusProtocolError, "invalid close frame"
			}
			return nil, true, code, ""
		}
	}
	return nil, false, 0, ""
}

// tooManyControlFrames is the close reason of a client over its control-frame budget.
var tooManyControlFrames = "more than " + strconv.Itoa(maxControlFrames) + " control frames in " + controlWindow.String()

// MaxCommandBytes bounds one command from a client: room for a token and a hundred keys.
const MaxCommandBytes = 16 << 10

// maxWaitingCommands bounds the commands a client sends ahead of their replies. A client that
// waits for each reply has one waiting; one that sends a burst (a follow per widget of a page)
// has a few; past the bound it floods the relay with work, and its stream ends.
const maxWaitingCommands = 16

// tooBigCommand and tooManyCommands are the close reasons of a client's commands.
var (
	tooBigCommand   = "a command is at most " + strconv.Itoa(MaxCommandBytes) + " bytes"
	tooManyCommands = "more than " + strconv.Itoa(maxWaitingCommands) + " commands waiting for their replies; send the next once one is answered"
)

// commandQueue hands a client's commands from the watcher, which must never wait, to a
// goroutine that runs them one at a time in order (so their replies keep the commands' order,
// and one may wait for upstream work). The goroutine runs only while commands wait: an idle
// stream holds none.
type commandQueue struct {
	run func(text []byte)
	sub *hub.Subscriber

	mu      sync.Mutex
	waiting [][]byte
	running bool // a goroutine is draining waiting
}

// push queues one command and reports false when maxWaitingCommands wait already.
func (q *commandQueue) push(text []byte) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.waiting) >= maxWaitingCommands {
		return false
	}
	q.waiting = append(q.waiting, text)
	if !q.running {
		q.running = true
		go q.drain()
	}
	return true
}

// drain runs the waiting commands, and what comes meanwhile, until none is left or the stream
// ended (what is left then is dropped: nobody reads its replies).
func (q *commandQueue) drain() {
	for {
		ended := q.sub.Err() != nil
		q.mu.Lock()
		if ended || len(q.waiting) == 0 {
			q.waiting, q.running = nil, false
			q.mu.Unlock()
			return
		}
		text := q.waiting[0]
		q.waiting[0] = nil
		q.waiting = q.waiting[1:]
		q.mu.Unlock()
		q.run(text)
	}
}

// TextNotice is payload as one WebSocket text frame, to queue with hub.Subscriber.Notify in
// order with a stream's events: how a role answers a client's command. payload must be UTF-8.
func TextNotice(payload []byte) *event.Encoded {
	return &event.Encoded{Kind: event.KindNotice, SSE: append(appendFrameHeader(nil, ws.OpText, len(payload)), payload...)}
}

// validCloseCode: the codes a close frame may carry (RFC 6455 7.4).
func validCloseCode(c ws.StatusCode) bool {
	return c >= 1000 && c <= 1003 || c >= 1007 && c <= 1014 || c >= 3000 && c <= 4999
}

// statusTryAgainLater is close code 1013 (RFC 6455 registry): the server cannot serve now.
const statusTryAgainLater ws.StatusCode = 1013
