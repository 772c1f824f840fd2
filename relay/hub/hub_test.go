package hub

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/relay/cursor"
	"github.com/heraldhq/herald/relay/event"
)

var enc = event.NewEncoder("ns", "ch", 0)

func msg(seq uint64, key string) *event.Encoded {
	return enc.Encode(event.Message{ID: cursor.ID{Ms: 1, Seq: seq}, Key: key, Type: "t", ContentType: "text/plain", Data: "hello"})
}

func next(t *testing.T, s *Subscriber) []*event.Encoded {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	batch, err := s.Next(ctx, nil)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return batch
}

func TestBroadcastMatchesKeys(t *testing.T) {
	h := New(1 << 20)
	all, a, b := h.Subscribe(""), h.Subscribe("a"), h.Subscribe("b")
	defer all.Close()
	defer a.Close()
	defer b.Close()
	h.Broadcast(msg(1, "a"))
	h.Broadcast(msg(2, "b"))
	h.Broadcast(msg(3, "c"))
	h.Broadcast(enc.EncodeGap(event.Gap{Reason: event.GapRollback}))
	ids := func(batch []*event.Encoded) string {
		s := ""
		for _, e := range batch {
			s += fmt.Sprintf("%d%s ", e.ID.Seq, e.Key)
		}
		return s
	}
	tests := map[string]struct {
		sub  *Subscriber
		want string
	}{
		"no key gets everything": {all, "1a 2b 3c 0 "},
		"key a":                  {a, "1a 0 "},
		"key b":                  {b, "2b 0 "},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := ids(next(t, tc.sub)); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
	if h.Subscribers() != 3 || h.Delivered() != 3+1+1+3 {
		t.Fatalf("subscribers %d delivered %d", h.Subscribers(), h.Delivered())
	}
}

func TestSlowConsumerIsClosedOnceAndOthersContinue(t *testing.T) {
	e := msg(1, "k")
	h := New(3 * e.Size())
	slow, fast := h.Subscribe(""), h.Subscribe("")
	defer fast.Close()
	for i := range 10 {
		h.Broadcast(msg(uint64(i), "k"))
		if len(next(t, fast)) != 1 {
			t.Fatal("fast subscriber missed an event")
		}
	}
	if !errors.Is(slow.Err(), ErrSlowConsumer) {
		t.Fatalf("slow subscriber: Err() = %v, want ErrSlowConsumer", slow.Err())
	}
	if _, err := slow.Next(context.Background(), nil); !errors.Is(err, ErrSlowConsumer) {
		t.Fatalf("Next = %v, want ErrSlowConsumer", err)
	}
	if h.SlowClosed() != 1 {
		t.Fatalf("SlowClosed = %d, want exactly 1", h.SlowClosed())
	}
	slow.Close()
	slow.Close()
	if h.Subscribers() != 1 {
		t.Fatalf("Subscribers = %d after close", h.Subscribers())
	}
}

func TestCloseAndUnregisterKeepOthersReachable(t *testing.T) {
	h := New(1 << 20)
	var subs []*Subscriber
	for i := range 200 {
		subs = append(subs, h.Subscribe(fmt.Sprint("k", i%3)))
	}
	for i, s := range subs {
		if i%2 == 0 {
			s.Close()
		}
	}
	h.Broadcast(msg(1, "k1"))
	for i, s := range subs {
		if i%2 == 0 {
			continue
		}
		s.mu.Lock()
		n := len(s.queue)
		s.mu.Unlock()
		if want := map[bool]int{true: 1, false: 0}[s.key == "k1"]; n != want {
			t.Fatalf("subscriber %d (key %s) has %d queued, want %d", i, s.key, n, want)
		}
	}
	if h.Subscribers() != 100 {
		t.Fatalf("Subscribers = %d, want 100", h.Subscribers())
	}
}

func TestNextWaitsAndHonoursContext(t *testing.T) {
	h := New(1 << 20)
	s := h.Subscribe("")
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	var err error
	go func() { defer wg.Done(); _, err = s.Next(ctx, nil) }()
	cancel()
	wg.Wait()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Next = %v, want context.Canceled", err)
	}
	go h.Broadcast(msg(7, "x"))
	if b := next(t, s); len(b) != 1 || b[0].ID.Seq != 7 {
		t.Fatalf("got %v", b)
	}
}

func TestBroadcastAllocatesNothingPerSubscriber(t *testing.T) {
	h := New(1 << 30)
	subs := make([]*Subscriber, 1000)
	for i := range subs {
		subs[i] = h.Subscribe("")
	}
	e := msg(1, "k")
	bufs := make([][]*event.Encoded, len(subs))
	drain := func() {
		for i, s := range subs {
			bufs[i], _ = s.Next(context.Background(), bufs[i])
		}
	}
	h.Broadcast(e)
	drain()
	h.Broadcast(e)
	drain()
	allocs := testing.AllocsPerRun(50, func() {
		h.Broadcast(e)
		drain()
	})
	if allocs != 0 {
		t.Fatalf("broadcast to 1000 subscribers plus drain allocates %v times", allocs)
	}
}

func BenchmarkFanOut(b *testing.B) {
	for _, n := range []int{1, 100, 1000, 5000} {
		b.Run(fmt.Sprint("subscribers=", n), func(b *testing.B) {
			h := New(1 << 30)
			subs := make([]*Subscriber, n)
			bufs := make([][]*event.Encoded, n)
			for i := range subs {
				subs[i] = h.Subscribe("")
			}
			e := msg(1, "k")
			for range 2 { // grow every queue to its working size first
				for range 16 {
					h.Broadcast(e)
				}
				for j, s := range subs {
					bufs[j], _ = s.Next(context.Background(), bufs[j])
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				h.Broadcast(e)
				if i%16 == 15 { // writers drain in batches, as they do on a busy connection
					for j, s := range subs {
						bufs[j], _ = s.Next(context.Background(), bufs[j])
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
		})
	}
}

// Disconnect ends every current subscriber with its reason, whatever it had queued, and the hub
// goes on serving those that subscribe later.
func TestDisconnectEndsCurrentSubscribersOnly(t *testing.T) {
	h := New(1 << 20)
	all, keyed := h.Subscribe(""), h.Subscribe("a")
	defer all.Close()
	defer keyed.Close()
	h.Broadcast(msg(1, "a"))
	if n := h.Disconnect(ErrUpstreamLost); n != 2 {
		t.Fatalf("Disconnect ended %d subscribers, want 2", n)
	}
	for _, s := range []*Subscriber{all, keyed} {
		if _, err := s.Next(context.Background(), nil); !errors.Is(err, ErrUpstreamLost) {
			t.Errorf("Next after Disconnect: %v, want ErrUpstreamLost", err)
		}
	}
	if n := h.Disconnect(ErrUpstreamLost); n != 0 {
		t.Errorf("a second Disconnect ended %d subscribers, want 0 (each ends once)", n)
	}
	later := h.Subscribe("")
	defer later.Close()
	h.Broadcast(msg(2, "a"))
	if got := next(t, later); len(got) != 1 {
		t.Errorf("a subscriber after Disconnect got %d events, want 1", len(got))
	}
}

// One event larger than the queue limit (a big message, grown by escaping) reaches every
// subscriber whose queue is empty instead of closing them all as slow consumers; a second one
// behind it is what makes a subscriber slow.
func TestAnEmptyQueueTakesOneEventOfAnySize(t *testing.T) {
	big := enc.Encode(event.Message{ID: cursor.ID{Ms: 1, Seq: 1}, Key: "k", Type: "t", ContentType: "text/plain", Data: strings.Repeat("x", 4096)})
	h := New(1024)
	a, b := h.Subscribe(""), h.Subscribe("k")
	defer a.Close()
	defer b.Close()
	h.Broadcast(big)
	for _, s := range []*Subscriber{a, b} {
		if got := next(t, s); len(got) != 1 || got[0] != big {
			t.Fatalf("a subscriber with an empty queue got %d events and err %v, want the big one", len(got), s.Err())
		}
	}
	h.Broadcast(big)
	h.Broadcast(big) // a's queue holds one: the second passes the limit
	if !errors.Is(a.Err(), ErrSlowConsumer) || h.SlowClosed() != 2 {
		t.Errorf("two big events queued: err %v, slow-closed %d; want both subscribers slow", a.Err(), h.SlowClosed())
	}
}

// Drain ends every subscriber with the reason given, spread over the time given: the last one
// no sooner than most of it has passed.
func TestDrainSpreadsTheEndsOverTime(t *testing.T) {
	h := New(1 << 20)
	subs := make([]*Subscriber, 50)
	for i := range subs {
		subs[i] = h.Subscribe("")
	}
	going := errors.New("going away")
	ended := make(chan time.Time, len(subs))
	for _, s := range subs {
		go func() {
			_, err := s.Next(context.Background(), nil)
			if err == going {
				ended <- time.Now()
			}
		}()
	}
	start := time.Now()
	if n := h.Drain(context.Background(), going, 500*time.Millisecond); n != len(subs) {
		t.Fatalf("Drain ended %d subscribers, want %d", n, len(subs))
	}
	var last time.Time
	for range subs {
		if e := <-ended; e.After(last) {
			last = e
		}
	}
	if spread := last.Sub(start); spread < 400*time.Millisecond {
		t.Fatalf("the last subscriber ended %v after the drain began, want at least 400ms of the 500ms spread", spread)
	}
	if h.Drain(context.Background(), going, time.Second) != 0 {
		t.Fatal("a second Drain found subscribers to end")
	}
}

// HeartbeatPart reaches only its part of the subscribers, and all Parts together reach each one
// exactly once, whatever it follows.
func TestHeartbeatPartsReachEverySubscriberOnce(t *testing.T) {
	h := New(1 << 20)
	var subs []*Subscriber
	for i := range 300 {
		switch i % 3 {
		case 0:
			subs = append(subs, h.Subscribe(""))
		case 1:
			subs = append(subs, h.Subscribe("k"))
		default:
			subs = append(subs, h.SubscribeInterest(Interest{Keys: []string{"a", "b/"}}))
		}
	}
	h.HeartbeatPart(0)
	got := 0
	for _, s := range subs {
		s.mu.Lock()
		got += len(s.queue)
		s.mu.Unlock()
	}
	if got == 0 || got > len(subs)/Parts*3 {
		t.Fatalf("one part's heartbeat reached %d of %d subscribers, want about 1/%d of them", got, len(subs), Parts)
	}
	for i := 1; i < Parts; i++ {
		h.HeartbeatPart(i)
	}
	for i, s := range subs {
		if n := len(next(t, s)); n != 1 {
			t.Fatalf("subscriber %d got %d heartbeats from all %d parts, want 1", i, n, Parts)
		}
	}
}
