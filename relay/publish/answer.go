package publish

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/heraldhq/herald/relay/event"
	"github.com/heraldhq/herald/relay/problem"
)

// Result is what a stored event's publish answers: the 202 body of a single publish, and an
// entry of a batch's answer.
type Result struct {
	ID         string `json:"id"`                   // the message's cursor (its stream ID on the shard)
	Shard      int    `json:"shard"`                // the shard it went to
	EventID    string `json:"eventId"`              // the CloudEvents id subscribers get: the producer's, or "<shard>:<id>"
	Duplicate  bool   `json:"duplicate,omitempty"`  // an Idempotency-Key retry: nothing new was stored
	Replicated *bool  `json:"replicated,omitempty"` // with ?ack=replicated: did a replica confirm it in time
	Replicas   *int   `json:"replicas,omitempty"`   // with ?ack=replicated: how many replicas confirmed
}

// AppendJSON appends r as encoding/json would write it: every publish answers one, so it is
// built by hand, without reflection.
func (r Result) AppendJSON(b []byte) []byte {
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

var jsonContentType = []string{"application/json"}

// WriteAccepted answers a single publish that was stored: 202 with its Result.
func WriteAccepted(w http.ResponseWriter, r Result) {
	b := append(r.AppendJSON(make([]byte, 0, 128)), '\n')
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	w.WriteHeader(http.StatusAccepted)
	_, _ = w.Write(b)
}

// Outcome is what became of one event of a batch: stored (its Result), or not (Status and
// Detail, as {"status","detail"}).
type Outcome struct {
	Result
	Status int    // non-zero: not stored, with this status (409 a reused id or key, 503 retry)
	Detail string // why it was not stored
}

// Stored reports whether the event was stored.
func (o Outcome) Stored() bool { return o.Status == 0 }

// Failed is the outcome of an event that was not stored.
func Failed(status int, detail string) Outcome { return Outcome{Status: status, Detail: detail} }

// AppendJSON appends the outcome as a batch's answer lists it.
func (o Outcome) AppendJSON(b []byte) []byte {
	if o.Stored() {
		return o.Result.AppendJSON(b)
	}
	b = append(b, `{"status":`...)
	b = strconv.AppendInt(b, int64(o.Status), 10)
	b = append(b, `,"detail":`...)
	b = event.AppendJSONString(b, o.Detail)
	return append(b, '}')
}

// MarshalJSON writes the outcome as AppendJSON does (for the events member of a problem).
func (o Outcome) MarshalJSON() ([]byte, error) { return o.AppendJSON(nil), nil }

// UnmarshalJSON reads an entry of a batch's answer: a Result, or {"status","detail"}.
func (o *Outcome) UnmarshalJSON(b []byte) error {
	var v struct {
		Result
		Status int    `json:"status"`
		Detail string `json:"detail"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	if v.Status == 0 && v.ID == "" {
		return errors.New("an event's outcome has neither an id nor a status")
	}
	*o = Outcome{Result: v.Result, Status: v.Status, Detail: v.Detail}
	return nil
}

// ParseBatchAnswer reads a relay's answer to a batch: every event's outcome, in order. ok is
// false for an answer that is not about the events (a 415 of an older relay, a 421, a 401).
func ParseBatchAnswer(body []byte) (outcomes []Outcome, ok bool) {
	var v struct {
		Events []Outcome `json:"events"`
	}
	if json.Unmarshal(body, &v) != nil || len(v.Events) == 0 {
		return nil, false
	}
	return v.Events, true
}

// WriteBatch answers a batch with every event's outcome: 202 {"events":[...]} when all were
// stored; otherwise a problem whose events member lists them, with 503 (retry the same batch)
// when any failed for want of Redis, else the status of the first failure (409: an event sent
// again must be the same event).
func WriteBatch(w http.ResponseWriter, outcomes []Outcome) {
	stored, status, conflicts := 0, 0, 0
	for _, o := range outcomes {
		switch {
		case o.Stored():
			stored++
			continue
		case o.Status == http.StatusConflict:
			conflicts++
		}
		switch {
		case o.Status >= 500:
			status = http.StatusServiceUnavailable
		case status == 0:
			status = o.Status
		}
	}
	if stored == len(outcomes) {
		b := append(make([]byte, 0, 96*len(outcomes)), `{"events":[`...)
		for i, o := range outcomes {
			if i > 0 {
				b = append(b, ',')
			}
			b = o.AppendJSON(b)
		}
		b = append(b, "]}\n"...)
		h := w.Header()
		h["Content-Type"] = jsonContentType
		h["Content-Length"] = []string{strconv.Itoa(len(b))}
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write(b)
		return
	}
	detail := strconv.Itoa(len(outcomes)-stored) + " of " + strconv.Itoa(len(outcomes)) + " events were not stored; events says what became of each. "
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
		detail += "Retry the same batch: its events that were stored come back as duplicates (by their ids, or by the same Idempotency-Key)."
		if conflicts > 0 {
			detail += " The " + strconv.Itoa(conflicts) + " with status 409 will fail again: an event sent again must be the same event."
		}
	} else {
		detail += "The events that failed need mending before they are sent again."
	}
	problem.WriteWith(w, status, detail, map[string]any{"events": outcomes})
}
