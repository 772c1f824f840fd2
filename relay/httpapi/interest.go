package httpapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/heraldhq/herald/relay/cursor"
	"github.com/heraldhq/herald/relay/event"
	"github.com/heraldhq/herald/relay/hub"
	"github.com/heraldhq/herald/relay/problem"
	"github.com/heraldhq/herald/relay/stream"
)

// An interest stream (GET .../events?interest=keys&key=a&key=b, or ?interest=all) is an SSE
// stream whose keys change while it stays connected: a sidecar's one upstream per shard follows
// exactly the keys its local subscribers follow. Once live, the stream announces itself with
// the comment ": stream <id>"; POST .../streams/<id> then adds or removes keys, or switches to
// every key and back, and the change shows in the stream as ": interest <seq> <cursor>": every
// event up to cursor was sent by the old interest, every one after it by the new one. The stream
// stays exact across changes and reconnects: a client that resumes after the last cursor it
// read (an event's id or an interest comment's cursor) with its current interest misses nothing
// and gets nothing twice.

// InterestHeader marks the answer of an interest stream (its value is the interest it opened
// with, "all" or "keys"): a client that asked for one and does not see it talks to a relay that
// predates interest streams, which took the request for a plain stream.
const InterestHeader = "Herald-Interest"

// MaxInterestKeys bounds the keys one interest stream follows.
const MaxInterestKeys = 100_000

// MaxStreamKeys bounds the keys (key= repeated) a plain stream follows: a request's head carries
// them all. An interest stream follows more.
const MaxStreamKeys = 1_000

// interestStream is an announced interest stream, found by the id it announced.
type interestStream struct {
	sub    *hub.Subscriber
	ticket *ticket   // what it holds of the limits (its keys among them); nil without limits
	caller string    // who opened it: only they may change it
	floor  cursor.ID // where its replay ended: changes take effect no earlier
	mu     sync.Mutex
}

// parseInterest reads ?interest=all|keys and the keys (?key= repeated).
func (s *Server) parseInterest(q url.Values) (*hub.Interest, subscribeRequest) {
	in := &hub.Interest{}
	switch v := q.Get("interest"); v {
	case "all":
		in.All = true
	case "keys":
	default:
		return nil, subscribeRequest{status: http.StatusBadRequest, msg: "query parameter interest must be \"all\" (every key of the shard) or \"keys\" (the keys given with key=), not " + strconv.Quote(clip(v))}
	}
	if len(q["key"]) > MaxInterestKeys {
		return nil, subscribeRequest{status: http.StatusBadRequest, msg: "an interest stream follows at most " + strconv.Itoa(MaxInterestKeys) + " keys"}
	}
	for _, k := range q["key"] {
		if bad := s.checkKey("query parameter key", k); bad.status != 0 {
			return nil, bad
		}
		in.Keys = append(in.Keys, k)
	}
	return in, subscribeRequest{}
}

// announce tells an interest stream's client, once it is live, the id its changes are posted
// to; other streams go on as they are. It returns false when the stream failed.
func (s *Server) announce(ctx context.Context, out stream.Sink, sub *hub.Subscriber, req subscribeRequest, last cursor.ID) bool {
	if req.interest == nil || req.fixed {
		return true
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	s.interest.Store(id, &interestStream{sub: sub, ticket: req.ticket, caller: req.caller, floor: last})
	sub.OnClose(func() { s.interest.Delete(id) })
	return out.Write(ctx, []*event.Encoded{{Kind: event.KindNotice, SSE: []byte(": stream " + id + "\n\n")}}) == nil
}

// interestChange is the body of POST .../streams/{stream}.
type interestChange struct {
	Seq    uint64   `json:"seq"`    // echoed in the stream's interest comment
	All    *bool    `json:"all"`    // true: every key of the shard; false: the key set
	Add    []string `json:"add"`    // keys to follow
	Remove []string `json:"remove"` // keys to stop following
}

// maxInterestBody bounds a change's body: room for MaxInterestKeys keys of typical length.
const maxInterestBody = 8 << 20

// adjust applies a change to an announced interest stream and answers where it took effect.
func (s *Server) adjust(w http.ResponseWriter, r *http.Request) {
	v, ok := s.interest.Load(r.PathValue("stream"))
	st, _ := v.(*interestStream)
	if !ok || st.caller != callerOf(r) {
		problem.Write(w, http.StatusNotFound, "no interest stream "+strconv.Quote(clip(r.PathValue("stream")))+" is open at this relay (it ended, or another caller opened it); open a new one")
		return
	}
	if s.limits != nil && !s.limits.allowChange(callerOf(r)) {
		s.refuse(w, r, RefusedInterestChangeRate, 1)
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "" && mt != "application/json" {
		problem.Write(w, http.StatusUnsupportedMediaType, "a change is application/json, not "+strconv.Quote(clip(r.Header.Get("Content-Type"))))
		return
	}
	body, ok := s.readBody(w, r, maxInterestBody, "a change is at most "+strconv.Itoa(maxInterestBody)+" bytes; send it in parts")
	if !ok {
		return
	}
	c, err := decodeChange(bytes.NewReader(body))
	if err != nil {
		problem.Write(w, http.StatusBadRequest, err.Error())
		return
	}
	for _, k := range c.Add {
		if bad := s.checkKey("add", k); bad.status != 0 {
			s.reject(w, bad)
			return
		}
	}
	st.mu.Lock() // one change at a time per stream: the key limit is checked against the result
	defer st.mu.Unlock()
	_, n := st.sub.Follows()
	if n+len(c.Add) > MaxInterestKeys {
		problem.Write(w, http.StatusBadRequest, "an interest stream follows at most "+strconv.Itoa(MaxInterestKeys)+" keys; this one follows "+strconv.Itoa(n))
		return
	}
	// The keys it may come to follow are taken of the budgets first (an added key it follows
	// already counts as new until the change is in), then set to what it follows.
	if reason := st.ticket.followKeys(n + len(c.Add)); reason != "" {
		s.refuse(w, r, reason, 5)
		return
	}
	at, ok := st.sub.Adjust(hub.Change{All: c.All, Add: c.Add, Remove: c.Remove}, st.floor, func(at cursor.ID) *event.Encoded {
		return &event.Encoded{Kind: event.KindNotice, SSE: []byte(": " + InterestComment(c.Seq, at) + "\n\n")}
	})
	if !ok {
		problem.Write(w, http.StatusNotFound, "the interest stream ended; open a new one")
		return
	}
	s.cfg.Metrics.InterestChanges.Inc()
	all, n := st.sub.Follows()
	st.ticket.followKeys(n)
	WriteJSON(w, http.StatusOK, map[string]any{"seq": c.Seq, "at": at.String(), "all": all, "keys": n})
}

// InterestComment is the text of the comment that shows change seq in effect after at.
func InterestComment(seq uint64, at cursor.ID) string {
	return "interest " + strconv.FormatUint(seq, 10) + " " + at.String()
}

// ParseInterestComment reads an InterestComment; ok is false for any other comment.
func ParseInterestComment(comment string) (seq uint64, at cursor.ID, ok bool) {
	rest, found := strings.CutPrefix(comment, "interest ")
	if !found {
		return 0, cursor.ID{}, false
	}
	s, c, found := strings.Cut(rest, " ")
	if !found {
		return 0, cursor.ID{}, false
	}
	seq, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, cursor.ID{}, false
	}
	if at, err = cursor.Parse(c); err != nil {
		return 0, cursor.ID{}, false
	}
	return seq, at, true
}

// decodeChange reads a change's body: one JSON object with known fields and valid keys.
func decodeChange(r io.Reader) (interestChange, error) {
	var c interestChange
	if err := decodeStrict(r, &c); err != nil {
		return c, errors.New("the body is not a change ({\"seq\":1,\"all\":false,\"add\":[...],\"remove\":[...]}): " + err.Error())
	}
	for _, keys := range [][]string{c.Add, c.Remove} {
		for _, k := range keys {
			if err := event.ValidateField("key", k, event.MaxKeyBytes); err != nil {
				return c, errors.New("a key of the change: " + err.Error())
			}
		}
	}
	return c, nil
}

// decodeStrict decodes one JSON value into v, refusing unknown fields and trailing data.
func decodeStrict(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}
