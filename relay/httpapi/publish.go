package httpapi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/heraldhq/herald/relay/problem"
	"github.com/heraldhq/herald/relay/publish"
	"github.com/heraldhq/herald/relay/upstream"
)

// publish stores one event, or a batch of CloudEvents (application/cloudevents-batch+json) in
// its order at the cost of one request for all of them. Nothing is stored unless every event is
// valid and belongs to this shard (package publish reads and checks the request). A single
// publish answers 202 with its result; a batch answers 202 with every event's result when all
// were stored, otherwise a problem (503, or 409 for a reused id) whose "events" member says,
// event by event, what was stored, so a retry of the same batch stores only what is missing.
func (s *Server) publish(w http.ResponseWriter, r *http.Request) {
	params, err := publish.ReadParams(r)
	if err != nil {
		problem.Write(w, http.StatusBadRequest, err.Error())
		return
	}
	body, ok := ReadPublishBody(w, r, s.maxBytes, s.readBody)
	if !ok {
		return
	}
	req, bad := publish.Read(params, r.Header, body, s.maxBytes, s.ofThisShard)
	if bad != nil {
		problem.WriteWith(w, bad.Status, bad.Detail, bad.Ext)
		return
	}
	if req.Batch {
		s.storeBatch(w, r, req)
		return
	}
	ev := &req.Events[0]
	ctx, cancel := publishContext(r)
	defer cancel()
	res, err := s.cfg.Publisher.Publish(ctx, s.upstreamRequest(r, req, ev))
	if errors.Is(err, upstream.ErrIdempotencyConflict) {
		problem.Write(w, http.StatusConflict, conflictDetail(ev, res, false))
		return
	}
	if err != nil {
		s.cfg.Metrics.PublishErrors.Inc()
		// The caller learns what to do; the error, which names Redis nodes, goes to the log.
		s.cfg.Logger.Warn("publish failed", "error", err.Error())
		w.Header().Set("Retry-After", "1")
		problem.Write(w, http.StatusServiceUnavailable, "Redis did not accept the message; retry with the same Idempotency-Key to stay exactly-once")
		return
	}
	publish.WriteAccepted(w, s.accepted(res, ev, req.WaitReplicas, len(body)))
}

// publishTimeout bounds a publish that its request no longer bounds (publishContext).
const publishTimeout = 10 * time.Second

// publishContext is the context a publish runs in: not the request's, which ends when the relay
// shuts down (its streams must end then) or the caller hangs up. A publish is never abandoned
// half-way for either: it finishes, and a caller still there learns its outcome (202, or 503 to
// retry) instead of an empty 200 that says nothing of whether the message was stored.
func publishContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(r.Context()), publishTimeout)
}

// ofThisShard refuses an event whose key belongs to another shard (421, naming it).
func (s *Server) ofThisShard(at string, ev *publish.Event) *publish.Error {
	if shard := s.cfg.Map.ShardFor(ev.Key); shard != s.cfg.Shard {
		detail, ext := s.misdirection(at, ev.Key, shard)
		return &publish.Error{Status: http.StatusMisdirectedRequest, Detail: detail, Ext: ext}
	}
	return nil
}

// storeBatch stores the events of a batch in their order (one Redis pipeline of their own) and
// answers every event's outcome.
func (s *Server) storeBatch(w http.ResponseWriter, r *http.Request, req *publish.Request) {
	reqs := make([]upstream.PublishRequest, len(req.Events))
	for i := range req.Events {
		reqs[i] = s.upstreamRequest(r, req, &req.Events[i])
	}
	ctx, cancel := publishContext(r)
	defer cancel()
	results, errs := s.cfg.Publisher.PublishBatch(ctx, reqs)
	outcomes := make([]publish.Outcome, len(results))
	failed := false
	for i, res := range results {
		ev := &req.Events[i]
		switch err := errs[i]; {
		case err == nil:
			outcomes[i].Result = s.accepted(res, ev, req.WaitReplicas, len(ev.Data))
		case errors.Is(err, upstream.ErrIdempotencyConflict):
			outcomes[i] = publish.Failed(http.StatusConflict, conflictDetail(ev, res, true))
		default:
			if !failed {
				s.cfg.Logger.Warn("batch publish failed", "error", err.Error())
				failed = true
			}
			s.cfg.Metrics.PublishErrors.Inc()
			outcomes[i] = publish.Failed(http.StatusServiceUnavailable, "Redis did not accept it")
		}
	}
	publish.WriteBatch(w, outcomes)
}

// upstreamRequest is what Redis is asked to store for ev.
func (s *Server) upstreamRequest(r *http.Request, req *publish.Request, ev *publish.Event) upstream.PublishRequest {
	return upstream.PublishRequest{
		Key: ev.Key, Type: ev.Type, ContentType: ev.ContentType, Attrs: ev.Attrs.String(), Data: ev.Data,
		IdempotencyKey: ev.Idempotency, Caller: callerOf(r), RetryKey: ev.RetryKey,
		WaitReplicas: req.WaitReplicas, WaitTimeout: s.cfg.WaitTimeout,
	}
}

// conflictDetail says what of ev (an event of a batch, or a single publish) named another
// message (stored as res), and what to do.
func conflictDetail(ev *publish.Event, res upstream.PublishResult, batch bool) string {
	stored := " was used for another message (stored as " + res.ID.String() + ")"
	switch {
	case ev.FromID && !batch:
		return "CloudEvent id " + strconv.Quote(clip(ev.ProducerID())) + stored + "; an event sent again must be the same event, a new event needs a new id"
	case ev.FromID:
		return "CloudEvent id " + strconv.Quote(clip(ev.ProducerID())) + stored + "; an event sent again must be the same event"
	case batch:
		return "its Idempotency-Key" + stored + "; an event sent again must be the same event"
	}
	return "Idempotency-Key " + strconv.Quote(ev.Idempotency) + stored + "; a retry must send the same key, type, content type, attributes and data, a new message needs a new key"
}

// accepted counts a stored publish of size bytes (unless it was stored before) and returns its
// result.
func (s *Server) accepted(res upstream.PublishResult, ev *publish.Event, waitReplicas, size int) publish.Result {
	if !res.Duplicate {
		s.cfg.Metrics.Published.Inc()
		s.cfg.Metrics.PublishedBytes.Add(float64(size))
	}
	out := publish.Result{ID: res.ID.String(), Shard: s.cfg.Shard, EventID: ev.ProducerID(), Duplicate: res.Duplicate}
	if out.EventID == "" {
		out.EventID = strconv.Itoa(s.cfg.Shard) + ":" + out.ID
	}
	if waitReplicas > 0 {
		out.Replicated, out.Replicas = &res.Replicated, &res.Replicas
	}
	return out
}

// ReadPublishBody reads the body of a publish to a channel of maxBytes per message, within
// publish.BodyLimit for its Content-Type, with read (ReadBody); over the limit, or unreadable,
// it answers 413 or 400 and returns false.
func ReadPublishBody(w http.ResponseWriter, r *http.Request, maxBytes int64, read BodyReader) ([]byte, bool) {
	limit := publish.BodyLimit(maxBytes, r.Header.Get("Content-Type"))
	what, over := "body", "this channel's maxMessageBytes ("+strconv.FormatInt(maxBytes, 10)+")"
	if publish.IsBatch(r.Header.Get("Content-Type")) {
		what, over = "batch", strconv.FormatInt(limit, 10)+" bytes; send smaller batches"
	}
	if r.ContentLength > limit {
		problem.Write(w, http.StatusRequestEntityTooLarge, what+" of "+strconv.FormatInt(r.ContentLength, 10)+" bytes is over "+over)
		return nil, false
	}
	return read(w, r, limit, what+" is over "+over)
}

// BodyReader reads a request body of at most limit bytes, or answers why it cannot (tooLarge
// for 413) and returns false: ReadBody under a role's own bounds.
type BodyReader func(w http.ResponseWriter, r *http.Request, limit int64, tooLarge string) ([]byte, bool)

// Bounds of reading a request body. A peer that announces a large body and sends it slowly, or
// never, must not hold memory it did not send, nor a handler, for long: many such requests
// would otherwise fill a relay.
const (
	// DefaultBodyReadTimeout bounds the reading of one body: a 4 MiB batch takes well under a
	// second on a cluster network, so only a stalled or trickling peer meets it.
	DefaultBodyReadTimeout = 30 * time.Second
	// upfrontBodyBytes is the most of a body's announced length allocated before its bytes
	// arrive: a common publish (a few KiB) is read into one buffer of its size; a larger body
	// grows with what arrives.
	upfrontBodyBytes = 64 << 10
)

// ReadBody reads a request body of at most limit bytes within timeout: a small body of known
// length at once into a buffer of its size, a larger one into a buffer that grows as its bytes
// arrive. When it cannot, it answers 413 saying tooLarge, 408 when the body did not arrive in
// time, or 400, and returns false.
func ReadBody(w http.ResponseWriter, r *http.Request, limit int64, timeout time.Duration, tooLarge string) ([]byte, bool) {
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(timeout))
	defer func() { _ = rc.SetReadDeadline(time.Time{}) }()
	rd := http.MaxBytesReader(w, r.Body, limit)
	var body []byte
	var err error
	if n := r.ContentLength; n >= 0 && n <= min(limit, upfrontBodyBytes) {
		body = make([]byte, n)
		_, err = io.ReadFull(rd, body)
	} else {
		buf := bytes.NewBuffer(make([]byte, 0, upfrontBodyBytes))
		_, err = buf.ReadFrom(rd)
		body = buf.Bytes()
	}
	if err != nil {
		var tooBig *http.MaxBytesError
		var netErr net.Error
		switch {
		case errors.As(err, &tooBig):
			problem.Write(w, http.StatusRequestEntityTooLarge, tooLarge)
		case errors.As(err, &netErr) && netErr.Timeout():
			problem.Write(w, http.StatusRequestTimeout, "the body did not arrive within "+timeout.String()+"; send it at once, or in smaller parts")
		default:
			problem.Write(w, http.StatusBadRequest, "reading the body: "+err.Error())
		}
		return nil, false
	}
	return body, true
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
