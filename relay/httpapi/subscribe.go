package httpapi

import (
	"context"
	"net/http"
	"strconv"

	"github.com/heraldhq/herald/relay/cursor"
	"github.com/heraldhq/herald/relay/event"
	"github.com/heraldhq/herald/relay/hub"
	"github.com/heraldhq/herald/relay/problem"
	"github.com/heraldhq/herald/relay/stream"
)

// subscribeRequest is what a subscribe call asked for.
type subscribeRequest struct {
	key        string        // "" = every key of the shard (or of interest)
	interest   *hub.Interest // ?interest=: an adjustable stream (interest.go); several key=, or a prefix: a fixed one
	fixed      bool          // interest is the stream's keys for good: it is not announced, and cannot change
	from       *cursor.ID    // resume after this cursor; nil = live from now
	replayOnly bool          // ?live=false: end the stream once replay is done
	history    int           // ?history=N: a fresh stream starts with the last N events of each key
	ticket     *ticket       // what the stream holds of the limits; nil without limits
	caller     string        // who asked (Config.Authorize)
	status     int           // non-zero: reject with this status and msg
	msg        string
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
	} else if keys := q["key"]; len(keys) > 0 {
		if len(keys) > MaxStreamKeys {
			return subscribeRequest{status: http.StatusBadRequest, msg: "a stream follows at most " + strconv.Itoa(MaxStreamKeys) + " keys (key= repeated); follow more with an interest stream (?interest=keys)"}
		}
		for _, k := range keys {
			if bad := s.checkKey("query parameter key", k); bad.status != 0 {
				return bad
			}
		}
		if len(keys) == 1 && !event.IsPrefix(keys[0]) {
			req.key = keys[0]
		} else {
			req.interest, req.fixed = &hub.Interest{Keys: keys}, true
		}
	}
	raw, what := stream.ResumeCursor(r)
	if raw != "" {
		c, err := cursor.Parse(raw)
		if err != nil {
			return subscribeRequest{status: http.StatusBadRequest, msg: what + ": " + err.Error()}
		}
		req.from = &c
	}
	var err error
	if req.replayOnly, err = stream.ParseLive(q); err != nil {
		return subscribeRequest{status: http.StatusBadRequest, msg: err.Error()}
	}
	if req.history, err = stream.ParseHistory(q, s.cfg.Subscription.HistoryDepth()); err != nil {
		return subscribeRequest{status: http.StatusBadRequest, msg: err.Error()}
	}
	if req.history > 0 {
		if bad := req.checkHistory(); bad != "" {
			return subscribeRequest{status: http.StatusBadRequest, msg: bad}
		}
		if req.from != nil {
			req.history = 0 // a resumed stream gets everything after its cursor instead
		}
	}
	if req.replayOnly && req.from == nil && req.history == 0 {
		return subscribeRequest{status: http.StatusBadRequest, msg: stream.ErrReplayNeedsCursor.Error()}
	}
	if req.replayOnly && req.interest != nil && !req.fixed {
		return subscribeRequest{status: http.StatusBadRequest, msg: "an interest stream is live: it cannot be replay-only (live=false)"}
	}
	return req
}

// checkHistory says why a stream cannot start with history: it must name its keys, and not
// prefixes (a key's history is indexed; a prefix's is not).
func (req subscribeRequest) checkHistory() string {
	switch {
	case req.interest != nil && !req.fixed:
		return "query parameter history: interest streams start with no history"
	case req.key == "" && req.interest == nil:
		return "query parameter history: name the keys whose last events to send first (key=)"
	case req.interest != nil:
		for _, k := range req.interest.Keys {
			if event.IsPrefix(k) {
				return "query parameter history: " + strconv.Quote(k) + " is a prefix; history is kept per key, so name the keys"
			}
		}
	}
	return ""
}

// checkKey refuses a key that is invalid (400) or belongs to another shard (421). A prefix
// (event.IsPrefix) belongs to every shard: its keys hash anywhere.
func (s *Server) checkKey(what, key string) subscribeRequest {
	if err := event.ValidateField("key", key, event.MaxKeyBytes); err != nil {
		return subscribeRequest{status: http.StatusBadRequest, msg: what + ": " + err.Error()}
	}
	if event.IsPrefix(key) {
		return subscribeRequest{}
	}
	if shard := s.cfg.Map.ShardFor(key); shard != s.cfg.Shard {
		return subscribeRequest{status: http.StatusMisdirectedRequest, key: key, msg: strconv.Itoa(shard)}
	}
	return subscribeRequest{}
}

func (s *Server) reject(w http.ResponseWriter, req subscribeRequest) {
	if req.status == http.StatusMisdirectedRequest {
		shard, _ := strconv.Atoi(req.msg)
		s.misdirected(w, "", req.key, shard)
		return
	}
	problem.Write(w, req.status, req.msg)
}

// source is a relay subscriber's stream.Source: its replay reads the shard's Redis stream
// (resume), and live events cross the seam by stream ID.
type source struct {
	s    *Server
	req  subscribeRequest
	sub  *hub.Subscriber
	last cursor.ID // the cursor of the last event sent
	seam bool      // live events up to last were sent by the replay
}

func (src *source) Replay(ctx context.Context, out stream.Sink) bool {
	var ok bool
	if src.req.history > 0 {
		src.last, ok = src.s.history(ctx, out, src.req)
		src.seam = true // live events up to the newest one sent were sent
	} else {
		src.last, src.seam, ok = src.s.resume(ctx, out, src.req)
	}
	if !ok {
		return false
	}
	return src.req.replayOnly || src.s.announce(ctx, out, src.sub, src.req, src.last)
}

func (src *source) Filter(batch []*event.Encoded) []*event.Encoded {
	kept := batch[:0]
	for _, e := range batch {
		if stream.Advance(e, &src.last, &src.seam) {
			kept = append(kept, e)
		}
	}
	return kept
}

func (src *source) Cursor() string { return src.last.String() }

// resume sends what a cursor asks for before live events: a gap event if the cursor is older
// than the stream (or ahead of it), then, on a Durable channel, the stream after it. It returns
// the newest cursor sent and whether live events up to it were already replayed (seam); ok is
// false when the replay failed and the stream is over.
func (s *Server) resume(ctx context.Context, out stream.Sink, req subscribeRequest) (last cursor.ID, seam, ok bool) {
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
	return last, seam, true
}

// history sends the last req.history events of each of the request's keys, oldest first, and
// returns the newest one's cursor: live events up to it were sent (the seam). It returns false
// when the stream ended.
func (s *Server) history(ctx context.Context, out stream.Sink, req subscribeRequest) (cursor.ID, bool) {
	keys := []string{req.key}
	if req.interest != nil {
		keys = req.interest.Keys
	}
	msgs, err := s.cfg.Subscription.History(ctx, keys, req.history, cursor.ID{})
	if err != nil {
		out.Close("reading the keys' history failed ("+err.Error()+"); reconnect", "", false)
		return cursor.ID{}, false
	}
	if len(msgs) == 0 {
		return cursor.ID{}, true
	}
	batch := make([]*event.Encoded, len(msgs))
	for i, m := range msgs {
		batch[i] = s.cfg.Encoder.Encode(m)
	}
	if err := out.Write(ctx, batch); err != nil {
		return cursor.ID{}, false
	}
	s.cfg.Metrics.Replayed.Add(float64(len(batch)))
	return msgs[len(msgs)-1].ID, true
}

// matcher says which keys the request's replay sends: its key, its interest at the start (keys
// and prefixes), or every key.
func (req subscribeRequest) matcher() func(key string) bool {
	switch {
	case req.interest != nil && !req.interest.All:
		return event.NewKeySet(req.interest.Keys).Has
	case req.interest == nil && req.key != "":
		return func(key string) bool { return key == req.key }
	}
	return func(string) bool { return true }
}

// replay sends the stream entries after start (those match takes) and returns the last ID read.
func (s *Server) replay(ctx context.Context, out stream.Sink, match func(key string) bool, start cursor.ID) (cursor.ID, bool) {
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

// serveSSE serves GET .../events: a Server-Sent Events stream (an interest stream too).
func (s *Server) serveSSE(w http.ResponseWriter, r *http.Request) {
	req := s.parseSubscribe(r)
	if req.status != 0 {
		s.reject(w, req)
		return
	}
	if req.interest != nil && !req.fixed {
		mark := "keys"
		if req.interest.All {
			mark = "all"
		}
		w.Header().Set(InterestHeader, mark)
	}
	s.serveStream(w, r, req, stream.SSE)
}

// serveWebSocket serves GET .../ws: the same stream, one CloudEvent per text frame.
func (s *Server) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Browser.refuseOrigin(w, r) {
		return
	}
	req := s.parseSubscribe(r)
	if req.status == 0 && req.interest != nil && !req.fixed {
		req = subscribeRequest{status: http.StatusBadRequest, msg: "query parameter interest: interest streams are SSE only (GET .../events)"}
	}
	if req.status != 0 {
		s.reject(w, req)
		return
	}
	if refuseNotUpgrade(w, r) { // before it counts against any limit
		return
	}
	s.serveStream(w, r, req, stream.WebSocket)
}

// serveStream admits a checked request against the limits, registers its subscriber with the
// hub before any replay (nothing published from then on is missed) and hands both to the
// stream package, which serves the stream to its end.
func (s *Server) serveStream(w http.ResponseWriter, r *http.Request, req subscribeRequest, p stream.Protocol) {
	req.caller = callerOf(r)
	t, ok := s.admitStream(w, r, req)
	if !ok {
		return
	}
	req.ticket = t
	src := &source{s: s, req: req, sub: s.subscribe(req, p)}
	o := stream.Options{Protocol: p, WriteTimeout: s.cfg.WriteTimeout, ReplayOnly: req.replayOnly}
	if t != nil {
		o.Admission = t
	}
	if err := stream.Serve(w, r, src.sub, src, o); err != nil {
		problem.Write(w, http.StatusUpgradeRequired, err.Error())
	}
}

// subscribe registers with the hub; a replay-only stream gets a subscriber that is never
// registered, so it does not count as a live stream.
func (s *Server) subscribe(req subscribeRequest, p stream.Protocol) *hub.Subscriber {
	sub := hub.Detached()
	switch {
	case req.replayOnly:
	case req.interest != nil:
		sub = s.cfg.Hub.SubscribeInterest(*req.interest)
	default:
		sub = s.cfg.Hub.Subscribe(req.key)
	}
	transport := "sse"
	if p == stream.WebSocket {
		transport = "websocket"
	}
	streams := s.cfg.Metrics.Streams.WithLabelValues(transport)
	streams.Inc()
	sub.OnClose(streams.Dec)
	return sub
}
