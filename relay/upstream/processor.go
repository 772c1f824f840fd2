package upstream

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/heraldhq/herald/relay/cursor"
	"github.com/heraldhq/herald/relay/event"
)

// process is the single goroutine that turns live messages and catch-up reads into hub
// broadcasts, in stream order, each ID at most once.
func (s *Subscription) process(ctx context.Context) {
	var (
		pending     bool      // a catch-up is due
		failed      bool      // the last catch-up failed: drop live messages until the next session's
		lastCatchUp time.Time // rate limit of catch-ups not requested by a new session
	)
	for {
		var it item
		select {
		case <-ctx.Done():
			return
		case it = <-s.handoff:
		}
		if it.catchUp && !s.durable && it.session > 1 {
			s.liveGap("the relay lost its Redis subscription and subscribed again; messages published meanwhile are lost (a Live channel keeps no history)")
		}
		if it.catchUp {
			if it.hasBase && !s.lastWasDelivered && s.last.IsZero() {
				s.last = it.baseline
				s.mu.Lock()
				s.lastID = it.baseline // where a sidecar's first stream can start (see Status.LastDelivered)
				s.mu.Unlock()
			}
			s.writer = it.writer
			pending = true
		}
		if s.overflow.Swap(false) {
			if s.durable {
				pending = true // catch-up reads what was dropped from the stream
			} else {
				s.liveGap("the relay dropped live messages it could not hand on in time; a Live channel cannot replay them")
			}
		}
		if pending && (it.catchUp || time.Since(lastCatchUp) > 50*time.Millisecond) {
			lastCatchUp = time.Now()
			if err := s.catchUp(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				s.log.Warn("catch-up from the stream failed; rebuilding the subscription", "error", err.Error())
				select {
				case s.kick <- struct{}{}:
				default:
				}
				failed = true
			} else {
				pending, failed = false, false
				s.caughtUp.Store(it.session)
			}
		}
		if failed || it.payload == "" {
			continue // after a failed catch-up, the next session's catch-up reads these from the stream
		}
		if !s.deliverLive(it) {
			pending = true
		}
	}
}

// liveGap tells every subscriber of a Live channel that messages were lost (gap no-replay),
// never a silent hole: the cursor stays where delivery was.
func (s *Subscription) liveGap(why string) {
	s.hub.Broadcast(s.enc.EncodeGap(event.Gap{Reason: event.GapNoReplay, From: s.last, Resume: s.last, Message: why}))
	s.met.Gaps.WithLabelValues(event.GapNoReplay).Inc()
}

// deliverLive delivers one live message unless catch-up already did. It returns false when the
// message came from a node other than the subscribed master: a stale master (paused past
// node-timeout, now waking up) still runs queued publishes and its SPUBLISH reaches the new
// master over the cluster bus, but its stream entries vanish when it rejoins as a replica.
// Such a message is not delivered; the caller schedules a catch-up so that the stream, read
// from the current master, decides what really exists.
func (s *Subscription) deliverLive(it item) bool {
	m, err := event.DecodeLive(it.payload)
	if err != nil {
		if s.log.Enabled(context.Background(), slog.LevelDebug) {
			s.log.Debug("ignoring a live message not written by a relay", "error", err.Error())
		}
		return true
	}
	if s.durable && m.Writer != s.writer {
		s.met.StaleWriter.Inc()
		return false
	}
	if s.durable && !s.last.Less(m.ID) {
		return true // already delivered by catch-up: the seam between stream and live subscription
	}
	s.deliver(m)
	if lat := it.recv.Sub(time.UnixMilli(int64(m.ID.Ms))); lat >= 0 {
		s.met.Latency.Observe(lat.Seconds())
	}
	return true
}

func (s *Subscription) deliver(m event.Message) {
	s.hub.Broadcast(s.enc.Encode(m))
	if s.durable {
		s.last = m.ID
		s.lastWasDelivered = true
		s.ring.add(m.ID)
	}
	s.mu.Lock()
	s.lastID = m.ID
	s.mu.Unlock()
}

// catchUp checks for a rollback and then delivers every stream entry after the last delivered
// ID. Live channels have no stream: there is nothing to catch up.
func (s *Subscription) catchUp(ctx context.Context) error {
	if !s.durable {
		return nil
	}
	info, err := streamInfo(ctx, s.cluster, s.shard.Stream)
	if err != nil {
		return err
	}
	if s.lastWasDelivered {
		lost := info.LastGenerated.Less(s.last)
		if !lost && !info.Trimmed(s.last.Prev()) {
			xs, err := s.cluster.XRangeN(ctx, s.shard.Stream, s.last.String(), s.last.String(), 1).Result()
			if err != nil {
				return fmt.Errorf("checking that entry %v survived: %w", s.last, err)
			}
			lost = len(xs) == 0
		}
		if lost {
			survivor, err := s.findSurvivor(ctx, info)
			if err != nil {
				return err
			}
			s.reportRollback(info, survivor)
		}
	}
	for {
		msgs, err := readAfter(ctx, s.cluster, s.shard.Stream, s.last, s.opt.CatchUpBatch)
		if err != nil {
			return err
		}
		for _, m := range msgs {
			s.deliver(m)
		}
		s.met.Backfilled.Add(float64(len(msgs)))
		if int64(len(msgs)) < s.opt.CatchUpBatch {
			return nil
		}
	}
}

// findSurvivor walks the stream backwards from the last delivered ID to the newest entry this
// relay delivered that is still there. Entries after it were written after the failover (even
// if their IDs are lower than IDs delivered before it) and must be delivered.
func (s *Subscription) findSurvivor(ctx context.Context, info StreamInfo) (cursor.ID, error) {
	oldest, haveOldest := s.ring.oldest()
	end := s.last.String()
	for range 100 {
		xs, err := s.cluster.XRevRangeN(ctx, s.shard.Stream, end, "-", 100).Result()
		if err != nil {
			return cursor.ID{}, fmt.Errorf("looking for the newest surviving entry: %w", err)
		}
		if len(xs) == 0 {
			return info.MaxDeleted, nil // nothing at or before it survived: start after what was trimmed
		}
		for _, x := range xs {
			id, err := parseRedisID(x.ID)
			if err != nil {
				return cursor.ID{}, err
			}
			if s.ring.contains(id) || (haveOldest && !oldest.Less(id)) {
				return id, nil
			}
			end = id.Exclusive()
		}
	}
	return oldest, nil
}

func (s *Subscription) reportRollback(info StreamInfo, survivor cursor.ID) {
	rb := Rollback{At: time.Now(), LastDelivered: s.last, Survivor: survivor, LastGenerated: info.LastGenerated}
	s.met.Rollbacks.Inc()
	s.log.Error("Redis lost stream entries this relay had delivered (failover with asynchronous replication); stream IDs went backwards",
		"stream", s.shard.Stream, "lastDelivered", rb.LastDelivered.String(), "survivor", survivor.String(), "lastGenerated", info.LastGenerated.String())
	s.mu.Lock()
	s.rollbacks = append(s.rollbacks, rb)
	if len(s.rollbacks) > s.opt.RollbackLog {
		s.rollbacks = s.rollbacks[1:]
	}
	s.mu.Unlock()
	s.hub.Broadcast(s.enc.EncodeGap(event.Gap{
		Reason: event.GapRollback, From: s.last, Resume: survivor,
		Message: "Redis lost entries after " + survivor.String() + " up to " + s.last.String() +
			" in a failover; delivery continues after " + survivor.String() + " and later IDs may be lower than ones already delivered",
	}))
	s.met.Gaps.WithLabelValues(event.GapRollback).Inc()
	s.last = survivor
	s.ring.reset()
	s.ring.add(survivor)
}

// ResumePlan says where a subscriber resuming after cursor c continues and which gap it must
// be told about first (nil: none). For a Durable channel the start is exclusive: replay reads
// entries after it.
func (s *Subscription) ResumePlan(ctx context.Context, c cursor.ID) (cursor.ID, *event.Gap, error) {
	if !s.durable {
		return c, &event.Gap{Reason: event.GapNoReplay, From: c, Resume: c,
			Message: "this channel has Live delivery: nothing is stored, so nothing can be replayed"}, nil
	}
	info, err := streamInfo(ctx, s.cluster, s.shard.Stream)
	if err != nil {
		return cursor.ID{}, nil, err
	}
	start := c
	var gap *event.Gap
	s.mu.Lock()
	for i := len(s.rollbacks) - 1; i >= 0; i-- {
		rb := s.rollbacks[i]
		if rb.Survivor.Less(start) && !rb.LastDelivered.Less(start) {
			start = rb.Survivor
			gap = &event.Gap{Reason: event.GapRollback, From: c,
				Message: "Redis lost entries after " + rb.Survivor.String() + " up to " + rb.LastDelivered.String() + " in a failover; replaying what was written after " + rb.Survivor.String()}
			break
		}
	}
	s.mu.Unlock()
	if gap == nil && info.LastGenerated.Less(start) {
		start = info.LastGenerated
		gap = &event.Gap{Reason: event.GapCursorAhead, From: c,
			Message: "the cursor is newer than anything the stream holds (Redis lost entries, or the cursor is not from this channel); continuing after " + start.String()}
	}
	if info.Trimmed(start) {
		if gap == nil {
			gap = &event.Gap{Reason: event.GapTrimmed, From: c,
				Message: "entries after " + c.String() + " were removed by the channel's retention; continuing with the oldest retained entry"}
		}
		if start.Less(info.RetainedAfter()) {
			start = info.RetainedAfter()
		}
	}
	if gap != nil {
		gap.Resume = start
	}
	return start, gap, nil
}

// ReadAfter returns up to count stream entries after id, for replay to a resuming subscriber.
func (s *Subscription) ReadAfter(ctx context.Context, after cursor.ID, count int64) ([]event.Message, error) {
	return readAfter(ctx, s.cluster, s.shard.Stream, after, count)
}

// Durable reports whether the channel stores messages (and so can replay them).
func (s *Subscription) Durable() bool { return s.durable }
