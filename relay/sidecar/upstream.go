package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald/relay/cursor"
	"github.com/heraldhq/herald/relay/event"
	"github.com/heraldhq/herald/relay/httpapi"
	"github.com/heraldhq/herald/relay/hub"
	"github.com/heraldhq/herald/relay/shardmap"
)

// shardStream is the sidecar's ONE upstream stream for one shard of a channel.
type shardStream struct {
	ch        *channel
	index     int
	keyed     *hub.Hub  // keyed local subscribers of this shard
	interest  *interest // what they need of the upstream stream (interest.go)
	connected atomic.Bool

	pos       cursor.ID // owned by run: the last event received
	plainNext bool      // owned by run: open the next stream without interest (an older relay)

	mu         sync.Mutex // guards the status below
	replica    string
	shown      cursor.ID
	reconnects uint64
}

func (st *shardStream) snapshot() (replica, position string, reconnects uint64) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.replica, st.shown.String(), st.reconnects
}

// advance moves the stream's position to at, if it is later, without an event (an interest
// change took effect there).
func (st *shardStream) advance(at cursor.ID) {
	if !st.pos.Less(at) {
		return
	}
	st.pos = at
	st.ch.advance(st.index, at)
	st.mu.Lock()
	st.shown = at
	st.mu.Unlock()
}

// errIdle ends a stream that sent nothing, not even a heartbeat, for IdleTimeout.
var errIdle = errors.New("no event or heartbeat within the idle timeout")

// run keeps the stream open until ctx ends: on any failure it reconnects, to the next replica,
// with its cursor, and skips what it already has (the seam), so nothing is lost or repeated.
func (st *shardStream) run(ctx context.Context) {
	log := st.ch.s.log.With("channel", st.ch.ref.String(), "shard", st.index)
	// Each sidecar starts on a replica of its own: sorted DNS answers would otherwise put every
	// sidecar's stream of a shard on one relay.
	next, retry, failures := rand.IntN(1<<16), retryBackoff(50*time.Millisecond), 0
	for ctx.Err() == nil {
		err := st.session(ctx, &next, failures > 0)
		st.connected.Store(false)
		if ctx.Err() != nil {
			return
		}
		failures++
		next++ // another replica next time
		st.ch.s.met.Reconnects.Inc()
		st.mu.Lock()
		st.reconnects++
		st.mu.Unlock()
		log.Warn("upstream stream lost; reconnecting to another replica with the cursor", "error", err.Error(), "cursor", st.pos.String())
		if failures > 1 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(retry.Step()):
			}
		}
		if failures%4 == 0 {
			st.ch.refreshSoon()
		}
	}
}

// session opens one stream and reads it until it fails.
func (st *shardStream) session(ctx context.Context, next *int, fresh bool) error {
	m := st.ch.shardMap()
	bases, err := st.ch.s.shardBases(ctx, m.Shards[st.index], fresh)
	if err != nil {
		return err
	}
	base := bases[*next%len(bases)]
	durable := m.Delivery == shardmap.DeliveryDurable
	hdr := http.Header{}
	if durable {
		hdr.Set("Last-Event-ID", st.pos.String())
	}
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	open := st.interest.query()
	defer st.interest.closed()
	u := base + "/v1/channels/" + st.ch.ref.Name + "/events"
	plain := st.plainNext
	st.plainNext = false
	if !plain {
		u += "?" + open.values().Encode()
	}
	resp, err := st.ch.get(sctx, u, hdr)
	if err != nil {
		st.ch.s.markDown(base, err)
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		err := fmt.Errorf("%s answered %d: %s", base, resp.StatusCode, clip(b))
		if resp.StatusCode == http.StatusUnauthorized {
			_, _ = st.ch.token.get(true)
		} else {
			st.ch.s.markDown(base, err) // a relay that lost Redis or shuts down: another first
		}
		return err
	}
	if plain {
		st.interest.openedPlain()
	} else if resp.Header.Get(httpapi.InterestHeader) == "" {
		// A relay from before interest streams took the request for a plain stream (of one key
		// at most): this once, follow the whole shard the old way.
		st.plainNext = true
		return fmt.Errorf("the relay at %s does not serve interest streams (an older version); following the whole shard", base)
	}
	st.connected.Store(true)
	st.mu.Lock()
	st.replica = base
	st.mu.Unlock()
	if !durable && fresh {
		// A Live channel keeps nothing to resume from: what was published while this stream
		// was down is lost, and local subscribers are told so, never left with a silent hole.
		st.ch.deliver(st.index, st.ch.enc.ForShard(st.index).EncodeGap(event.Gap{Reason: event.GapNoReplay, From: st.pos, Resume: st.pos,
			Message: "the sidecar's stream from the shard relay broke and was re-opened; messages published meanwhile on this Live channel are lost"}))
		st.ch.s.met.Gaps.Inc()
	}
	// A watchdog ends a stream that went silent (a relay that hangs without closing).
	idle := time.AfterFunc(st.ch.s.opt.IdleTimeout, func() { cancel(errIdle) })
	defer idle.Stop()
	seam := durable // a reconnect may repeat what the last stream already sent
	err = readFrames(resp.Body, maxLine(m), func(e *event.Encoded) error {
		idle.Reset(st.ch.s.opt.IdleTimeout)
		if seam && e.Kind == event.KindMessage && !st.pos.Less(e.ID) {
			return nil
		}
		seam = false
		st.ch.deliver(st.index, e)
		st.pos = e.ID
		st.mu.Lock()
		st.shown = e.ID
		st.mu.Unlock()
		return nil
	}, func(comment string) error {
		idle.Reset(st.ch.s.opt.IdleTimeout)
		if seq, at, ok := httpapi.ParseInterestComment(comment); ok {
			// Everything up to at that the old interest took has come: the stream is at at.
			st.advance(at)
			st.interest.shown(seq)
			return nil
		}
		if id, ok := strings.CutPrefix(comment, "stream "); ok {
			st.interest.opened(id, base, open, cancel)
			return nil
		}
		if strings.HasPrefix(comment, "closed:") {
			return errors.New("the relay closed the stream: " + comment)
		}
		return nil
	})
	if cause := context.Cause(sctx); cause != nil && ctx.Err() == nil {
		if cause == errIdle {
			// A relay that went silent (its node drops packets) is left for silentFor, so the
			// next stream and publishes go to another replica, not back to it through a
			// reconnect that waits out a timeout.
			st.ch.s.markDown(base, cause)
		}
		return cause
	}
	if err == io.EOF {
		err = errors.New("the relay ended the stream")
	}
	if err != nil && ctx.Err() == nil {
		// The relay ended the stream (it lost Redis, or shuts down) or the connection broke: the
		// next stream goes to another replica first, not back to this one, which a DNS answer may
		// still name for a few seconds after it turned unready.
		st.ch.s.markDown(base, err)
	}
	return err
}
