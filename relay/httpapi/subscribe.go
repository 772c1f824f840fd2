package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald/relay/cursor"
	"github.com/heraldhq/herald/relay/event"
	"github.com/heraldhq/herald/relay/hub"
)

// StatusSlowConsumer is the WebSocket close code of a subscriber that fell too far behind
// (application range 4000-4999; 4429 echoes HTTP 429). Reconnect with ?since=<last id>.
const StatusSlowConsumer websocket.StatusCode = 4429

// sink writes batches of events to one connection: SSE or WebSocket.
type sink interface {
	write(ctx context.Context, batch []*event.Encoded) error
	// close ends the stream telling the subscriber why; last is the last cursor it was sent.
	close(reason string, last cursor.ID, slow bool)
}

// subscribeRequest is what a subscribe call asked for.
type subscribeRequest struct {
	key    string     // "" = every key of the shard
	from   *cursor.ID // resume after this cursor; nil = live from now
	status int        // non-zero: reject with this status and msg
	msg    string
}

func (s *Server) parseSubscribe(r *http.Request) subscribeRequest {
	q := r.URL.Query()
	var req subscribeRequest
	if req.key = q.Get("key"); req.key != "" || q.Has("key") {
		if err := event.ValidateField("key", req.key, event.MaxKeyBytes); err != nil {
			return subscribeRequest{status: http.StatusBadRequest, msg: "query parameter key: " + err.Error()}
		}
		if shard := s.cfg.Map.ShardFor(req.key); shard != s.cfg.Shard {
			return subscribeRequest{status: http.StatusMisdirectedRequest, key: req.key, msg: strconv.Itoa(shard)}
		}
	}
	raw, what := r.Header.Get("Last-Event-ID"), "Last-Event-ID header"
	if raw == "" {
		raw, what = q.Get("since"), "query parameter since"
	}
	if raw != "" {
		c, err := cursor.Parse(raw)
		if err != nil {
			return subscribeRequest{status: http.StatusBadRequest, msg: what + ": " + err.Error()}
		}
		req.from = &c
	}
	return req
}

func (s *Server) reject(w http.ResponseWriter, req subscribeRequest) {
	if req.status == http.StatusMisdirectedRequest {
		shard, _ := strconv.Atoi(req.msg)
		s.misdirected(w, req.key, shard)
		return
	}
	writeError(w, req.status, req.msg)
}

// pump feeds one subscriber: gap and replay first (with a cursor), then live events from the
// hub without the IDs replay already sent.
func (s *Server) pump(ctx context.Context, sub *hub.Subscriber, out sink, req subscribeRequest) {
	var last cursor.ID // the newest cursor sent
	seam := false      // live events up to last were already replayed
	if req.from != nil {
		last = *req.from
		start, gap, err := s.cfg.Subscription.ResumePlan(ctx, *req.from)
		if err != nil {
			out.close("cannot read the stream to resume ("+err.Error()+"); reconnect with the same cursor", last, false)
			return
		}
		if gap != nil {
			s.cfg.Metrics.Gaps.Inc()
			if err := out.write(ctx, []*event.Encoded{s.cfg.Encoder.EncodeGap(*gap)}); err != nil {
				return
			}
			last = gap.Resume
		}
		if s.cfg.Subscription.Durable() {
			var ok bool
			if last, ok = s.replay(ctx, out, req.key, start); !ok {
				return
			}
			seam = true
		}
	}
	var batch []*event.Encoded
	for {
		var err error
		batch, err = sub.Next(ctx, batch)
		if err != nil {
			if errors.Is(err, hub.ErrSlowConsumer) {
				out.close("slow consumer: more than the queue limit was waiting for this connection; reconnect with Last-Event-ID "+last.String()+" to resume", last, true)
			}
			return
		}
		if seam {
			kept := batch[:0]
			for _, e := range batch {
				switch {
				case e.Kind == event.KindGap:
					seam = false // after a rollback, IDs may legitimately go lower
				case e.Kind == event.KindMessage && !last.Less(e.ID):
					continue // replay sent it already
				case e.Kind == event.KindMessage:
					seam = false
				}
				kept = append(kept, e)
			}
			batch = kept
		}
		if len(batch) == 0 {
			continue
		}
		if err := out.write(ctx, batch); err != nil {
			return
		}
		for i := len(batch) - 1; i >= 0; i-- {
			if batch[i].Kind != event.KindHeartbeat {
				last = batch[i].ID
				break
			}
		}
	}
}

// replay sends the stream entries after start (matching key) and returns the last ID read.
func (s *Server) replay(ctx context.Context, out sink, key string, start cursor.ID) (cursor.ID, bool) {
	after := start
	var batch []*event.Encoded
	for {
		msgs, err := s.cfg.Subscription.ReadAfter(ctx, after, s.cfg.ReplayBatch)
		if err != nil {
			out.close("replay from the stream failed ("+err.Error()+"); reconnect with Last-Event-ID "+after.String(), after, false)
			return after, false
		}
		batch = batch[:0]
		for _, m := range msgs {
			if key == "" || m.Key == key {
				batch = append(batch, s.cfg.Encoder.Encode(m))
			}
		}
		if len(batch) > 0 {
			if err := out.write(ctx, batch); err != nil {
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
	if req.status != 0 {
		s.reject(w, req)
		return
	}
	sub := s.cfg.Hub.Subscribe(req.key) // before replay: nothing published from now on is missed
	defer sub.Close()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	out := &sseSink{w: w, rc: http.NewResponseController(w), timeout: s.cfg.WriteTimeout}
	if err := out.rc.Flush(); err != nil {
		return
	}
	s.pump(r.Context(), sub, out, req)
}

type sseSink struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

// write sends a batch with one flush under one write deadline.
func (o *sseSink) write(_ context.Context, batch []*event.Encoded) error {
	_ = o.rc.SetWriteDeadline(time.Now().Add(o.timeout))
	for _, e := range batch {
		if _, err := o.w.Write(e.SSE); err != nil {
			return err
		}
	}
	return o.rc.Flush()
}

func (o *sseSink) close(reason string, _ cursor.ID, _ bool) {
	_ = o.rc.SetWriteDeadline(time.Now().Add(o.timeout))
	_, _ = o.w.Write([]byte(": closed: " + reason + "\n\n"))
	_ = o.rc.Flush()
}

// --- WebSocket ---

func (s *Server) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	req := s.parseSubscribe(r)
	if req.status != 0 {
		s.reject(w, req)
		return
	}
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return // Accept has answered the request
	}
	defer c.CloseNow()
	sub := s.cfg.Hub.Subscribe(req.key)
	defer sub.Close()
	// Subscribers send nothing; CloseRead answers pings and ends ctx when the peer closes.
	ctx := c.CloseRead(r.Context())
	out := &wsSink{c: c, timeout: s.cfg.WriteTimeout}
	s.pump(ctx, sub, out, req)
	if !out.closed {
		_ = c.Close(websocket.StatusGoingAway, "relay closing the stream")
	}
}

type wsSink struct {
	c       *websocket.Conn
	timeout time.Duration
	closed  bool
}

// write sends one text frame per event (heartbeats become pings) under one deadline per batch.
func (o *wsSink) write(ctx context.Context, batch []*event.Encoded) error {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	for _, e := range batch {
		if e.Kind == event.KindHeartbeat {
			if err := o.c.Ping(ctx); err != nil {
				return err
			}
			continue
		}
		if err := o.c.Write(ctx, websocket.MessageText, e.JSON); err != nil {
			return err
		}
	}
	return nil
}

func (o *wsSink) close(reason string, last cursor.ID, slow bool) {
	o.closed = true
	code := websocket.StatusTryAgainLater
	if slow {
		code, reason = StatusSlowConsumer, "slow consumer; reconnect with ?since="+last.String()
	}
	if len(reason) > 123 { // a close frame's reason is at most 123 bytes
		reason = reason[:123]
	}
	_ = o.c.Close(code, reason)
}
