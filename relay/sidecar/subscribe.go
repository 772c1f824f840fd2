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
	"time"

	"github.com/heraldhq/herald/relay/cursor"
	"github.com/heraldhq/herald/relay/event"
	"github.com/heraldhq/herald/relay/httpapi"
	"github.com/heraldhq/herald/relay/hub"
)

// serveSSE serves an SSE stream. One that arrives before the channel can be served (its shard
// map unknown, no ready relay for a shard yet: the sidecar is warming up) is answered 200 at
// once and held until it can, because an EventSource never retries an answer that is not 200.
func (s *Sidecar) serveSSE(w http.ResponseWriter, r *http.Request, ch *channel) {
	if r.Method == http.MethodGet {
		if w = httpapi.WaitSSE(r.Context(), w, ch.canServe); w == nil {
			return
		}
	}
	s.subscribe(w, r, ch, sse)
}

func (s *Sidecar) serveWebSocket(w http.ResponseWriter, r *http.Request, ch *channel) {
	s.subscribe(w, r, ch, webSocket)
}

func (s *Sidecar) streams() httpapi.Streams {
	return httpapi.Streams{WriteTimeout: s.opt.WriteTimeout, Browser: s.opt.Browser}
}

// localSub is one local subscriber's view: which shards it reads and where it is on each.
type localSub struct {
	ch        *channel
	key       string           // "" = every key of the channel
	shards    []int            // the shards read: the key's, or all of them in order
	own       cursor.Composite // per entry of shards: the last ID this subscriber was sent
	composite bool             // whole-channel: events carry composite cursors
	synced    bool             // own is the merged stream's cursor, so the shared bytes fit as they are
	seam      []bool           // per entry of shards: live events up to own were sent by replay
	idBuf     []byte
}

// transport is what a subscriber asked for.
type transport int

const (
	sse transport = iota
	webSocket
)

// hijack takes the stream over from net/http, to be served by the hub's writers; a nil stream
// with ok true: it cannot be (HTTP/2, a HEAD), serve it on this goroutine; ok false: the
// WebSocket handshake failed and was answered.
func (s *Sidecar) hijack(w http.ResponseWriter, r *http.Request, sub *hub.Subscriber, kind transport) (stream *httpapi.Stream, ok bool) {
	if r.Method != http.MethodGet {
		return nil, true
	}
	if kind == webSocket {
		return httpapi.HijackWebSocket(w, r, sub, s.opt.WriteTimeout)
	}
	return httpapi.HijackSSE(w, sub, s.opt.WriteTimeout), true
}

// serveOnThisGoroutine serves a stream that could not be taken over, with net/http's writer.
func (s *Sidecar) serveOnThisGoroutine(w http.ResponseWriter, r *http.Request, kind transport, stream func(ctx context.Context, out httpapi.Sink)) {
	if kind == webSocket {
		s.streams().WebSocket(w, r, stream)
		return
	}
	s.streams().SSE(w, r, stream)
}

// subscribe validates the request like a shard relay does, registers the subscriber before any
// replay (so nothing published meanwhile is missed) and pumps events to it.
func (s *Sidecar) subscribe(w http.ResponseWriter, r *http.Request, ch *channel, kind transport) {
	m := s.shardMap(w, ch)
	if m == nil {
		return
	}
	q := r.URL.Query()
	ls := &localSub{ch: ch, key: q.Get("key")}
	if ls.key != "" || q.Has("key") {
		if err := event.ValidateField("key", ls.key, event.MaxKeyBytes); err != nil {
			httpapi.WriteError(w, http.StatusBadRequest, "query parameter key: "+err.Error())
			return
		}
	}
	replayOnly, err := httpapi.ParseLive(q)
	if err != nil {
		httpapi.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	raw, what := httpapi.ResumeCursor(r)
	if ls.key != "" {
		ls.shards = []int{m.ShardFor(ls.key)}
		if raw != "" {
			id, err := cursor.Parse(raw)
			if err != nil {
				httpapi.WriteError(w, http.StatusBadRequest, what+": "+err.Error()+" (a keyed subscription resumes from a plain stream ID)")
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
				httpapi.WriteError(w, http.StatusBadRequest, what+": "+err.Error()+"; this channel has "+strconv.Itoa(len(m.Shards))+" shards")
				return
			}
		}
	}
	if replayOnly && raw == "" {
		httpapi.WriteError(w, http.StatusBadRequest, "live=false replays what is stored after a cursor: give one with Last-Event-ID or ?since=")
		return
	}
	streams, err := ch.open(r.Context())
	if err != nil {
		w.Header().Set("Retry-After", "1")
		httpapi.WriteError(w, http.StatusServiceUnavailable, "cannot subscribe yet: "+err.Error()+"; retry")
		return
	}
	if kind == webSocket && s.streams().RefuseWebSocket(w, r) { // before anything is held for it
		return
	}
	release := func() {}
	if !replayOnly {
		// Register only once the upstream streams follow what this subscriber needs, so it gets
		// every event published from then on.
		if release, err = ls.follow(r.Context(), streams); err != nil {
			w.Header().Set("Retry-After", "1")
			httpapi.WriteError(w, http.StatusServiceUnavailable, "cannot subscribe yet: "+err.Error()+"; retry")
			return
		}
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
		sub, pos = ch.subscribeAll()
		if raw == "" {
			ls.own, ls.synced = pos, true
		}
	}
	sub.OnClose(release) // however the stream ends, pushed ones included
	stream, ok := s.hijack(w, r, sub, kind)
	switch {
	case !ok:
		sub.Close()
	case stream != nil && replayOnly:
		ls.replayAll(r.Context(), stream.Sink())
		stream.End()
	case stream != nil:
		// Replay on this goroutine, then hand the stream to the hub's writers: an idle local
		// subscriber holds no goroutine.
		if raw != "" && !ls.resume(r.Context(), stream.Sink()) {
			stream.End()
			return
		}
		stream.Live(ls.filter, ls.cursor)
	default:
		defer sub.Close()
		s.serveOnThisGoroutine(w, r, kind, func(ctx context.Context, out httpapi.Sink) { ls.pump(ctx, sub, out, raw != "", replayOnly) })
	}
}

// followTimeout bounds how long a subscriber waits for the upstream streams to follow its key.
const followTimeout = 10 * time.Second

// follow asks the upstream streams of ls's shards to follow its key (every key for a
// whole-channel subscriber) and waits until they do; release gives the interest back.
func (ls *localSub) follow(ctx context.Context, streams []*shardStream) (release func(), err error) {
	var held []*shardStream
	release = func() {
		for _, st := range held {
			st.interest.drop(ls.key)
		}
	}
	versions := make([]uint64, len(ls.shards))
	for j, shard := range ls.shards {
		st := streams[shard]
		versions[j] = st.interest.want(ls.key)
		held = append(held, st)
	}
	ctx, cancel := context.WithTimeout(ctx, followTimeout)
	defer cancel()
	for j, st := range held {
		if err := st.interest.await(ctx, versions[j]); err != nil {
			release()
			return nil, errors.New("the sidecar's stream from shard " + strconv.Itoa(st.index) + " does not follow this subscription yet (" + err.Error() + ")")
		}
	}
	return release, nil
}

// pump sends replay (when resuming) and then live events, with the subscriber's own cursors
// until they agree with the merged stream's: a stream served on its own goroutine.
func (ls *localSub) pump(ctx context.Context, sub *hub.Subscriber, out httpapi.Sink, resume, replayOnly bool) {
	if replayOnly {
		ls.replayAll(ctx, out)
		return
	}
	if resume && !ls.resume(ctx, out) {
		return
	}
	var batch []*event.Encoded
	for {
		var err error
		batch, err = sub.Next(ctx, batch)
		if err != nil {
			if errors.Is(err, hub.ErrSlowConsumer) {
				out.Close(httpapi.SlowConsumerReason(ls.cursor()), ls.cursor(), true)
			}
			return
		}
		kept := ls.filter(batch)
		if len(kept) == 0 {
			continue
		}
		if err := out.Write(ctx, kept); err != nil {
			return
		}
	}
}

// replayAll sends what every shard stored after the subscriber's cursor, then ends the stream
// (?live=false).
func (ls *localSub) replayAll(ctx context.Context, out httpapi.Sink) {
	for j := range ls.shards {
		if !ls.replay(ctx, out, j) {
			return
		}
	}
	out.Close(httpapi.EndOfReplay, ls.cursor(), false)
}

// resume sends what each shard stored after the subscriber's cursor and marks the seams, where
// live events the replay already sent are skipped. It reports false when the stream ended.
func (ls *localSub) resume(ctx context.Context, out httpapi.Sink) bool {
	for j := range ls.shards {
		if !ls.replay(ctx, out, j) {
			return false
		}
	}
	ls.seam = make([]bool, len(ls.shards))
	for j := range ls.seam {
		ls.seam[j] = true
	}
	return true
}

// filter prepares a live batch for this subscriber, in place: it drops what the replay sent
// and gives events the subscriber's own cursor until it agrees with the merged stream's.
func (ls *localSub) filter(batch []*event.Encoded) []*event.Encoded {
	kept := batch[:0]
	for _, e := range batch {
		if e.Kind == event.KindHeartbeat || e.Kind == event.KindNotice {
			kept = append(kept, e) // no shard's, no cursor: a pong must not close a seam
			continue
		}
		j := 0
		if ls.composite {
			j = e.Shard
		}
		if ls.seam != nil && ls.seam[j] {
			if e.Kind == event.KindMessage && !ls.own[j].Less(e.ID) {
				continue // replay sent it already
			}
			ls.seam[j] = false // after a gap, IDs may legitimately go lower
		}
		ls.own[j] = e.ID
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

// cursor is where the subscriber is: what it resumes from.
func (ls *localSub) cursor() string { return ls.own.String() }

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
func (ls *localSub) replay(ctx context.Context, out httpapi.Sink, j int) bool {
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
		bases, err := s.resolver.resolve(ctx, m.Shards[shard].Endpoint, attempt > 0)
		if err != nil {
			lastErr = err
			continue
		}
		base := rotate(s.preferLive(bases))[0]
		u := base + "/v1/channels/" + ls.ch.ref.Name + "/events?live=false"
		if ls.key != "" {
			u += "&key=" + url.QueryEscape(ls.key)
		}
		resp, err := ls.ch.get(ctx, u, http.Header{"Last-Event-Id": {ls.own[j].String()}})
		if err != nil {
			lastErr = err
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
	out.Close("cannot replay shard "+strconv.Itoa(shard)+" ("+errString(lastErr)+"); reconnect with Last-Event-ID "+ls.cursor(), ls.cursor(), false)
	return false
}

// readReplay forwards one replay stream in batches; done is true once the relay said the replay
// is complete.
func (ls *localSub) readReplay(ctx context.Context, out httpapi.Sink, body io.Reader, j, limit int) (done bool, err error) {
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
		case comment == httpapi.EndOfReplay:
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
