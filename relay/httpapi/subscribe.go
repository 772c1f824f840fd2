package httpapi

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald/relay/cursor"
	"github.com/heraldhq/herald/relay/event"
	"github.com/heraldhq/herald/relay/hub"
)

// StatusSlowConsumer is the WebSocket close code of a subscriber that fell too far behind
// (application range 4000-4999; 4429 echoes HTTP 429). Reconnect with ?since=<last id>.
const StatusSlowConsumer websocket.StatusCode = 4429

// Sink writes batches of events to one subscriber connection: SSE or WebSocket. The shard
// relay and the sidecar serve subscribers through the same sinks, so their streams look alike.
type Sink interface {
	// Write sends a batch (one flush, one write deadline).
	Write(ctx context.Context, batch []*event.Encoded) error
	// Close ends the stream telling the subscriber why; last is the last cursor it was sent.
	Close(reason, last string, slow bool)
}

// EndOfReplay is the SSE comment that ends a replay-only stream (?live=false): everything
// stored after the cursor was sent. A WebSocket ends with a normal closure instead.
const EndOfReplay = "end of replay"

// SlowConsumerReason is what a subscriber closed as a slow consumer is told.
func SlowConsumerReason(last string) string {
	return "slow consumer: more than the queue limit was waiting for this connection; reconnect with Last-Event-ID " + last + " to resume"
}

// UpstreamLostReason is what a subscriber is told when the relay lost Redis for longer than it
// waits: another replica (the Service routes only to ready ones) serves the rest.
func UpstreamLostReason(last string) string {
	return "this relay lost its Redis subscription; reconnect with Last-Event-ID " + last + " to resume on another replica"
}

// subscribeRequest is what a subscribe call asked for.
type subscribeRequest struct {
	key        string        // "" = every key of the shard
	interest   *hub.Interest // ?interest=: an adjustable stream (interest.go); key is unused
	from       *cursor.ID    // resume after this cursor; nil = live from now
	replayOnly bool          // ?live=false: end the stream once replay is done
	ticket     *ticket       // what the stream holds of the limits; nil without limits
	caller     string        // who asked (Config.Authorize)
	status     int           // non-zero: reject with this status and msg
	msg        string
}

// ParseLive reads the ?live= parameter: "" and "true" go live after replay, "false" ends the
// stream once what is stored after the cursor was sent (sidecars use it to resume a subscriber
// without opening a second live stream).
func ParseLive(q url.Values) (replayOnly bool, err error) {
	switch v := q.Get("live"); v {
	case "", "true":
		return false, nil
	case "false":
		return true, nil
	default:
		return false, errors.New("query parameter live must be \"true\" (default) or \"false\" (replay what is stored after the cursor, then end), not " + strconv.Quote(clip(v)))
	}
}

func (s *Server) parseSubscribe(r *http.Request) subscribeRequest {
	q := r.URL.Query()
	var req subscribeRequest
	if q.Has("interest") {
		in, bad := s.parseInterest(q)
		if bad.status != 0 {
			return bad
		}
		req.interest = in
	} else if req.key = q.Get("key"); req.key != "" || q.Has("key") {
		if bad := s.checkKey("query parameter key", req.key); bad.status != 0 {
			return bad
		}
	}
	raw, what := ResumeCursor(r)
	if raw != "" {
		c, err := cursor.Parse(raw)
		if err != nil {
			return subscribeRequest{status: http.StatusBadRequest, msg: what + ": " + err.Error()}
		}
		req.from = &c
	}
	var err error
	if req.replayOnly, err = ParseLive(q); err != nil {
		return subscribeRequest{status: http.StatusBadRequest, msg: err.Error()}
	}
	if req.replayOnly && req.from == nil {
		return subscribeRequest{status: http.StatusBadRequest, msg: "live=false replays what is stored after a cursor: give one with Last-Event-ID or ?since="}
	}
	if req.replayOnly && req.interest != nil {
		return subscribeRequest{status: http.StatusBadRequest, msg: "an interest stream is live: it cannot be replay-only (live=false)"}
	}
	return req
}

// checkKey refuses a key that is invalid (400) or belongs to another shard (421).
func (s *Server) checkKey(what, key string) subscribeRequest {
	if err := event.ValidateField("key", key, event.MaxKeyBytes); err != nil {
		return subscribeRequest{status: http.StatusBadRequest, msg: what + ": " + err.Error()}
	}
	if shard := s.cfg.Map.ShardFor(key); shard != s.cfg.Shard {
		return subscribeRequest{status: http.StatusMisdirectedRequest, key: key, msg: strconv.Itoa(shard)}
	}
	return subscribeRequest{}
}

// ResumeCursor returns the cursor a subscriber resumes from (Last-Event-ID, else ?since=) and
// where it came from, for error messages; "" when there is none.
func ResumeCursor(r *http.Request) (raw, what string) {
	if raw = r.Header.Get("Last-Event-ID"); raw != "" {
		return raw, "Last-Event-ID header"
	}
	return r.URL.Query().Get("since"), "query parameter since"
}

func (s *Server) reject(w http.ResponseWriter, req subscribeRequest) {
	if req.status == http.StatusMisdirectedRequest {
		shard, _ := strconv.Atoi(req.msg)
		s.misdirected(w, "", req.key, shard)
		return
	}
	WriteError(w, req.status, req.msg)
}

// pump feeds one subscriber from its own goroutine: gap and replay first (with a cursor),
// then live events from the hub without the IDs replay already sent.
func (s *Server) pump(ctx context.Context, sub *hub.Subscriber, out Sink, req subscribeRequest) {
	last, seam, ok := s.resume(ctx, out, req)
	if !ok || !s.announce(ctx, out, sub, req, last) {
		return
	}
	var batch []*event.Encoded
	for {
		var err error
		batch, err = sub.Next(ctx, batch)
		if err != nil {
			switch {
			case errors.Is(err, hub.ErrSlowConsumer):
				out.Close(SlowConsumerReason(last.String()), last.String(), true)
			case errors.Is(err, hub.ErrUpstreamLost):
				out.Close(UpstreamLostReason(last.String()), last.String(), false)
			}
			return
		}
		kept := skipReplayed(batch, &last, &seam)
		if len(kept) == 0 {
			continue
		}
		if err := out.Write(ctx, kept); err != nil {
			return
		}
	}
}

// resume sends what a cursor asks for before live events: a gap event if the cursor is older
// than the stream (or ahead of it), then, on a Durable channel, the stream after it. It returns
// the newest cursor sent and whether live events up to it were already replayed (seam); ok is
// false when the stream is over (replay failed, or ?live=false and the replay is done).
func (s *Server) resume(ctx context.Context, out Sink, req subscribeRequest) (last cursor.ID, seam, ok bool) {
	defer req.ticket.replayDone()
	if req.from == nil {
		return last, false, true
	}
	last = *req.from
	start, gap, err := s.cfg.Subscription.ResumePlan(ctx, *req.from)
	if err != nil {
		out.Close("cannot read the stream to resume ("+err.Error()+"); reconnect with the same cursor", last.String(), false)
		return last, false, false
	}
	if gap != nil {
		s.cfg.Metrics.Gaps.WithLabelValues(gap.Reason).Inc()
		if err := out.Write(ctx, []*event.Encoded{s.cfg.Encoder.EncodeGap(*gap)}); err != nil {
			return last, false, false
		}
		last = gap.Resume
	}
	if s.cfg.Subscription.Durable() {
		if last, ok = s.replay(ctx, out, req.matcher(), start); !ok {
			return last, false, false
		}
		seam = true
	}
	if req.replayOnly {
		req.ticket.release() // before the caller can see the end and come back
		out.Close(EndOfReplay, last.String(), false)
		return last, false, false
	}
	return last, seam, true
}

// skipReplayed drops from a live batch the messages replay already sent (while seam holds)
// and moves last to the newest cursor kept. It filters batch in place.
func skipReplayed(batch []*event.Encoded, last *cursor.ID, seam *bool) []*event.Encoded {
	kept := batch
	if *seam {
		kept = batch[:0]
		for _, e := range batch {
			switch {
			case e.Kind == event.KindGap:
				*seam = false // after a rollback, IDs may legitimately go lower
			case e.Kind == event.KindMessage && !last.Less(e.ID):
				continue // replay sent it already
			case e.Kind == event.KindMessage:
				*seam = false
			}
			kept = append(kept, e)
		}
	}
	for i := len(kept) - 1; i >= 0; i-- {
		if k := kept[i].Kind; k == event.KindMessage || k == event.KindGap {
			*last = kept[i].ID
			break
		}
	}
	return kept
}

// matcher says which keys the request's replay sends: its key, its interest at the start, or
// every key.
func (req subscribeRequest) matcher() func(key string) bool {
	switch {
	case req.interest != nil && !req.interest.All:
		set := make(map[string]bool, len(req.interest.Keys))
		for _, k := range req.interest.Keys {
			set[k] = true
		}
		return func(key string) bool { return set[key] }
	case req.interest == nil && req.key != "":
		return func(key string) bool { return key == req.key }
	}
	return func(string) bool { return true }
}

// replay sends the stream entries after start (those match takes) and returns the last ID read.
func (s *Server) replay(ctx context.Context, out Sink, match func(key string) bool, start cursor.ID) (cursor.ID, bool) {
	after := start
	var batch []*event.Encoded
	for {
		msgs, err := s.cfg.Subscription.ReadAfter(ctx, after, s.cfg.ReplayBatch)
		if err != nil {
			out.Close("replay from the stream failed ("+err.Error()+"); reconnect with Last-Event-ID "+after.String(), after.String(), false)
			return after, false
		}
		batch = batch[:0]
		for _, m := range msgs {
			if match(m.Key) {
				batch = append(batch, s.cfg.Encoder.Encode(m))
			}
		}
		if len(batch) > 0 {
			if err := out.Write(ctx, batch); err != nil {
				return after, false
			}
			s.cfg.Metrics.Replayed.Add(float64(len(batch)))
		}
		if len(msgs) > 0 {
			after = msgs[len(msgs)-1].ID
		}
		if int64(len(msgs)) < s.cfg.ReplayBatch {
			return after, true
		}
	}
}

// --- SSE ---

func (s *Server) serveSSE(w http.ResponseWriter, r *http.Request) {
	req := s.parseSubscribe(r)
	req.caller = callerOf(r)
	if req.status != 0 {
		s.reject(w, req)
		return
	}
	var ok bool
	if req.ticket, ok = s.admitStream(w, r, req); !ok {
		return
	}
	sub := s.subscribe(req, "sse") // before replay: nothing published from now on is missed
	if req.interest != nil {
		mark := "keys"
		if req.interest.All {
			mark = "all"
		}
		w.Header().Set(InterestHeader, mark)
	}
	if r.Method == http.MethodGet && !req.replayOnly {
		if c := hijackSSE(w, sub, s.cfg.WriteTimeout); c != nil {
			s.serveHijacked(r.Context(), c, req)
			return
		}
	}
	defer sub.Close() // HEAD, replay only, or a connection that cannot be taken over (HTTP/2)
	s.streams.SSE(w, r, func(ctx context.Context, out Sink) { s.pump(ctx, sub, out, req) })
}

// serveHijacked replays on the handler's goroutine, then hands the live stream to the hub's
// writers and returns: an idle live subscriber holds no handler goroutine and no net/http
// buffers (see push.go).
func (s *Server) serveHijacked(ctx context.Context, c *pushConn, req subscribeRequest) {
	last, seam, ok := s.resume(ctx, c, req)
	if !ok || !s.announce(ctx, c, c.sub, req, last) {
		c.close()
		return
	}
	// The writers run the filter, one batch at a time; the cursor is read by the stream's end.
	c.goLive(func(batch []*event.Encoded) []*event.Encoded { return skipReplayed(batch, &last, &seam) },
		func() string { return last.String() })
}

// subscribe registers with the hub; a replay-only stream gets a subscriber that is never
// registered, so it does not count as a live stream.
func (s *Server) subscribe(req subscribeRequest, transport string) *hub.Subscriber {
	sub := hub.Detached()
	switch {
	case req.interest != nil:
		sub = s.cfg.Hub.SubscribeInterest(*req.interest)
	case !req.replayOnly:
		sub = s.cfg.Hub.Subscribe(req.key)
	}
	// However the stream ends (hijacked ones included), it gives back what it holds.
	if req.ticket != nil {
		sub.OnClose(req.ticket.release)
	}
	streams := s.cfg.Metrics.Streams.WithLabelValues(transport)
	streams.Inc()
	sub.OnClose(streams.Dec)
	return sub
}

// SSE answers 200 text/event-stream and runs stream with an SSE sink until it returns.
func (st Streams) SSE(w http.ResponseWriter, r *http.Request, stream func(ctx context.Context, out Sink)) {
	out := &sseSink{w: w, rc: http.NewResponseController(w), timeout: st.WriteTimeout}
	if startSSE(w) != nil {
		return
	}
	stream(r.Context(), out)
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
	if _, err := w.Write([]byte(SSERetry)); err != nil {
		return err
	}
	return http.NewResponseController(w).Flush()
}

type sseSink struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	armed   time.Time // when the write deadline was last set
}

// sseWriteBytes bounds the scratch buffer one batch is copied into: a batch goes out in as few
// writes of at most this size as it can (one syscall each), not one small write per event.
const sseWriteBytes = 32 << 10

// sseBuffers holds the scratch buffers of SSE batch writes; an idle subscriber holds none.
var sseBuffers = sync.Pool{New: func() any { b := make([]byte, 0, sseWriteBytes); return &b }}

// Write sends a batch with one flush under one write deadline: the events are copied into one
// pooled buffer and written together (the shared event bytes are only read).
func (o *sseSink) Write(_ context.Context, batch []*event.Encoded) error {
	o.armDeadline()
	bp := sseBuffers.Get().(*[]byte)
	err := frameBatch(sseFramer{}, (*bp)[:0], batch, o.w.Write)
	sseBuffers.Put(bp)
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

// --- WebSocket ---

func (s *Server) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	if s.streams.Browser.refuseOrigin(w, r) {
		return
	}
	req := s.parseSubscribe(r)
	if req.status == 0 && req.interest != nil {
		req = subscribeRequest{status: http.StatusBadRequest, msg: "query parameter interest: interest streams are SSE only (GET .../events)"}
	}
	if req.status != 0 {
		s.reject(w, req)
		return
	}
	if refuseNotUpgrade(w, r) { // before it counts against any limit
		return
	}
	var ok bool
	if req.ticket, ok = s.admitStream(w, r, req); !ok {
		return
	}
	sub := s.subscribe(req, "websocket")
	c, ok := hijackWebSocket(w, r, sub, s.cfg.WriteTimeout)
	switch {
	case !ok: // the handshake failed and was answered
		sub.Close()
		return
	case c != nil:
		s.serveHijacked(r.Context(), c, req)
		return
	}
	defer sub.Close() // a connection that cannot be taken over (HTTP/2)
	s.streams.WebSocket(w, r, func(ctx context.Context, out Sink) { s.pump(ctx, sub, out, req) })
}

// WebSocket accepts the WebSocket and runs stream with a sink that sends one text frame per
// event; when stream returns without closing, the socket is closed as "going away". A client
// that offers the cloudevents.json subprotocol gets it (the frames are CloudEvents in JSON).
func (st Streams) WebSocket(w http.ResponseWriter, r *http.Request, stream func(ctx context.Context, out Sink)) {
	if st.Browser.refuseWebSocket(w, r) {
		return
	}
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		CompressionMode: websocket.CompressionDisabled,
		Subprotocols:    []string{CloudEventsSubprotocol},
		OriginPatterns:  st.Browser.wsOrigins(),
	})
	if err != nil {
		return // Accept has answered the request
	}
	defer c.CloseNow()
	// Subscribers send nothing; CloseRead answers pings and ends ctx when the peer closes.
	ctx := c.CloseRead(r.Context())
	out := &wsSink{c: c, timeout: st.WriteTimeout}
	stream(ctx, out)
	if !out.closed {
		_ = c.Close(websocket.StatusGoingAway, "relay closing the stream")
	}
}

type wsSink struct {
	c       *websocket.Conn
	timeout time.Duration
	closed  bool
}

// Write sends one text frame per event (heartbeats become pings) under one deadline per batch.
func (o *wsSink) Write(ctx context.Context, batch []*event.Encoded) error {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	for _, e := range batch {
		switch e.Kind {
		case event.KindHeartbeat:
			if err := o.c.Ping(ctx); err != nil {
				return err
			}
			continue
		case event.KindNotice:
			continue // framed for the pushed path (interest comments, pongs); none is meant for this one
		}
		if err := o.c.Write(ctx, websocket.MessageText, e.JSON); err != nil {
			return err
		}
	}
	return nil
}

func (o *wsSink) Close(reason, last string, slow bool) {
	o.closed = true
	code := websocket.StatusTryAgainLater
	switch {
	case slow:
		code, reason = StatusSlowConsumer, "slow consumer; reconnect with ?since="+last
	case reason == EndOfReplay:
		code = websocket.StatusNormalClosure
	}
	if len(reason) > 123 { // a close frame's reason is at most 123 bytes
		reason = reason[:123]
	}
	_ = o.c.Close(code, reason)
}
