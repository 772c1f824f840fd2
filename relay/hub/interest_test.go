package hub

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/heraldhq/herald/relay/cursor"
	"github.com/heraldhq/herald/relay/event"
)

// describe renders a batch as "<seq><key>" for messages, "gap" and the notices' text.
func describe(batch []*event.Encoded) string {
	var parts []string
	for _, e := range batch {
		switch e.Kind {
		case event.KindNotice:
			parts = append(parts, strings.TrimSpace(string(e.SSE)))
		case event.KindGap:
			parts = append(parts, "gap")
		case event.KindHeartbeat:
			parts = append(parts, "hb")
		default:
			parts = append(parts, fmt.Sprintf("%d%s", e.ID.Seq, e.Key))
		}
	}
	return strings.Join(parts, " ")
}

func notice(at cursor.ID) *event.Encoded {
	return &event.Encoded{Kind: event.KindNotice, SSE: []byte(": at " + at.String() + "\n\n")}
}

func TestInterestFollowsItsKeysAndChangesBetweenEvents(t *testing.T) {
	h := New(1 << 20)
	s := h.SubscribeInterest(Interest{Keys: []string{"a", "b", "a"}})
	defer s.Close()
	other := h.Subscribe("a") // a plain keyed subscriber shares the key's list
	defer other.Close()

	h.Broadcast(msg(1, "a"))
	h.Broadcast(msg(2, "c"))
	h.Broadcast(msg(3, "b"))
	h.Broadcast(enc.EncodeGap(event.Gap{Reason: event.GapRollback})) // once, though on two lists
	h.Broadcast(event.Heartbeat)
	if got, want := describe(next(t, s)), "1a 3b gap hb"; got != want {
		t.Fatalf("before any change got %q, want %q", got, want)
	}
	// The gap's id (zero) is the newest cursor broadcast; a floor after it wins.
	if at, ok := s.Adjust(Change{Add: []string{"c"}, Remove: []string{"a"}}, cursor.ID{Ms: 1, Seq: 3}, notice); !ok || at != (cursor.ID{Ms: 1, Seq: 3}) {
		t.Fatalf("Adjust = %v, %v; want 1-3 (the floor), true", at, ok)
	}
	h.Broadcast(msg(4, "a"))
	h.Broadcast(msg(5, "c"))
	h.Broadcast(msg(6, "d"))
	if got, want := describe(next(t, s)), ": at 1-3 5c"; got != want {
		t.Fatalf("after removing a and adding c got %q, want %q", got, want)
	}
	if got, want := describe(next(t, other)), "1a gap hb 4a"; got != want {
		t.Fatalf("the plain subscriber of a got %q, want %q", got, want)
	}

	on, off := true, false
	if at, _ := s.Adjust(Change{All: &on}, cursor.ID{}, notice); at != (cursor.ID{Ms: 1, Seq: 6}) {
		t.Fatalf("switching to every key took effect at %v, want 1-6 (the newest broadcast)", at)
	}
	h.Broadcast(msg(7, "x"))
	h.Broadcast(msg(8, "c"))
	h.Broadcast(enc.EncodeGap(event.Gap{Reason: event.GapRollback, Resume: cursor.ID{Ms: 1, Seq: 8}}))
	if got, want := describe(next(t, s)), ": at 1-6 7x 8c gap"; got != want {
		t.Fatalf("following every key got %q, want %q (each once)", got, want)
	}
	s.Adjust(Change{All: &off, Add: []string{"y"}}, cursor.ID{}, notice)
	h.Broadcast(msg(9, "x"))
	h.Broadcast(msg(10, "y"))
	h.Broadcast(msg(11, "b"))
	if got, want := describe(next(t, s)), ": at 1-8 10y 11b"; got != want {
		t.Fatalf("back to the key set (b, c, y) got %q, want %q", got, want)
	}
	if all, n := s.Follows(); all || n != 3 {
		t.Fatalf("Follows = %v, %d; want false, 3", all, n)
	}

	// Closing takes it off every list; the plain subscriber keeps its place.
	s.Close()
	if _, ok := s.Adjust(Change{Add: []string{"z"}}, cursor.ID{}, notice); ok {
		t.Fatal("Adjust of a closed subscriber reported success")
	}
	h.Broadcast(msg(12, "b"))
	h.Broadcast(msg(13, "a"))
	if got := h.Subscribers(); got != 1 {
		t.Fatalf("%d subscribers registered after Close, want 1", got)
	}
	if got, want := describe(next(t, other)), "gap 13a"; got != want {
		t.Fatalf("the plain subscriber got %q after the other left, want %q", got, want)
	}
	if n := len(h.registered()); n != 1 {
		t.Fatalf("registry walk finds %d subscribers, want 1", n)
	}
}

func TestInterestWithNoKeysGetsOnlyGapsAndHeartbeats(t *testing.T) {
	h := New(1 << 20)
	s := h.SubscribeInterest(Interest{})
	defer s.Close()
	h.Broadcast(msg(1, "a"))
	h.Broadcast(event.Heartbeat)
	if got, want := describe(next(t, s)), "hb"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if n := h.Disconnect(ErrUpstreamLost); n != 1 {
		t.Fatalf("Disconnect ended %d subscribers, want 1", n)
	}
}

// Interest routing costs a key's list per event, whatever the number of adjustable
// subscribers following other keys; following a prefix instead of the key costs one more map
// lookup per slash in the event's key ("prefixes" against "keys", each event to one stream).
func BenchmarkBroadcastToInterestStreams(b *testing.B) {
	const streams, keys = 500, 10_000
	for _, follow := range []string{"keys", "prefixes"} {
		b.Run(follow, func(b *testing.B) {
			h := New(1 << 30)
			for i := range streams {
				k := fmt.Sprint("t", i, "/k", i)
				if follow == "prefixes" {
					k = fmt.Sprint("t", i, "/")
				}
				s := h.SubscribeInterest(Interest{Keys: []string{k}})
				defer s.Close()
			}
			events := make([]*event.Encoded, keys)
			for i := range events {
				events[i] = msg(uint64(i), fmt.Sprint("t", i%streams, "/k", i%streams))
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				h.Broadcast(events[i%keys])
			}
		})
	}
}

// BenchmarkHeartbeatToInterestStreams: an event for every key (a heartbeat) to 500 interest
// streams of 200 keys each. It reaches each stream once, through sets, without looking through
// the 100,000 per-key lists when no plain keyed subscriber is on them.
func BenchmarkHeartbeatToInterestStreams(b *testing.B) {
	h := New(1 << 30)
	for i := range 500 {
		keys := make([]string, 200)
		for j := range keys {
			keys[j] = fmt.Sprint("k", i, "-", j)
		}
		s := h.SubscribeInterest(Interest{Keys: keys})
		defer s.Close()
		go func() { // drain, so queues stay short; Next fails once s is closed
			var buf []*event.Encoded
			for err := error(nil); err == nil; buf, err = s.Next(context.Background(), buf[:0]) {
			}
		}()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		h.Broadcast(event.Heartbeat)
	}
}

// A peer that asks for notices while it stops reading cannot grow its queue: pongs replace
// the one still unsent, and notices count against the byte limit like events.
func TestNoticesAndRepliesStayWithinTheQueueLimit(t *testing.T) {
	t.Run("a reply replaces the unsent one, in its place", func(t *testing.T) {
		h := New(1 << 10)
		s := h.Subscribe("")
		defer s.Close()
		h.Broadcast(msg(1, "a"))
		for i := range 100_000 {
			if !s.Reply(&event.Encoded{Kind: event.KindNotice, SSE: []byte(fmt.Sprintf("pong %d", i))}) {
				t.Fatalf("reply %d was refused: %v", i, s.Err())
			}
		}
		h.Broadcast(msg(2, "a"))
		if got := describe(next(t, s)); got != "1a pong 99999 2a" {
			t.Fatalf("queued %q, want the first event, the newest pong, the second event", got)
		}
		// Once written, the next reply is queued anew.
		s.Reply(&event.Encoded{Kind: event.KindNotice, SSE: []byte("pong again")})
		if got := describe(next(t, s)); got != "pong again" {
			t.Fatalf("queued %q after a drain, want the new pong", got)
		}
	})
	t.Run("notices past the byte limit close the subscriber as slow", func(t *testing.T) {
		h := New(1 << 10)
		s := h.SubscribeInterest(Interest{Keys: []string{"a"}})
		defer s.Close()
		queued := 0
		for i := range 1000 {
			if !s.Notify(&event.Encoded{Kind: event.KindNotice, SSE: []byte(fmt.Sprintf(": interest %d 0-0\n\n", i))}) {
				break
			}
			queued++
		}
		if !errors.Is(s.Err(), ErrSlowConsumer) || queued > 1<<10/16 {
			t.Fatalf("after %d notices the subscriber's error is %v, want a slow consumer within its 1 KiB", queued, s.Err())
		}
		if _, ok := s.Adjust(Change{Add: []string{"b"}}, cursor.ID{}, notice); ok {
			t.Fatal("a change of a subscriber closed as slow was taken")
		}
	})
}

// Switching a large interest stream between every key and its key set costs the same as a
// small one's switch: it never relinks the keys (the hub-wide order lock is held meanwhile, so a
// relink of 100,000 keys stalled every broadcast).
func TestSwitchingEveryKeyOnAndOffCostsNothingPerKey(t *testing.T) {
	h := New(1 << 20)
	keys := make([]string, 100_000)
	for i := range keys {
		keys[i] = fmt.Sprint("k", i)
	}
	s := h.SubscribeInterest(Interest{Keys: keys})
	defer s.Close()
	on, off := true, false
	quiet := func(cursor.ID) *event.Encoded { return &event.Encoded{Kind: event.KindNotice} }
	allocs := testing.AllocsPerRun(20, func() {
		s.Adjust(Change{All: &on}, cursor.ID{}, quiet)
		s.Adjust(Change{All: &off}, cursor.ID{}, quiet)
		next(t, s)
	})
	if allocs > 10 {
		t.Fatalf("switching every key on and off for 100,000 keys made %.0f allocations, want a few whatever the keys", allocs)
	}
	h.Broadcast(msg(1, "k99999"))
	if got := describe(next(t, s)); got != "1k99999" {
		t.Fatalf("after the switches the stream got %q, want the event of its key once", got)
	}
}

func TestPrefixesFollowTheKeysUnderThemEachEventOnce(t *testing.T) {
	h := New(1 << 20)
	// On the lists of team/, team/a/ and the key team/a/x: an event of team/a/x matches all three.
	s := h.SubscribeInterest(Interest{Keys: []string{"team/", "team/a/", "team/a/x", "user-1"}})
	defer s.Close()
	plain := h.Subscribe("team/a/") // a plain subscriber may follow one prefix too
	defer plain.Close()
	other := h.SubscribeInterest(Interest{Keys: []string{"teams/"}})
	defer other.Close()

	for i, k := range []string{"team/a/x", "team/b", "team", "user-1", "user-1/x", "team/a/", "teams/q", "x/team/a"} {
		h.Broadcast(msg(uint64(i+1), k))
	}
	if got, want := describe(next(t, s)), "1team/a/x 2team/b 4user-1 6team/a/"; got != want {
		t.Fatalf("the subscriber of team/, team/a/, team/a/x and user-1 got %q, want %q", got, want)
	}
	if got, want := describe(next(t, plain)), "1team/a/x 6team/a/"; got != want {
		t.Fatalf("the plain subscriber of team/a/ got %q, want %q", got, want)
	}
	if got, want := describe(next(t, other)), "7teams/q"; got != want {
		t.Fatalf("the subscriber of teams/ got %q, want %q", got, want)
	}

	// Unfollowing the outer prefix leaves the inner one; the hub forgets prefixes no one follows.
	s.Adjust(Change{Remove: []string{"team/", "team/a/x"}}, cursor.ID{}, notice)
	h.Broadcast(msg(9, "team/b"))
	h.Broadcast(msg(10, "team/a/y"))
	if got, want := describe(next(t, s)), ": at 1-8 10team/a/y"; got != want {
		t.Fatalf("after unfollowing team/ got %q, want %q", got, want)
	}
	s.Close()
	plain.Close()
	other.Close()
	for i := range h.shards {
		if n := h.shards[i].prefixes; n != 0 {
			t.Fatalf("registry shard %d still counts %d prefix lists after every subscriber closed", i, n)
		}
	}
}
