package httpapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/heraldhq/herald/relay/event"
	"github.com/heraldhq/herald/relay/upstream"
)

// MaxBatchBytes bounds the body of a batched publish (or one event's bound, if that is larger).
const MaxBatchBytes = 4 << 20

// BatchLimit is the largest batch body a channel with maxBytes per message takes.
func BatchLimit(maxBytes int64) int64 { return max(MaxBatchBytes, maxBytes*2+16<<10) }

// publishBatch stores a batch of CloudEvents (application/cloudevents-batch+json) in its order,
// at the cost of one request for all of them. Nothing is stored unless every event is valid and
// belongs to this shard. An event with an id is deduplicated by it (and its source), as a single
// publish without Idempotency-Key is; one without by the request's Idempotency-Key, if any, and
// its index in the batch. The answer is 202 with
// every event's result when all were stored; otherwise a problem (503, or 409 for a reused id)
// whose "events" member says, event by event, what was stored, so a retry of the same batch
// stores only what is missing.
func (s *Server) publishBatch(w http.ResponseWriter, r *http.Request, params publishParams) {
	limit := BatchLimit(s.maxBytes)
	if r.ContentLength > limit {
		WriteError(w, http.StatusRequestEntityTooLarge, "batch of "+strconv.FormatInt(r.ContentLength, 10)+" bytes is over "+strconv.FormatInt(limit, 10)+" bytes; send smaller batches")
		return
	}
	body, ok := ReadBody(w, r, limit, "batch is over "+strconv.FormatInt(limit, 10)+" bytes; send smaller batches")
	if !ok {
		return
	}
	events, err := event.ParseBatch(r.Header, body)
	if err != nil {
		WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	var keys []EventKey
	if v, ok := r.Header[EventKeysHeader]; ok {
		if params.idem != "" {
			WriteError(w, http.StatusBadRequest, EventKeysHeader+" and Idempotency-Key exclude each other: the first gives each event its own key, the second one key for the batch")
			return
		}
		if keys, err = ParseEventKeys(strings.Join(v, " "), len(events)); err != nil {
			WriteError(w, http.StatusBadRequest, EventKeysHeader+" header: "+err.Error())
			return
		}
	}
	reqs := make([]upstream.PublishRequest, len(events))
	eventIDs := make([]string, len(events))
	fromID := make([]bool, len(events)) // deduplicated by its own id
	caller := callerOf(r)
	for i, in := range events {
		at := "event " + strconv.Itoa(i) + ": "
		if int64(len(in.Data)) > s.maxBytes {
			WriteError(w, http.StatusRequestEntityTooLarge, at+"data of "+strconv.Itoa(len(in.Data))+" bytes is over this channel's maxMessageBytes ("+strconv.FormatInt(s.maxBytes, 10)+")")
			return
		}
		key, problem := BatchEventKey(in.Subject, params.key)
		if problem != "" {
			WriteError(w, http.StatusBadRequest, at+problem)
			return
		}
		if shard := s.cfg.Map.ShardFor(key); shard != s.cfg.Shard {
			s.misdirected(w, at, key, shard)
			return
		}
		eventIDs[i] = in.Attrs.StringValue("id")
		var idem string
		var retryKey bool
		if keys != nil { // as a single publish with its own key
			idem, retryKey, fromID[i] = idempotencyOf(keys[i].Key, keys[i].Retry, in)
		} else if idem, retryKey, fromID[i] = idempotencyOf("", false, in); !fromID[i] && params.idem != "" {
			idem, retryKey = BatchIdempotencyKey(params.idem, i), params.retryKey
		}
		reqs[i] = upstream.PublishRequest{
			Key: key, Type: in.Type, ContentType: in.ContentType, Attrs: in.Attrs.String(), Data: in.Data,
			IdempotencyKey: idem, Caller: caller, RetryKey: retryKey, WaitReplicas: params.waitReplicas, WaitTimeout: s.cfg.WaitTimeout,
		}
	}
	results, errs := s.cfg.Publisher.PublishBatch(r.Context(), reqs)

	out := append(make([]byte, 0, 96*len(events)), `{"events":[`...)
	stored, status, conflicts := 0, 0, 0
	for i, res := range results {
		if i > 0 {
			out = append(out, ',')
		}
		switch err := errs[i]; {
		case err == nil:
			stored++
			out = s.accepted(res, eventIDs[i], params.waitReplicas, len(reqs[i].Data)).appendJSON(out)
		case errors.Is(err, upstream.ErrIdempotencyConflict):
			conflicts++
			status = max(status, http.StatusConflict)
			what := "its Idempotency-Key"
			if fromID[i] {
				what = "CloudEvent id " + strconv.Quote(clip(eventIDs[i]))
			}
			out = AppendFailure(out, http.StatusConflict, what+" was used for another message (stored as "+res.ID.String()+"); an event sent again must be the same event")
		default:
			if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
				return // the publisher went away; it retries the batch with the same ids
			}
			if status < http.StatusServiceUnavailable {
				s.cfg.Logger.Warn("batch publish failed", "error", err.Error())
			}
			status = http.StatusServiceUnavailable
			s.cfg.Metrics.PublishErrors.Inc()
			out = AppendFailure(out, http.StatusServiceUnavailable, "Redis did not accept it")
		}
	}
	out = append(out, "]}"...)
	if stored == len(events) {
		h := w.Header()
		h["Content-Type"] = jsonContentType
		h["Content-Length"] = []string{strconv.Itoa(len(out) + 1)}
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write(append(out, '\n'))
		return
	}
	var list struct {
		Events []json.RawMessage `json:"events"`
	}
	_ = json.Unmarshal(out, &list)
	WriteBatchProblem(w, status, stored, conflicts, list.Events)
}

// WriteBatchProblem answers status for a batch of which some events were not stored (conflicts
// of them with 409): events lists, in order, each one's result or failure ({"status",
// "detail"}). 503 means: retry.
func WriteBatchProblem(w http.ResponseWriter, status, stored, conflicts int, events []json.RawMessage) {
	detail := strconv.Itoa(len(events)-stored) + " of " + strconv.Itoa(len(events)) + " events were not stored; events says what became of each. "
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
		detail += "Retry the same batch: its events that were stored come back as duplicates (by their ids, or by the same Idempotency-Key)."
		if conflicts > 0 {
			detail += " The " + strconv.Itoa(conflicts) + " with status 409 will fail again: an event sent again must be the same event."
		}
	} else {
		detail += "The events that failed need mending before they are sent again."
	}
	WriteProblem(w, status, detail, map[string]any{"events": events})
}

// AppendFailure appends the entry of an event that was not stored.
func AppendFailure(b []byte, status int, detail string) []byte {
	b = append(b, `{"status":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, `,"detail":`...)
	b = event.AppendJSONString(b, detail)
	return append(b, '}')
}

// BatchEventKey is the key of a batched event: its subject, or the request's ?key= (when both
// are given they must agree). problem says what is wrong, or is "".
func BatchEventKey(subject, queryKey string) (key, problem string) {
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

// BatchIdempotencyKey is the Idempotency-Key of the event at index i of a batch sent with key:
// a digest, so that every event of the batch has its own.
func BatchIdempotencyKey(key string, i int) string {
	sum := sha256.Sum256([]byte(key + "\x00" + strconv.Itoa(i)))
	return "b-" + hex.EncodeToString(sum[:16])
}

// EventKeysHeader gives each event of a batch an Idempotency-Key of its own, as the sidecar does
// for the single publishes it coalesces into one batch: one token per event, in order, separated
// by spaces: "-" (none), "k:<key>" (the app's key) or "r:<key>" (one the sidecar made up for its
// own retries, kept at most upstream.RetryKeyWindow).
const EventKeysHeader = "Herald-Event-Keys"

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
