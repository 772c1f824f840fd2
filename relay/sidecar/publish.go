package sidecar

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/heraldhq/herald/relay/event"
	"github.com/heraldhq/herald/relay/httpapi"
	"github.com/heraldhq/herald/relay/problem"
	"github.com/heraldhq/herald/relay/publish"
	"github.com/heraldhq/herald/relay/shardmap"
)

// publishAttempts is how many relays a publish is tried on before the app gets 503.
const publishAttempts = 4

// publish routes a message by key to its shard's relays. An attempt that fails (no answer, 5xx,
// 421 after a map refresh, 401 after a token re-read) is repeated on another replica with the
// same Idempotency-Key (one of the sidecar's own when the app sent none), so the message is
// stored at most once; the relay's answer goes back to the app unchanged.
func (s *Sidecar) publish(w http.ResponseWriter, r *http.Request, ch *channel) {
	m := s.shardMap(w, ch)
	if m == nil {
		return
	}
	maxBytes := m.MaxMessageBytes
	if maxBytes <= 0 {
		maxBytes = httpapi.DefaultMaxMessageBytes
	}
	params, err := publish.ReadParams(r)
	if err != nil {
		problem.Write(w, http.StatusBadRequest, err.Error())
		return
	}
	body, ok := httpapi.ReadPublishBody(w, r, maxBytes, func(w http.ResponseWriter, r *http.Request, limit int64, tooLarge string) ([]byte, bool) {
		return httpapi.ReadBody(w, r, limit, httpapi.DefaultBodyReadTimeout, tooLarge)
	})
	if !ok {
		return
	}
	grant := grantOf(r)
	if publish.IsBatch(r.Header.Get("Content-Type")) {
		if grant != nil {
			problem.Write(w, http.StatusUnsupportedMediaType, "the edge takes one event per request, not a batch")
			return
		}
		s.publishBatch(w, r, ch, m, params, body, maxBytes)
		return
	}
	req, bad := publish.Read(params, r.Header, body, maxBytes, nil)
	if grant != nil {
		// End users' events are checked here, not passed on for the relay to judge: a publish
		// grant covers a key, so the key must be read.
		if bad != nil {
			problem.WriteWith(w, bad.Status, bad.Detail, bad.Ext)
			return
		}
		if k := req.Events[0].Key; !grant.MayPublish(k) {
			problem.WriteWith(w, http.StatusForbidden, "the token does not grant publishing to "+strconv.Quote(k), map[string]any{"key": k})
			return
		}
	}
	var key, eventID string
	if bad == nil {
		key, eventID = req.Events[0].Key, req.Events[0].ProducerID()
	} else {
		// The relay refuses it, saying why (or, newer than this sidecar, takes it): route it
		// by what can be read.
		var subject string
		subject, eventID = readableKey(r, body)
		if key = params.Key; key == "" {
			key = subject
		}
		if key == "" {
			problem.Write(w, http.StatusBadRequest, "a message needs a key: ?key=K (or the CloudEvent subject: Ce-Subject, or subject in a structured CloudEvent)")
			return
		}
		if err := event.ValidateField("key", key, event.MaxKeyBytes); err != nil {
			problem.Write(w, http.StatusBadRequest, "query parameter key: "+err.Error())
			return
		}
	}
	hdr := http.Header{}
	for h, v := range r.Header {
		if forwarded(h) {
			hdr[h] = v
		}
	}
	// Retries must not store the message twice: the app's Idempotency-Key, else the event's own
	// id (the relay derives a key from it), else one of the sidecar's own.
	idem, own := params.IdempotencyKey, false
	if idem == "" && eventID == "" {
		idem, own = newIdempotencyKey(), true
	}
	if idem != "" {
		hdr.Set(publish.IdempotencyKeyHeader, idem)
		// The app learns the key its message went with, so it can retry with it.
		w.Header().Set(publish.IdempotencyKeyHeader, idem)
	}
	if own {
		hdr.Set(publish.RetryKeyHeader, "1")
	}

	ctx, cancel := context.WithTimeout(r.Context(), s.opt.PublishTimeout)
	defer cancel()
	shard := m.ShardFor(key)
	alone := func() (*relayAnswer, string) { return s.forward(ctx, ch, shard, r.URL.RawQuery, body, hdr) }
	var ans *relayAnswer
	var lastErr string
	if bad == nil && coalescable(r) {
		ev := &req.Events[0]
		q := &queuedPublish{ctx: ctx, event: event.AppendStructured(make([]byte, 0, len(body)*4/3+256), ev.Publish, ev.Key),
			key: publish.EventKey{Key: idem, Retry: own}, alone: alone, done: make(chan struct{})}
		ch.coalescerFor(shard, req.WaitReplicas).publish(q, func(qs []*queuedPublish) { s.sendBatch(ch, shard, publish.AckQuery(req.WaitReplicas), qs) })
		select {
		case <-q.done:
			if q.failed != 0 { // its event failed in a batch: the answer a single publish gets
				if q.failed == http.StatusServiceUnavailable {
					w.Header().Set("Retry-After", "1")
				}
				problem.Write(w, q.failed, q.detail)
				return
			}
			ans, lastErr = q.ans, q.err
		case <-ctx.Done():
			lastErr = "no answer within " + s.opt.PublishTimeout.String() + " (the message may still be stored)"
		}
	} else {
		ans, lastErr = alone()
	}
	if ans == nil {
		w.Header().Set("Retry-After", "1")
		problem.Write(w, http.StatusServiceUnavailable, "no relay of shard "+strconv.Itoa(shard)+" of channel "+ch.ref.String()+
			" took the message (last: "+lastErr+"); retry with the same Idempotency-Key to stay exactly-once")
		return
	}
	if ans.status == http.StatusAccepted {
		s.met.Published.Inc()
		if own && ans.retried {
			ans.body = notDuplicate(ans.body) // the app sent one message: our own retry is not its duplicate
		}
	}
	ans.writeTo(w)
}

// maxAnswerBytes bounds a relay's answer: a batch's lists every event's result.
const maxAnswerBytes = 8 << 20

// aboutEvents reports whether a relay's answer gives a batch's events their results: then even
// a 503 is final, since resending the whole batch would repeat the events it stored (a Live
// channel keeps no key to recognise them) and put the failed ones after them.
func aboutEvents(answer []byte) bool {
	_, ok := publish.ParseBatchAnswer(answer)
	return ok
}

// relayAnswer is what a shard relay answered a publish.
type relayAnswer struct {
	status  int
	header  http.Header
	body    []byte
	retried bool // an earlier attempt failed: a duplicate may be the sidecar's own retry
}

func (a *relayAnswer) writeTo(w http.ResponseWriter) {
	for _, h := range []string{"Content-Type", "Retry-After", "Allow", "WWW-Authenticate"} {
		if v := a.header.Get(h); v != "" {
			w.Header().Set(h, v)
		}
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(a.body)))
	w.WriteHeader(a.status)
	_, _ = w.Write(a.body)
}

// forward POSTs a publish to a relay of shard. An attempt that fails (no answer, 5xx, 421 after
// a map refresh, 401 after a token re-read) is repeated on another replica; hdr must carry an
// Idempotency-Key (or the events their ids) for that to store nothing twice. It returns nil and
// the last failure when no relay answered otherwise.
func (s *Sidecar) forward(ctx context.Context, ch *channel, shard int, rawQuery string, body []byte, hdr http.Header) (*relayAnswer, string) {
	var lastErr string
	next := -1
	for attempt := 0; attempt < publishAttempts && ctx.Err() == nil; attempt++ {
		if attempt > 0 {
			s.met.PublishRetries.Inc()
		}
		m := ch.shardMap() // a refresh may have moved the shard
		bases, err := s.shardBases(ctx, m.Shards[shard], attempt > 0)
		if err != nil {
			lastErr = err.Error()
			ch.refreshSoon()
			pause(ctx, attempt)
			continue
		}
		if next < 0 {
			next = int(time.Now().UnixNano() % int64(len(bases)))
		} else {
			next++
		}
		base := bases[next%len(bases)]
		// On a Durable channel an attempt gets a third of the publish's time: one sent over a
		// kept-alive connection to a relay whose node went silent (no answer, no reset) leaves
		// time for the others, and the Idempotency-Key makes the retry safe. A Live channel keeps
		// no key: a retry after a relay that was only slow would publish twice, so its attempt
		// has the whole time.
		actx, cancel := ctx, context.CancelFunc(func() {})
		if m.Delivery == shardmap.DeliveryDurable {
			actx, cancel = context.WithTimeout(ctx, s.opt.PublishTimeout/3)
		}
		resp, err := ch.send(actx, http.MethodPost, base+"/v1/channels/"+ch.ref.Name+"/messages?"+rawQuery, bytes.NewReader(body), hdr)
		var answer []byte
		if err == nil {
			answer, err = io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
			resp.Body.Close()
			if err != nil {
				err = fmt.Errorf("reading the answer of %s: %w", base, err)
			}
		}
		cancel()
		if err != nil {
			lastErr = err.Error()
			if ctx.Err() == nil { // the publish's own deadline says nothing of the replica
				s.markDown(base, err)
			}
			continue // a dead or silent replica: the next one
		}
		switch {
		case resp.StatusCode >= 500 && !aboutEvents(answer):
			lastErr = base + " answered " + strconv.Itoa(resp.StatusCode) + ": " + clip(answer)
			pause(ctx, attempt)
			continue
		case resp.StatusCode == http.StatusMisdirectedRequest:
			lastErr = "the relays' shard map differs from the sidecar's; refreshing it"
			ch.refreshSoon()
			pause(ctx, attempt)
			continue
		case resp.StatusCode < 300 && resp.StatusCode != http.StatusAccepted:
			// Relays before this version answered a publish they gave up on while shutting
			// down with an empty 200: no outcome. Another attempt, with the same
			// Idempotency-Key, learns it.
			lastErr = base + " answered " + strconv.Itoa(resp.StatusCode) + " with no outcome"
			continue
		case resp.StatusCode == http.StatusUnauthorized && attempt == 0:
			_, _ = ch.token.get(true) // the kubelet may just have rotated it
			lastErr = clip(answer)
			continue
		}
		return &relayAnswer{status: resp.StatusCode, header: resp.Header, body: answer, retried: attempt > 0}, ""
	}
	return nil, lastErr
}

// downFor is how long a replica that refused a connection, or was slow to answer, is avoided:
// a relay restarting, soon back or gone from the DNS answer, or waiting on Redis.
const downFor = 5 * time.Second

// silentFor is how long a replica that went silent is avoided (a connection to it timed out,
// or its stream sent not even a heartbeat within IdleTimeout): a node that drops packets stays
// silent until Kubernetes marks it NotReady (40-50 s) and DNS leaves its relays out, so after
// 5 s calls would go back to it and wait out a timeout each.
const silentFor = 30 * time.Second

// mark is why and until when a replica is avoided.
type mark struct {
	until  time.Time
	silent bool
}

// markDown remembers that a call to base failed with err, so calls prefer other replicas for a
// while (an endpoints list or DNS answer can lag behind a crash). A call the caller gave up on
// (context.Canceled) says nothing about the replica.
func (s *Sidecar) markDown(base string, err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	now := time.Now()
	m := mark{until: now.Add(downFor)}
	var op *net.OpError
	if errors.Is(err, errIdle) || errors.As(err, &op) && op.Op == "dial" && op.Timeout() {
		m = mark{until: now.Add(silentFor), silent: true}
	}
	s.downMu.Lock()
	defer s.downMu.Unlock()
	if prev, ok := s.down[base]; ok && prev.until.After(m.until) {
		return // a refusal does not shorten a silence
	}
	s.down[base] = m
	// Replicas come and go with their pod addresses: forget the expired ones (failures are rare).
	for k, v := range s.down {
		if now.After(v.until) {
			delete(s.down, k)
		}
	}
}

// markOf returns base's mark, if it is still in force.
func (s *Sidecar) markOf(base string) (mark, bool) {
	s.downMu.Lock()
	defer s.downMu.Unlock()
	m, ok := s.down[base]
	return m, ok && time.Now().Before(m.until)
}

// preferLive returns the bases not marked down; when every one is, those that only refused or
// were slow (a relay restarting), or all of them when every one went silent.
func (s *Sidecar) preferLive(bases []string) []string {
	var live, refused []string
	for _, b := range bases {
		switch m, ok := s.markOf(b); {
		case !ok:
			live = append(live, b)
		case !m.silent:
			refused = append(refused, b)
		}
	}
	switch {
	case len(live) > 0:
		return live
	case len(refused) > 0:
		return refused
	}
	return bases
}

// shardBases returns where to call a shard's relays: its ready replicas by address
// (resolveShard) but those that failed lately (preferLive). When every one of them refused or
// was slow lately, and none went silent, it returns the shard's Service instead, which
// kube-proxy keeps current: a DNS answer can lag a rollout by its TTL (5 s with CoreDNS's
// defaults) and name only relays that are gone. (With an endpoints file there is no Service to
// fall back to.)
func (s *Sidecar) shardBases(ctx context.Context, sh shardmap.Shard, fresh bool) ([]string, error) {
	bases, err := s.resolver.resolveShard(ctx, sh, fresh)
	if err != nil {
		return nil, err
	}
	if sh.Replicas != "" && s.resolver.file.path == "" && s.onlyRefused(bases) {
		return []string{strings.TrimSuffix(sh.Endpoint, "/")}, nil
	}
	return s.preferLive(bases), nil
}

// onlyRefused reports whether every one of bases is marked down, none of them silent.
func (s *Sidecar) onlyRefused(bases []string) bool {
	for _, b := range bases {
		if m, ok := s.markOf(b); !ok || m.silent {
			return false
		}
	}
	return true
}

// pause waits a little before the next attempt (not before the first retry on another replica).
func pause(ctx context.Context, attempt int) {
	select {
	case <-ctx.Done():
	case <-time.After(wait.Jitter(time.Duration(attempt+1)*100*time.Millisecond, 0.2)):
	}
}

// retryBackoff doubles from first to 2 s, jittered so that the sidecars of many pods do not
// retry in step.
func retryBackoff(first time.Duration) wait.Backoff {
	return wait.Backoff{Duration: first, Factor: 2, Jitter: 0.2, Cap: 2 * time.Second, Steps: math.MaxInt32}
}

// forwarded reports whether a request header of the app goes on to the relay: the media type,
// the CloudEvents binary mode attributes and the W3C trace context.
func forwarded(h string) bool {
	switch h {
	case "Content-Type", "Traceparent", "Tracestate":
		return true
	}
	return len(h) > 3 && h[:3] == "Ce-"
}

func newIdempotencyKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "sidecar-" + hex.EncodeToString(b[:])
}

// notDuplicate drops "duplicate" from a 202 body: the Result a relay answered.
func notDuplicate(b []byte) []byte {
	var res publish.Result
	if json.Unmarshal(b, &res) != nil || !res.Duplicate {
		return b
	}
	res.Duplicate = false
	return append(res.AppendJSON(nil), '\n')
}

// readableKey is the subject and id of a publish the sidecar does not read as valid, as far as
// they can be read: for routing it, and deduplicating its retries, all the same.
func readableKey(r *http.Request, body []byte) (subject, id string) {
	if publish.IsStructured(r.Header.Get("Content-Type")) {
		var ce struct {
			Subject string `json:"subject"`
			ID      string `json:"id"`
		}
		_ = json.Unmarshal(body, &ce)
		return ce.Subject, ce.ID
	}
	return r.Header.Get("Ce-Subject"), r.Header.Get("Ce-Id")
}
