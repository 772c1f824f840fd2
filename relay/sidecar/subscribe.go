package sidecar

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald/relay/cursor"
	"github.com/heraldhq/herald/relay/event"
	"github.com/heraldhq/herald/relay/httpapi"
	"github.com/heraldhq/herald/relay/hub"
	"github.com/heraldhq/herald/relay/problem"
	"github.com/heraldhq/herald/relay/stream"
)

// serveSSE serves an SSE stream. One that arrives before the channel can be served (its shard
// map unknown, no ready relay for a shard yet: the sidecar is warming up) is answered 200 at
// once and held until it can, because an EventSource never retries an answer that is not 200.
func (s *Sidecar) serveSSE(w http.ResponseWriter, r *http.Request, ch *channel) {
	if r.Method == http.MethodGet {
		if w = stream.WaitSSE(r.Context(), w, ch.canServe); w == nil {
			return
		}
	}
	s.subscribe(w, r, ch, stream.SSE)
}

func (s *Sidecar) serveWebSocket(w http.ResponseWriter, r *http.Request, ch *channel) {
	s.subscribe(w, r, ch, stream.WebSocket)
}

// localSub is one local subscriber's stream.Source: which shards it reads and where it is on
// each. Its replay reads every shard's relays (?live=false); live events come from the merged
// upstream streams and get the subscriber's own cursor until it agrees with theirs.
type localSub struct {
	ch        *channel
	key       string           // one key: the subscriber reads its shard's stream as the relay sends it
	keys      []string         // several keys, or prefixes: the merged stream, filtered by the local hub
	shards    []int            // the shards read: the key's, or all of them in order
	resuming  bool             // a cursor was given: replay after own first
	history   int              // ?history=N (not resuming): the last N events of each key first
	own       cursor.Composite // per entry of shards: the last ID this subscriber was sent
	composite bool             // whole-channel: events carry composite cursors
	synced    bool             // own is the merged stream's cursor, so the shared bytes fit as they are
	seam      []bool           // per entry of shards: live events up to own were sent by replay
	idBuf     []byte

	// An edge's WebSocket changes keys while it is live (commands.go), on its command goroutine
	// only; mu orders that with the stream's end, which gives back the upstream interest of the
	// keys followed then. A changed keys is a new slice (never nil: nil is every key).
	mu       sync.Mutex
	released bool // the stream ended and gave its interest back: commands change nothing more
}

// subscribe validates the request like a shard relay does, registers the subscriber before any
// replay (so nothing published meanwhile is missed) and hands it to the stream package, which
// serves the stream to its end.
func (s *Sidecar) subscribe(w http.ResponseWriter, r *http.Request, ch *channel, p stream.Protocol) {
	m := s.shardMap(w, ch)
	if m == nil {
		return
	}
	q := r.URL.Query()
	ls := &localSub{ch: ch}
	keys := q["key"]
	grant := grantOf(r)
	if grant != nil {
		if keys = s.edge.follows(w, grant, keys); keys == nil {
			return
		}
	}
	if len(keys) > 0 {
		if len(keys) > httpapi.MaxStreamKeys {
			problem.Write(w, http.StatusBadRequest, "a stream follows at most "+strconv.Itoa(httpapi.MaxStreamKeys)+" keys (key= repeated)")
			return
		}
		for _, k := range keys {
			if err := event.ValidateField("key", k, event.MaxKeyBytes); err != nil {
				problem.Write(w, http.StatusBadRequest, "query parameter key: "+err.Error())
				return
			}
		}
		// At the edge every stream reads the merged stream, even of one key: its subscriber is
		// adjustable (WebSocket commands) and its cursor the composite one the docs promise.
		if len(keys) == 1 && !event.IsPrefix(keys[0]) && grant == nil {
			ls.key = keys[0]
		} else {
			ls.keys = keys
		}
	}
	replayOnly, err := stream.ParseLive(q)
	if err != nil {
		problem.Write(w, http.StatusBadRequest, err.Error())
		return
	}
	raw, what := stream.ResumeCursor(r)
	ls.resuming = raw != ""
	if ls.history, err = stream.ParseHistory(q, m.HistoryPerKey); err != nil {
		problem.Write(w, http.StatusBadRequest, err.Error())
		return
	}
	if ls.history > 0 {
		if bad := ls.checkHistory(); bad != "" {
			problem.Write(w, http.StatusBadRequest, bad)
			return
		}
		if ls.resuming {
			ls.history = 0 // a resumed stream gets everything after its cursor instead
		}
	}
	if ls.key != "" {
		ls.shards = []int{m.ShardFor(ls.key)}
		if raw != "" {
			id, err := cursor.Parse(raw)
			if err != nil {
				problem.Write(w, http.StatusBadRequest, what+": "+err.Error()+" (a subscription of one key resumes from a plain stream ID)")
				return
			}
			ls.own = cursor.Composite{id}
		}
	} else {
		ls.composite = true
		for i := range m.Shards {
			ls.shards = append(ls.shards, i)
		}
		if raw != "" {
			if ls.own, err = cursor.ParseComposite(raw, len(m.Shards)); err != nil {
				problem.Write(w, http.StatusBadRequest, what+": "+err.Error()+"; this channel has "+strconv.Itoa(len(m.Shards))+" shards")
				return
			}
		}
	}
	if replayOnly && raw == "" && ls.history == 0 {
		problem.Write(w, http.StatusBadRequest, stream.ErrReplayNeedsCursor.Error())
		return
	}
	streams, err := ch.open(r.Context())
	if err != nil {
		w.Header().Set("Retry-After", "1")
		problem.Write(w, http.StatusServiceUnavailable, "cannot subscribe yet: "+err.Error()+"; retry")
		return
	}
	if p == stream.WebSocket && s.opt.Browser.RefuseWebSocket(w, r) { // before anything is held for it
		return
	}
	var held []func() // what the stream gives back when it ends
	release := func() {
		for _, f := range held {
			f()
		}
	}
	if grant != nil {
		admitted, ok := s.edge.admit(w, r, grant)
		if !ok {
			return
		}
		held = append(held, admitted)
	}
	if !replayOnly {
		// Register only once the upstream streams follow what this subscriber needs, so it gets
		// every event published from then on.
		unfollow, err := ls.follow(r.Context(), streams)
		if err != nil {
			release()
			w.Header().Set("Retry-After", "1")
			problem.Write(w, http.StatusServiceUnavailable, "cannot subscribe yet: "+err.Error()+"; retry")
			return
		}
		held = append(held, unfollow)
	}
	var sub *hub.Subscriber
	switch {
	case replayOnly:
		sub = hub.Detached()
	case ls.key != "":
		var pos cursor.ID
		sub, pos = ch.subscribeKey(streams[ls.shards[0]], ls.key)
		if raw == "" {
			ls.own = cursor.Composite{pos}
		}
		ls.synced = true // a keyed subscriber's cursors are the relay's own
	default:
		var pos cursor.Composite
		sub, pos = ch.subscribeAll(ls.keys)
		if raw == "" {
			ls.own, ls.synced = pos, true
		}
	}
	sub.OnClose(release) // however the stream ends
	ls.seam = make([]bool, len(ls.shards))
	o := stream.Options{Protocol: p, WriteTimeout: s.opt.WriteTimeout, ReplayOnly: replayOnly}
	if grant != nil {
		expiry := s.edge.expireWith(sub, grant)
		if p == stream.WebSocket && !replayOnly {
			es := &edgeStream{edge: s.edge, ls: ls, sub: sub, streams: streams, grant: grant, expiry: expiry}
			o.Commands = es.run
		}
	}
	if err := stream.Serve(w, r, sub, ls, o); err != nil {
		problem.Write(w, http.StatusUpgradeRequired, err.Error())
	}
}

// followTimeout bounds how long a subscriber waits for the upstream streams to follow its key.
const followTimeout = 10 * time.Second

// follow asks the upstream streams of ls's shards to follow what it follows (every key for a
// whole-channel subscriber) and waits until they do; release gives back the interest in what
// it follows by then (an edge's WebSocket commands change that).
func (ls *localSub) follow(ctx context.Context, streams []*shardStream) (release func(), err error) {
	var holds []hold
	for j, shard := range ls.shards {
		st := streams[shard]
		for _, k := range ls.shardKeys(j) {
			holds = append(holds, hold{st, k, st.interest.want(k)})
		}
	}
	if err := awaitHolds(ctx, holds); err != nil {
		for _, h := range holds {
			h.st.interest.drop(h.key)
		}
		return nil, err
	}
	return func() {
		ls.mu.Lock()
		defer ls.mu.Unlock()
		ls.released = true
		for j, shard := range ls.shards {
			for _, k := range ls.shardKeys(j) {
				streams[shard].interest.drop(k)
			}
		}
	}, nil
}

// hold is one upstream stream's interest in a key, and the version that brings it.
type hold struct {
	st      *shardStream
	key     string
	version uint64
}

// awaitHolds waits, at most followTimeout, until each upstream stream follows its key.
func awaitHolds(ctx context.Context, holds []hold) error {
	ctx, cancel := context.WithTimeout(ctx, followTimeout)
	defer cancel()
	for _, h := range holds {
		if err := h.st.interest.await(ctx, h.version); err != nil {
			return errors.New("the sidecar's stream from shard " + strconv.Itoa(h.st.index) + " does not follow this subscription yet (" + err.Error() + ")")
		}
	}
	return nil
}

// shardKeys is what the subscriber follows of shard ls.shards[j]: "" for every key, its key, or
// of its keys those of the shard and every prefix (the keys under a prefix hash anywhere).
func (ls *localSub) shardKeys(j int) []string {
	switch {
	case ls.key != "":
		return []string{ls.key}
	case ls.keys == nil:
		return []string{""}
	}
	m, shard := ls.ch.shardMap(), ls.shards[j]
	var keys []string
	for _, k := range ls.keys {
		if event.IsPrefix(k) || m.ShardFor(k) == shard {
			keys = append(keys, k)
		}
	}
	return keys
}

// checkHistory says why a stream cannot start with history: it must name keys, not prefixes
// (history is indexed per key), as at a shard relay.
func (ls *localSub) checkHistory() string {
	if ls.key == "" && ls.keys == nil {
		return "query parameter history: name the keys whose last events to send first (key=)"
	}
	for _, k := range ls.keys {
		if event.IsPrefix(k) {
			return "query parameter history: " + strconv.Quote(k) + " is a prefix; history is kept per key, so name the keys"
		}
	}
	return ""
}

// Replay sends what each shard stored after the subscriber's cursor, or the last events of its
// keys (?history=N), and opens the seams, where live events the replay already sent are skipped.
// It reports false when the stream ended.
func (ls *localSub) Replay(ctx context.Context, out stream.Sink) bool {
	if !ls.resuming && ls.history == 0 {
		return true
	}
	start := ls.own.Clone() // a fresh stream's: where the merged stream was when it registered
	for j := range ls.shards {
		if ls.keys != nil && len(ls.shardKeys(j)) == 0 {
			continue // none of its keys is of this shard
		}
		if !ls.replay(ctx, out, j) {
			return false
		}
		if ls.history > 0 && ls.own[j].Less(start[j]) {
			// The newest event of its keys on this shard is older than where it registered:
			// nothing of its keys lies between, so it is at the registration point.
			ls.own[j] = start[j]
		}
	}
	for j := range ls.seam {
		ls.seam[j] = true
	}
	if ls.history > 0 && ls.composite {
		// History past the registration point (published meanwhile) leaves its cursor ahead
		// of the merged stream's until the merged stream passes it.
		ls.synced = ls.own.String() == start.String()
	}
	return true
}

// Filter prepares a live batch for this subscriber, in place: it drops what the replay sent
// and gives events the subscriber's own cursor until it agrees with the merged stream's.
func (ls *localSub) Filter(batch []*event.Encoded) []*event.Encoded {
	kept := batch[:0]
	for _, e := range batch {
		if e.Kind == event.KindHeartbeat || e.Kind == event.KindNotice {
			kept = append(kept, e) // of no shard: it moves no cursor (a pong must not close a seam)
			continue
		}
		j := 0
		if ls.composite {
			j = e.Shard
		}
		if !stream.Advance(e, &ls.own[j], &ls.seam[j]) {
			continue
		}
		if !ls.synced {
			ls.idBuf = ls.own.AppendTo(ls.idBuf[:0])
			if bytes.Equal(sseID(e), ls.idBuf) {
				ls.synced = true // from now on every merged event is this subscriber's too
			} else if re := event.WithID(e, ls.idBuf); re != nil {
				e = re
			}
		}
		kept = append(kept, e)
	}
	return kept
}

// Cursor is where the subscriber is: what it resumes from.
func (ls *localSub) Cursor() string { return ls.own.String() }

// sseID is the id of an encoded event: the text after "id: " on its first line.
func sseID(e *event.Encoded) []byte {
	line, _, _ := bytes.Cut(e.SSE, []byte("\n"))
	return bytes.TrimPrefix(line, []byte("id: "))
}

// errLocalWrite ends a replay because the local subscriber went away.
var errLocalWrite = errors.New("writing to the local subscriber failed")

// replayAttempts is how many relays a shard replay is tried on.
const replayAttempts = 5

// maxThrottled bounds the 429 answers a replay waits out (each at most 5 s) before it counts
// them as failed attempts.
const maxThrottled = 12

// retryAfter reads a Retry-After of whole seconds, 1 s when there is none, at most limit.
func retryAfter(h http.Header, limit time.Duration) time.Duration {
	n, err := strconv.Atoi(h.Get("Retry-After"))
	if err != nil || n < 1 {
		n = 1
	}
	return min(time.Duration(n)*time.Second, limit)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// replay sends what shard ls.shards[j] stored after ls.own[j], read from its relays with
// ?live=false, and returns false if the stream to the subscriber ended.
func (ls *localSub) replay(ctx context.Context, out stream.Sink, j int) bool {
	s, shard := ls.ch.s, ls.shards[j]
	var lastErr error
	throttled := 0
	for attempt := 0; attempt < replayAttempts; attempt++ {
		if attempt > 0 {
			pause(ctx, attempt)
		}
		if ctx.Err() != nil {
			return false
		}
		m := ls.ch.shardMap()
		bases, err := s.shardBases(ctx, m.Shards[shard], attempt > 0)
		if err != nil {
			lastErr = err
			continue
		}
		base := rotate(bases)[0]
		u := base + "/v1/channels/" + ls.ch.ref.Name + "/events?live=false"
		for _, k := range ls.shardKeys(j) {
			if k != "" {
				u += "&key=" + url.QueryEscape(k)
			}
		}
		hdr := http.Header{"Last-Event-Id": {ls.own[j].String()}}
		if ls.history > 0 {
			u += "&history=" + strconv.Itoa(ls.history)
			hdr = nil // a cursor would make the relay send what came after it instead
		}
		resp, err := ls.ch.get(ctx, u, hdr)
		if err != nil {
			lastErr = err
			s.markDown(base, err)
			continue
		}
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
			resp.Body.Close()
			lastErr = errors.New(base + " answered " + strconv.Itoa(resp.StatusCode) + ": " + clip(b))
			if resp.StatusCode == http.StatusBadRequest {
				break // the relay refuses this cursor; another replica would too
			}
			if resp.StatusCode == http.StatusTooManyRequests && throttled < maxThrottled {
				// The relay's replay limits: wait as told, without spending an attempt.
				throttled++
				attempt--
				sleep(ctx, retryAfter(resp.Header, 5*time.Second))
			}
			continue
		}
		done, err := ls.readReplay(ctx, out, resp.Body, j, maxLine(m))
		resp.Body.Close()
		switch {
		case done:
			s.met.Replays.Inc()
			return true
		case errors.Is(err, errLocalWrite):
			return false
		}
		lastErr = err // the relay broke off: go on from where we are, elsewhere
	}
	out.Close("cannot replay shard "+strconv.Itoa(shard)+" ("+errString(lastErr)+"); reconnect with Last-Event-ID "+ls.Cursor(), ls.Cursor(), false)
	return false
}

// readReplay forwards one replay stream in batches; done is true once the relay said the replay
// is complete.
func (ls *localSub) readReplay(ctx context.Context, out stream.Sink, body io.Reader, j, limit int) (done bool, err error) {
	batch := make([]*event.Encoded, 0, 128)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := out.Write(ctx, batch); err != nil {
			return errLocalWrite
		}
		clear(batch)
		batch = batch[:0]
		return nil
	}
	err = readFrames(body, limit, func(e *event.Encoded) error {
		ls.own[j] = e.ID
		if ls.composite && len(ls.own) > 1 {
			ls.idBuf = ls.own.AppendTo(ls.idBuf[:0])
			if e = event.WithID(e, ls.idBuf); e == nil {
				return nil
			}
		}
		batch = append(batch, e)
		if len(batch) == cap(batch) {
			return flush()
		}
		return nil
	}, func(comment string) error {
		switch {
		case comment == stream.EndOfReplay:
			done = true
			return io.EOF
		case strings.HasPrefix(comment, "closed:"):
			return errors.New("the relay closed the replay: " + comment)
		}
		return nil
	})
	if ferr := flush(); ferr != nil {
		return false, ferr
	}
	return done, err
}

func errString(err error) string {
	if err == nil {
		return "no relay answered"
	}
	return err.Error()
}
