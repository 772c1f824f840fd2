//go:build e2e

package e2e

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/relay/shardmap"
)

// load is a publisher and four subscribers (whole channel and one key, over SSE and WebSocket)
// working through one app pod's sidecar while a test does harm around them.
type load struct {
	t        *testing.T
	subs     []*subscriber
	pl       *publishLog
	stopSubs context.CancelFunc
	subsDone sync.WaitGroup
	pubDone  chan struct{}
}

// startLoad connects the subscribers, starts publishing (4 workers, rate per second, a message
// given up after a minute) and returns once the first hundred are acknowledged.
func startLoad(t *testing.T, ctx context.Context, m *shardmap.Map, base string, rate float64) *load {
	t.Helper()
	l := &load{t: t, pl: &publishLog{acked: map[int]ack{}}, pubDone: make(chan struct{})}
	subCtx, stop := context.WithCancel(ctx)
	l.stopSubs = stop
	l.subs = []*subscriber{
		newSubscriber(m, base, "whole-sse", "", false), newSubscriber(m, base, "whole-ws", "", true),
		newSubscriber(m, base, "key-sse", keyOf(3), false), newSubscriber(m, base, "key-ws", keyOf(8), true),
	}
	for _, s := range l.subs {
		s.start(subCtx, &l.subsDone)
	}
	t.Cleanup(func() { l.stopSubs(); l.subsDone.Wait() })
	awaitConnected(t, l.subs)
	go func() {
		defer close(l.pubDone)
		publishAll(ctx, l.pl, base, m, 1<<30, 4, rate, keyOf, 60*time.Second)
	}()
	awaitCond(t, 30*time.Second, "the first messages acknowledged", func() bool { return l.pl.count() > 100 })
	return l
}

// deliveredAfter is when the whole-channel subscriber first got a message of shard sent after
// since (zero when none yet).
func (l *load) deliveredAfter(shard int, since time.Time) time.Time {
	sent := map[int]bool{}
	for _, a := range l.pl.snapshot() {
		if a.shard == shard && a.sent.After(since) {
			sent[a.seq] = true
		}
	}
	var first time.Time
	for _, e := range l.subs[0].snapshot()[shard] {
		if !e.isGap && sent[e.seq] && (first.IsZero() || e.at.Before(first)) {
			first = e.at
		}
	}
	return first
}

// finish stops publishing and asserts what Herald promises: every message acknowledged, every
// subscriber got each of its messages once, in order, with no gap.
func (l *load) finish() {
	t := l.t
	t.Helper()
	l.pl.stop.Store(true)
	<-l.pubDone
	t.Logf("published: %d acknowledged, %d given up; %d retries; last error: %v", len(l.pl.acked), len(l.pl.failed), l.pl.retries.Load(), l.pl.lastErr.Load())
	if len(l.pl.failed) > 0 {
		t.Errorf("%d messages were never acknowledged", len(l.pl.failed))
	}
	awaitDelivered(t, l.subs, l.pl, nil)
	l.stopSubs()
	l.subsDone.Wait()
	for _, s := range l.subs {
		v := check(s.snapshot(), l.pl.expectedBy(s), nil)
		t.Logf("%s: %d delivered, %d duplicates, %d out of order, %d gaps, %d reconnects", s.name, v.delivered, v.duplicates, v.outOfOrder, v.rollbackGaps+v.otherGaps, s.reconnects.Load())
		if v.duplicates > 0 || v.outOfOrder > 0 || v.rollbackGaps+v.otherGaps > 0 {
			t.Errorf("%s: %d duplicates, %d out of order, %d gaps (e.g. %s)", s.name, v.duplicates, v.outOfOrder, v.rollbackGaps+v.otherGaps, v.example)
		}
	}
}
