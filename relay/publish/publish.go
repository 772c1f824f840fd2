// Package publish is the publish call of HTTP API v1 (POST .../messages) as every role reads and
// answers it: its headers and limits, declared once; the validated request, one event or a
// CloudEvents batch, with each event's key and the Idempotency-Key it is deduplicated by; and
// the typed answers, written by a shard relay and read back by a sidecar.
//
// A shard relay reads a request (ReadParams, BodyLimit, ReadBody, Read), checks that every
// event is of its shard and stores them; a sidecar reads the same request the same way before
// it routes the events by key, batches single publishes of its apps, and merges the relays'
// answers (Result, Outcome, ParseBatchAnswer) back into the one its app gets.
package publish

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/heraldhq/herald/relay/event"
)

// The request headers of a publish beyond the CloudEvents ones.
const (
	// IdempotencyKeyHeader makes a publish exactly-once: a retry with the same key and message
	// stores nothing new and answers the first result.
	IdempotencyKeyHeader = "Idempotency-Key"
	// RetryKeyHeader ("1") marks an Idempotency-Key the sidecar made up for its own retries (the
	// app sent none): the relay keeps it only upstream.RetryKeyWindow.
	RetryKeyHeader = "Herald-Retry-Key"
	// EventKeysHeader gives each event of a batch an Idempotency-Key of its own, as the sidecar
	// does for the single publishes it coalesces into one batch: one token per event, in order,
	// separated by spaces: "-" (none), "k:<key>" (the app's key) or "r:<key>" (one the sidecar
	// made up for its own retries, kept at most upstream.RetryKeyWindow).
	EventKeysHeader = "Herald-Event-Keys"
)

// Limits of a publish.
const (
	// MaxIdempotencyKeyBytes bounds the Idempotency-Key header (it becomes part of a Redis key).
	MaxIdempotencyKeyBytes = 128
	// MaxBatchBytes bounds the body of a batched publish (or one event's bound, if larger).
	MaxBatchBytes = 4 << 20
	// envelopeBytes is the room a structured event takes besides its data's bound: its
	// attributes (at most event.MaxAttrsBytes and a few more) and JSON punctuation.
	envelopeBytes = 16 << 10
)

// BodyLimit is the largest body a publish with Content-Type contentType takes on a channel of
// maxBytes per message. Binary mode: the data itself. Structured mode: twice the data (base64
// or escapes) and the envelope; the data is checked against maxBytes once read. A batch:
// MaxBatchBytes, or one structured event's bound if that is larger.
func BodyLimit(maxBytes int64, contentType string) int64 {
	structured := maxBytes*2 + envelopeBytes
	switch {
	case IsBatch(contentType):
		return max(MaxBatchBytes, structured)
	case IsStructured(contentType):
		return structured
	}
	return maxBytes
}

// IsStructured reports whether the Content-Type ct is a CloudEvent in structured mode.
func IsStructured(ct string) bool { return hasMediaType(ct, event.StructuredMediaType) }

// IsBatch reports whether the Content-Type ct is a batch of CloudEvents.
func IsBatch(ct string) bool { return hasMediaType(ct, event.BatchMediaType) }

// hasMediaType reports whether the Content-Type ct is mt, with or without parameters.
func hasMediaType(ct, mt string) bool {
	return len(ct) >= len(mt) && strings.EqualFold(ct[:len(mt)], mt) && (len(ct) == len(mt) || ct[len(mt)] == ';' || ct[len(mt)] == ' ' || ct[len(mt)] == '\t')
}

// Params are what a publish request says outside its body.
type Params struct {
	Key            string // ?key=; "" if absent
	WaitReplicas   int    // 1 with ?ack=replicated
	IdempotencyKey string // Idempotency-Key; "" if absent
	RetryKey       bool   // IdempotencyKey is one the sidecar made up for its own retries
	eventKeys      string // Herald-Event-Keys, read with the batch it is about; "" if absent
	hasEventKeys   bool
}

// ReadParams reads and checks the query and headers of a publish; the error says what is wrong
// (the caller answers 400).
func ReadParams(r *http.Request) (Params, error) {
	q := r.URL.Query()
	p := Params{Key: q.Get("key"), IdempotencyKey: r.Header.Get(IdempotencyKeyHeader), RetryKey: r.Header.Get(RetryKeyHeader) == "1"}
	if p.Key != "" {
		if err := event.ValidateField("key", p.Key, event.MaxKeyBytes); err != nil {
			return p, errors.New("query parameter key: " + err.Error())
		}
	}
	switch ack := q.Get("ack"); ack {
	case "", "leader":
	case "replicated":
		p.WaitReplicas = 1
	default:
		return p, errors.New("query parameter ack must be \"leader\" (default) or \"replicated\", not " + strconv.Quote(clip(ack)))
	}
	if p.IdempotencyKey != "" || len(r.Header.Values(IdempotencyKeyHeader)) > 0 {
		if err := ValidIdempotencyKey(p.IdempotencyKey); err != nil {
			return p, errors.New(IdempotencyKeyHeader + " header: " + err.Error())
		}
	}
	if v, ok := r.Header[EventKeysHeader]; ok {
		p.eventKeys, p.hasEventKeys = strings.Join(v, " "), true
	}
	return p, nil
}

// AckQuery is the query of a publish with waitReplicas: its ack mode.
func AckQuery(waitReplicas int) string {
	if waitReplicas > 0 {
		return "ack=replicated"
	}
	return ""
}

// ValidIdempotencyKey checks an Idempotency-Key: 1 to MaxIdempotencyKeyBytes printable ASCII
// characters without spaces.
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

// Event is one event of a validated publish: what to store, under which key, and the
// Idempotency-Key it is deduplicated by.
type Event struct {
	event.Publish
	Key         string // its key: the subject, or the request's ?key=
	Idempotency string // the Idempotency-Key it goes with; "" for none
	RetryKey    bool   // Idempotency is one a sidecar made up for its own retries
	FromID      bool   // Idempotency is derived from the event's own source and id
	Raw         []byte // a batched event as it was sent (nil for a single publish)
}

// ProducerID is the event's own CloudEvents id, "" if it has none.
func (e *Event) ProducerID() string { return e.Attrs.StringValue("id") }

// Request is a validated publish: one event, or the events of a batch in their order.
type Request struct {
	Params
	Batch  bool
	Events []Event
}

// Error is a publish refused before anything was stored: its status (400, 413, 415, or what a
// Check said) and a detail that says why, naming the event of a batch.
type Error struct {
	Status int
	Detail string
	Ext    map[string]any // extension members of the problem (a 421's shard and endpoint)
}

// Check is a role's own test of each event, after the event was read and before the next one
// is: a shard relay refuses a key of another shard (421). at names a batch's event ("event 3:
// "), "" for a single publish.
type Check func(at string, ev *Event) *Error

func (e *Error) Error() string { return e.Detail }

func badRequest(detail string) *Error { return &Error{Status: http.StatusBadRequest, Detail: detail} }

// Read validates a publish whose body was read (within BodyLimit): the events it carries,
// each with its key and Idempotency-Key, and check's verdict on each (nil: none). Nothing of a
// batch is valid unless every event is.
func Read(p Params, h http.Header, body []byte, maxBytes int64, check Check) (*Request, *Error) {
	if check == nil {
		check = func(string, *Event) *Error { return nil }
	}
	if IsBatch(h.Get("Content-Type")) {
		return readBatch(p, h, body, maxBytes, check)
	}
	in, err := event.ParsePublish(h, body)
	if err != nil {
		if errors.Is(err, event.ErrUnsupportedMediaType) {
			return nil, &Error{Status: http.StatusUnsupportedMediaType, Detail: err.Error()}
		}
		return nil, badRequest(err.Error())
	}
	if e := dataWithin(in, maxBytes, ""); e != nil {
		return nil, e
	}
	key := p.Key
	switch {
	case key == "" && in.Subject == "":
		return nil, badRequest("a message needs a key: ?key=K (or the CloudEvent subject: Ce-Subject, or subject in a structured CloudEvent)")
	case key == "":
		key = in.Subject
	case in.Subject != "" && in.Subject != key:
		return nil, badRequest("?key=" + strconv.Quote(clip(key)) + " and the CloudEvent subject " + strconv.Quote(clip(in.Subject)) + " differ; the key is the subject")
	}
	ev := Event{Publish: in, Key: key}
	if e := check("", &ev); e != nil {
		return nil, e
	}
	ev.Idempotency, ev.RetryKey, ev.FromID = idempotencyOf(p.IdempotencyKey, p.RetryKey, in)
	return &Request{Params: p, Events: []Event{ev}}, nil
}

// readBatch validates a batch: every event, its key (subject or ?key=) and its Idempotency-Key:
// its own id, else its token of EventKeysHeader, else the request's key and its index.
func readBatch(p Params, h http.Header, body []byte, maxBytes int64, check Check) (*Request, *Error) {
	raws, err := event.SplitBatch(body)
	if err != nil {
		return nil, badRequest(err.Error())
	}
	req := &Request{Params: p, Batch: true, Events: make([]Event, len(raws))}
	for i, raw := range raws {
		in, err := event.ParseBatchEvent(h, raw)
		if err != nil {
			return nil, badRequest("event " + strconv.Itoa(i) + ": " + err.Error())
		}
		req.Events[i] = Event{Publish: in, Raw: raw}
	}
	var keys []EventKey
	if p.hasEventKeys {
		if p.IdempotencyKey != "" {
			return nil, badRequest(EventKeysHeader + " and " + IdempotencyKeyHeader + " exclude each other: the first gives each event its own key, the second one key for the batch")
		}
		if keys, err = ParseEventKeys(p.eventKeys, len(raws)); err != nil {
			return nil, badRequest(EventKeysHeader + " header: " + err.Error())
		}
	}
	for i := range req.Events {
		ev, at := &req.Events[i], "event "+strconv.Itoa(i)+": "
		if e := dataWithin(ev.Publish, maxBytes, at); e != nil {
			return nil, e
		}
		var bad string
		if ev.Key, bad = batchEventKey(ev.Subject, p.Key); bad != "" {
			return nil, badRequest(at + bad)
		}
		if e := check(at, ev); e != nil {
			return nil, e
		}
		switch {
		case keys != nil: // as a single publish with its own key
			ev.Idempotency, ev.RetryKey, ev.FromID = idempotencyOf(keys[i].Key, keys[i].Retry, ev.Publish)
		default:
			if ev.Idempotency, ev.RetryKey, ev.FromID = idempotencyOf("", false, ev.Publish); !ev.FromID && p.IdempotencyKey != "" {
				ev.Idempotency, ev.RetryKey = batchIdempotencyKey(p.IdempotencyKey, i), p.RetryKey
			}
		}
	}
	return req, nil
}

// dataWithin refuses data over the channel's maxMessageBytes (413).
func dataWithin(in event.Publish, maxBytes int64, at string) *Error {
	if int64(len(in.Data)) <= maxBytes {
		return nil
	}
	return &Error{Status: http.StatusRequestEntityTooLarge, Detail: at + "data of " + strconv.Itoa(len(in.Data)) +
		" bytes is over this channel's maxMessageBytes (" + strconv.FormatInt(maxBytes, 10) + ")"}
}

// batchEventKey is the key of a batched event: its subject, or the request's ?key= (when both
// are given they must agree). bad says what is wrong, or is "".
func batchEventKey(subject, queryKey string) (key, bad string) {
	switch {
	case subject == "" && queryKey == "":
		return "", "an event needs a key: its subject, or ?key=K for the whole batch"
	case subject == "":
		return queryKey, ""
	case queryKey != "" && subject != queryKey:
		return "", "?key=" + strconv.Quote(clip(queryKey)) + " and the subject " + strconv.Quote(clip(subject)) + " differ; the key is the subject"
	}
	return subject, ""
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

// eventIdempotencyKey is the Idempotency-Key a publish without one gets from its CloudEvent's
// source and id: a digest, so any id fits the header's rules.
func eventIdempotencyKey(source, id string) string {
	sum := sha256.Sum256([]byte(source + "\x00" + id))
	return "ce-" + hex.EncodeToString(sum[:16])
}

// batchIdempotencyKey is the Idempotency-Key of the event at index i of a batch sent with key:
// a digest, so that every event of the batch has its own.
func batchIdempotencyKey(key string, i int) string {
	sum := sha256.Sum256([]byte(key + "\x00" + strconv.Itoa(i)))
	return "b-" + hex.EncodeToString(sum[:16])
}

// EventKey is one event's token of EventKeysHeader.
type EventKey struct {
	Key   string // "" for none
	Retry bool   // made up by the sidecar for its own retries
}

// AppendEventKey appends k's token to a header value (a space first unless b is empty).
func AppendEventKey(b []byte, k EventKey) []byte {
	if len(b) > 0 {
		b = append(b, ' ')
	}
	switch {
	case k.Key == "":
		return append(b, '-')
	case k.Retry:
		b = append(b, "r:"...)
	default:
		b = append(b, "k:"...)
	}
	return append(b, k.Key...)
}

// ParseEventKeys reads an EventKeysHeader value for n events.
func ParseEventKeys(v string, n int) ([]EventKey, error) {
	tokens := strings.Fields(v)
	if len(tokens) != n {
		return nil, errors.New(strconv.Itoa(len(tokens)) + " tokens for " + strconv.Itoa(n) + " events")
	}
	keys := make([]EventKey, n)
	for i, tok := range tokens {
		if tok == "-" {
			continue
		}
		kind, key, ok := strings.Cut(tok, ":")
		if !ok || (kind != "k" && kind != "r") {
			return nil, errors.New("token " + strconv.Itoa(i) + " is not -, k:<key> or r:<key>")
		}
		if err := ValidIdempotencyKey(key); err != nil {
			return nil, errors.New("token " + strconv.Itoa(i) + ": " + err.Error())
		}
		keys[i] = EventKey{Key: key, Retry: kind == "r"}
	}
	return keys, nil
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
