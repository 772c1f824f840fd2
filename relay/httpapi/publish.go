package httpapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/heraldhq/herald/relay/event"
	"github.com/heraldhq/herald/relay/upstream"
)

// RetryKeyHeader ("1") marks an Idempotency-Key the sidecar made up for its own retries (the app
// sent none): the relay keeps it only upstream.RetryKeyWindow.
const RetryKeyHeader = "Herald-Retry-Key"

// MaxIdempotencyKeyBytes bounds the Idempotency-Key header (it becomes part of a Redis key).
const MaxIdempotencyKeyBytes = 128

type publishResponse struct {
	ID         string `json:"id"`                   // the message's cursor (its stream ID on the shard)
	Shard      int    `json:"shard"`                // the shard it went to
	EventID    string `json:"eventId"`              // the CloudEvents id subscribers get: the producer's, or "<shard>:<id>"
	Duplicate  bool   `json:"duplicate,omitempty"`  // an Idempotency-Key retry: nothing new was stored
	Replicated *bool  `json:"replicated,omitempty"` // with ?ack=replicated: did a replica confirm it in time
	Replicas   *int   `json:"replicas,omitempty"`   // with ?ack=replicated: how many replicas confirmed
}

// publishParams are what a publish request says outside its body.
type publishParams struct {
	key          string // ?key= ("" if absent)
	waitReplicas int    // 1 with ?ack=replicated
	idem         string // Idempotency-Key ("" if absent)
	retryKey     bool   // idem is one the sidecar made up for its own retries
}

// readPublishParams reads and checks them, or answers 400 and returns false.
func readPublishParams(w http.ResponseWriter, r *http.Request) (publishParams, bool) {
	q := r.URL.Query()
	p := publishParams{key: q.Get("key"), idem: r.Header.Get("Idempotency-Key"), retryKey: r.Header.Get(RetryKeyHeader) == "1"}
	if p.key != "" {
		if err := event.ValidateField("key", p.key, event.MaxKeyBytes); err != nil {
			WriteError(w, http.StatusBadRequest, "query parameter key: "+err.Error())
			return p, false
		}
	}
	switch ack := q.Get("ack"); ack {
	case "", "leader":
	case "replicated":
		p.waitReplicas = 1
	default:
		WriteError(w, http.StatusBadRequest, "query parameter ack must be \"leader\" (default) or \"replicated\", not "+strconv.Quote(clip(ack)))
		return p, false
	}
	if p.idem != "" || len(r.Header.Values("Idempotency-Key")) > 0 {
		if err := ValidIdempotencyKey(p.idem); err != nil {
			WriteError(w, http.StatusBadRequest, "Idempotency-Key header: "+err.Error())
			return p, false
		}
	}
	return p, true
}

func (s *Server) publish(w http.ResponseWriter, r *http.Request) {
	params, ok := readPublishParams(w, r)
	if !ok {
		return
	}
	ct := r.Header.Get("Content-Type")
	if IsBatch(ct) {
		s.publishBatch(w, r, params)
		return
	}
	key, waitReplicas, idem := params.key, params.waitReplicas, params.idem
	limit := s.maxBytes
	if IsStructured(ct) {
		limit = s.maxBytes*2 + 16<<10 // room for the envelope and base64; data is checked below
	}
	if r.ContentLength > limit {
		WriteError(w, http.StatusRequestEntityTooLarge, "body of "+strconv.FormatInt(r.ContentLength, 10)+
			" bytes is over this channel's maxMessageBytes ("+strconv.FormatInt(s.maxBytes, 10)+")")
		return
	}
	body, ok := ReadBody(w, r, limit, "body is over this channel's maxMessageBytes ("+strconv.FormatInt(s.maxBytes, 10)+")")
	if !ok {
		return
	}
	in, err := event.ParsePublish(r.Header, body)
	if err != nil {
		code := http.StatusBadRequest
		if errors.Is(err, event.ErrUnsupportedMediaType) {
			code = http.StatusUnsupportedMediaType
		}
		WriteError(w, code, err.Error())
		return
	}
	if int64(len(in.Data)) > s.maxBytes {
		WriteError(w, http.StatusRequestEntityTooLarge, "data of "+strconv.Itoa(len(in.Data))+" bytes is over this channel's maxMessageBytes ("+strconv.FormatInt(s.maxBytes, 10)+")")
		return
	}
	switch {
	case key == "" && in.Subject == "":
		WriteError(w, http.StatusBadRequest, "a message needs a key: ?key=K (or the CloudEvent subject: Ce-Subject, or subject in a structured CloudEvent)")
		return
	case key == "":
		key = in.Subject
	case in.Subject != "" && in.Subject != key:
		WriteError(w, http.StatusBadRequest, "?key="+strconv.Quote(clip(key))+" and the CloudEvent subject "+strconv.Quote(clip(in.Subject))+" differ; the key is the subject")
		return
	}
	if shard := s.cfg.Map.ShardFor(key); shard != s.cfg.Shard {
		s.misdirected(w, "", key, shard)
		return
	}
	producerID := in.Attrs.StringValue("id")
	idem, retryKey, fromEventID := idempotencyOf(idem, params.retryKey, in)
	res, err := s.cfg.Publisher.Publish(r.Context(), upstream.PublishRequest{
		Key: key, Type: in.Type, ContentType: in.ContentType, Attrs: in.Attrs.String(), Data: in.Data,
		IdempotencyKey: idem, Caller: callerOf(r), RetryKey: retryKey, WaitReplicas: waitReplicas, WaitTimeout: s.cfg.WaitTimeout,
	})
	if errors.Is(err, upstream.ErrIdempotencyConflict) {
		if fromEventID {
			WriteError(w, http.StatusConflict, "CloudEvent id "+strconv.Quote(clip(producerID))+" was used for another message (stored as "+res.ID.String()+
				"); an event sent again must be the same event, a new event needs a new id")
			return
		}
		WriteError(w, http.StatusConflict, "Idempotency-Key "+strconv.Quote(idem)+" was used for another message (stored as "+res.ID.String()+
			"); a retry must send the same key, type, content type, attributes and data, a new message needs a new key")
		return
	}
	if err != nil {
		if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
			return // the publisher went away; it does not know the outcome and retries with its Idempotency-Key
		}
		s.cfg.Metrics.PublishErrors.Inc()
		// The caller learns what to do; the error, which names Redis nodes, goes to the log.
		s.cfg.Logger.Warn("publish failed", "error", err.Error())
		w.Header().Set("Retry-After", "1")
		WriteError(w, http.StatusServiceUnavailable, "Redis did not accept the message; retry with the same Idempotency-Key to stay exactly-once")
		return
	}
	// Every publish answers this: built by hand, without encoding/json's reflection.
	b := append(s.accepted(res, producerID, waitReplicas, len(body)).appendJSON(make([]byte, 0, 128)), '\n')
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	w.WriteHeader(http.StatusAccepted)
	_, _ = w.Write(b)
}

var jsonContentType = []string{"application/json"}

// accepted counts a stored publish of size bytes (unless it was stored before) and returns its
// answer; producerID is the event's own id, if any.
func (s *Server) accepted(res upstream.PublishResult, producerID string, waitReplicas, size int) publishResponse {
	if !res.Duplicate {
		s.cfg.Metrics.Published.Inc()
		s.cfg.Metrics.PublishedBytes.Add(float64(size))
	}
	resp := publishResponse{ID: res.ID.String(), Shard: s.cfg.Shard, EventID: producerID, Duplicate: res.Duplicate}
	if resp.EventID == "" {
		resp.EventID = strconv.Itoa(s.cfg.Shard) + ":" + resp.ID
	}
	if waitReplicas > 0 {
		resp.Replicated, resp.Replicas = &res.Replicated, &res.Replicas
	}
	return resp
}

// idempotencyOf is the Idempotency-Key a publish goes with: key (retry: one the sidecar made up
// for its own retries), unless the event's own id (with its source) identifies it, which wins
// over a made-up key or none: a producer that sends an event again is retrying, as CloudEvents
// says. fromID reports that the id won.
func idempotencyOf(key string, retry bool, in event.Publish) (idem string, retryKey, fromID bool) {
	if id := in.Attrs.StringValue("id"); id != "" && (key == "" || retry) {
		return eventIdempotencyKey(in.Attrs.StringValue("source"), id), false, true
	}
	return key, retry, false
}

// appendJSON appends the answer as encoding/json would write it.
func (r publishResponse) appendJSON(b []byte) []byte {
	b = append(b, `{"id":`...)
	b = event.AppendJSONString(b, r.ID)
	b = append(b, `,"shard":`...)
	b = strconv.AppendInt(b, int64(r.Shard), 10)
	b = append(b, `,"eventId":`...)
	b = event.AppendJSONString(b, r.EventID)
	if r.Duplicate {
		b = append(b, `,"duplicate":true`...)
	}
	if r.Replicated != nil {
		b = append(b, `,"replicated":`...)
		b = strconv.AppendBool(b, *r.Replicated)
	}
	if r.Replicas != nil {
		b = append(b, `,"replicas":`...)
		b = strconv.AppendInt(b, int64(*r.Replicas), 10)
	}
	return append(b, '}')
}

// ReadBody reads the request body, at most limit bytes: at once into a buffer of its size when
// the request says how long it is. When it cannot, it answers 413 saying tooLarge, or 400, and
// returns false.
func ReadBody(w http.ResponseWriter, r *http.Request, limit int64, tooLarge string) ([]byte, bool) {
	rd := http.MaxBytesReader(w, r.Body, limit)
	var body []byte
	var err error
	if n := r.ContentLength; n >= 0 && n <= limit {
		body = make([]byte, n)
		_, err = io.ReadFull(rd, body)
	} else {
		body, err = io.ReadAll(rd)
	}
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			WriteError(w, http.StatusRequestEntityTooLarge, tooLarge)
			return nil, false
		}
		WriteError(w, http.StatusBadRequest, "reading the body: "+err.Error())
		return nil, false
	}
	return body, true
}

// eventIdempotencyKey is the Idempotency-Key a publish without one gets from its CloudEvent's
// source and id: a digest, so any id fits the header's rules.
func eventIdempotencyKey(source, id string) string {
	sum := sha256.Sum256([]byte(source + "\x00" + id))
	return "ce-" + hex.EncodeToString(sum[:16])
}

// IsStructured reports whether the Content-Type ct is a CloudEvent in structured mode.
func IsStructured(ct string) bool { return hasMediaType(ct, event.StructuredMediaType) }

// IsBatch reports whether the Content-Type ct is a batch of CloudEvents.
func IsBatch(ct string) bool { return hasMediaType(ct, event.BatchMediaType) }

// hasMediaType reports whether the Content-Type ct is mt, with or without parameters.
func hasMediaType(ct, mt string) bool {
	return len(ct) >= len(mt) && strings.EqualFold(ct[:len(mt)], mt) && (len(ct) == len(mt) || ct[len(mt)] == ';' || ct[len(mt)] == ' ' || ct[len(mt)] == '\t')
}

// ValidIdempotencyKey checks an Idempotency-Key header: 1 to MaxIdempotencyKeyBytes printable
// ASCII characters without spaces.
func ValidIdempotencyKey(k string) error {
	if k == "" || len(k) > MaxIdempotencyKeyBytes {
		return errors.New("must be 1 to " + strconv.Itoa(MaxIdempotencyKeyBytes) + " characters")
	}
	for i := 0; i < len(k); i++ {
		if k[i] <= ' ' || k[i] > '~' {
			return errors.New("must be printable ASCII without spaces (a UUID is a good choice)")
		}
	}
	return nil
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
