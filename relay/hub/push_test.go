package hub

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/relay/event"
)

// recorder is an Output that records what it is sent; with hold set it keeps each batch and
// hands it back later from another goroutine, as a connection with a full socket does.
type recorder struct {
	sub  *Subscriber
	hold bool
	fail bool // Send fails as a broken connection does: it closes the subscriber

	mu      sync.Mutex
	seqs    []uint64
	batches int
	ended   error
	held    [][]*event.Encoded
	endedCh chan struct{}
}

func newRecorder(h *Hub, key string, hold bool) *recorder {
	r := &recorder{sub: h.Subscribe(key), hold: hold, endedCh: make(chan struct{})}
	r.sub.Push(r)
	return r
}

func (r *recorder) Send(batch []*event.Encoded) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.batches++
	for _, e := range batch {
		r.seqs = append(r.seqs, e.ID.Seq)
	}
	if r.hold {
		r.held = append(r.held, batch)
		return false
	}
	if r.fail {
		r.sub.Close()
	}
	return true
}

func (r *recorder) End(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ended != nil {
		panic("End called twice")
	}
	r.ended = err
	close(r.endedCh)
}

func (r *recorder) got() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]uint64(nil), r.seqs...)
}

// release hands back every kept batch, as the goroutine of a slow connection does when done.
func (r *recorder) release() {
	r.mu.Lock()
	held := r.held
	r.held = nil
	r.mu.Unlock()
	for _, b := range held {
		r.sub.Resume(b)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func inOrder(seqs []uint64, n int) bool {
	if len(seqs) != n {
		return false
	}
	for i, s := range seqs {
		if s != uint64(i+1) {
			return false
		}
	}
	return true
}

func TestPushedSubscribersGetEverythingInOrderFromSharedWriters(t *testing.T) {
	h := New(1 << 30)
	defer h.Close()
	recs := make([]*recorder, 200)
	for i := range recs {
		recs[i] = newRecorder(h, "", false)
	}
	keyed := newRecorder(h, "k1", false)
	const n = 500
	for i := 1; i <= n; i++ {
		key := "k0"
		if i%2 == 0 {
			key = "k1"
		}
		h.Broadcast(msg(uint64(i), key))
	}
	for i, r := range recs {
		waitFor(t, "subscriber to get every message", func() bool { return len(r.got()) == n })
		if !inOrder(r.got(), n) {
			t.Fatalf("subscriber %d got %v", i, r.got())
		}
	}
	waitFor(t, "keyed subscriber", func() bool { return len(keyed.got()) == n/2 })
	for i, s := range keyed.got() {
		if s != uint64(2*(i+1)) {
			t.Fatalf("keyed subscriber got %v", keyed.got())
		}
	}
}

func TestPushedSubscriberWaitsWhileItsOutputHoldsABatch(t *testing.T) {
	h := New(1 << 30)
	defer h.Close()
	r := newRecorder(h, "", true)
	h.Broadcast(msg(1, "k"))
	waitFor(t, "first batch", func() bool { return len(r.got()) == 1 })
	for i := 2; i <= 10; i++ {
		h.Broadcast(msg(uint64(i), "k"))
	}
	// While the output holds batch 1, nothing else is scheduled (Broadcast enqueues
	// synchronously): a connection writes one batch at a time.
	if got := r.got(); len(got) != 1 {
		t.Fatalf("sent %v while the first batch was held", got)
	}
	r.mu.Lock()
	r.hold = false
	r.mu.Unlock()
	r.release()
	waitFor(t, "the rest in one batch", func() bool { return len(r.got()) == 10 })
	r.mu.Lock()
	batches := r.batches
	r.mu.Unlock()
	if !inOrder(r.got(), 10) || batches != 2 {
		t.Fatalf("got %v in %d batches, want 1..10 in 2", r.got(), batches)
	}
}

func TestPushedSlowConsumerAndCloseEndTheStreamOnce(t *testing.T) {
	e := msg(1, "k")
	h := New(3 * e.Size())
	slow := newRecorder(h, "", true) // holds its first batch: the rest piles up
	fine := newRecorder(h, "", false)
	h.Broadcast(e)
	waitFor(t, "the first batch", func() bool { return len(slow.got()) == 1 && len(fine.got()) == 1 })
	for range 3 { // exactly the queue limit: the slow one is still within it
		h.Broadcast(e)
	}
	waitFor(t, "the other subscriber", func() bool { return len(fine.got()) == 4 })
	if err := slow.sub.Err(); err != nil {
		t.Fatalf("stopped within its queue limit: %v", err)
	}
	h.Broadcast(e)                                   // one more event than the slow one's queue holds
	if !errors.Is(slow.sub.Err(), ErrSlowConsumer) { // the subscriber stops at once
		t.Fatalf("Err() = %v right after the event that passed the limit", slow.sub.Err())
	}
	slow.release() // the output hands the batch back; only then is the stream ended
	<-slow.endedCh
	if !errors.Is(slow.ended, ErrSlowConsumer) {
		t.Fatalf("slow subscriber ended with %v", slow.ended)
	}
	if got := slow.got(); len(got) != 1 {
		t.Fatalf("slow subscriber was sent %v, want only its first batch", got)
	}
	waitFor(t, "the other subscriber", func() bool { return len(fine.got()) == 5 })
	if h.SlowClosed() != 1 {
		t.Fatalf("SlowClosed = %d", h.SlowClosed())
	}

	h.Close() // shutdown ends every pushed stream
	<-fine.endedCh
	if !errors.Is(fine.ended, ErrClosed) {
		t.Fatalf("closed subscriber ended with %v", fine.ended)
	}
	late := newRecorder(h, "", false) // after Close, events and closes still reach the output
	h.Broadcast(e)
	waitFor(t, "an event after Close", func() bool { return len(late.got()) == 1 })
	late.sub.Close()
	<-late.endedCh
	// A write that fails after Close unregisters the subscriber, which takes the registry lock
	// that Broadcast holds: it must not run on Broadcast's goroutine.
	broken := newRecorder(h, "", false)
	broken.fail = true
	h.Broadcast(e)
	<-broken.endedCh
	if !errors.Is(broken.ended, ErrClosed) || h.Subscribers() != 0 {
		t.Fatalf("broken subscriber ended with %v, %d subscribers left", broken.ended, h.Subscribers())
	}
}

func TestPushedBroadcastAllocatesNothingPerSubscriber(t *testing.T) {
	h := New(1 << 30)
	defer h.Close()
	recs := make([]*recorder, 1000)
	for i := range recs {
		recs[i] = &recorder{sub: h.Subscribe(""), endedCh: make(chan struct{})}
		recs[i].sub.out = recs[i]
	}
	e := msg(1, "k")
	// Serve on this goroutine (what a writer does), so allocations are counted exactly.
	serveAll := func() {
		h.writers.mu.Lock()
		ready := h.writers.ready
		h.writers.ready = nil
		h.writers.mu.Unlock()
		for _, s := range ready {
			s.serve()
		}
		h.writers.mu.Lock()
		h.writers.ready = ready[:0]
		h.writers.mu.Unlock()
	}
	h.writers.started, h.writers.count = true, 1 // no writer goroutines: this test is the writer
	for range 3 {
		h.Broadcast(e)
		serveAll()
	}
	for _, r := range recs {
		r.seqs = make([]uint64, 0, 1024)
	}
	allocs := testing.AllocsPerRun(50, func() {
		h.Broadcast(e)
		serveAll()
	})
	if allocs != 0 {
		t.Fatalf("broadcast to 1000 pushed subscribers plus their writes allocates %v times", allocs)
	}
}

func TestWriteIntervalCoalescesOnlyWhenWritersBackUp(t *testing.T) {
	const interval = time.Second
	h := New(1 << 30)
	defer h.Close()
	h.SetWriteInterval(interval)

	// A few subscribers and short rounds: every event goes out at once, one write each.
	few := []*recorder{newRecorder(h, "", false), newRecorder(h, "", false)}
	start := time.Now()
	for i := 1; i <= 10; i++ {
		h.Broadcast(msg(uint64(i), "k"))
		waitFor(t, "the event", func() bool { return len(few[0].got()) == i && len(few[1].got()) == i })
	}
	if d := time.Since(start); d >= interval {
		t.Fatalf("10 events to 2 subscribers took %v: writers that keep up must not wait for the %v interval", d, interval)
	}

	// More ready connections than coalesceReady: the first round starts at once; a burst
	// right after it finds the writers backed up, waits for the interval and goes out as one
	// write per connection. A writer woken by the burst's first events, before the rest made
	// the list long, may still write those at once: at most coalesceReady connections get one
	// write more.
	h = New(1 << 30)
	defer h.Close()
	h.SetWriteInterval(interval)
	many := make([]*recorder, coalesceReady+44)
	for i := range many {
		many[i] = newRecorder(h, "", false)
	}
	// Writers already waiting, as in a relay that has run a while (the first ones to start
	// could otherwise see a broadcast half made).
	h.writers.mu.Lock()
	h.writers.startLocked()
	h.writers.mu.Unlock()
	waitFor(t, "idle writers", func() bool {
		h.writers.mu.Lock()
		defer h.writers.mu.Unlock()
		return h.writers.idle == h.writers.count
	})
	all := func(n int) func() bool {
		return func() bool {
			for _, r := range many {
				if len(r.got()) != n {
					return false
				}
			}
			return true
		}
	}
	start = time.Now()
	h.Broadcast(msg(1, "k"))
	waitFor(t, "the first round", all(1))
	first := time.Since(start)
	for i := 2; i <= 10; i++ {
		h.Broadcast(msg(uint64(i), "k"))
	}
	waitFor(t, "the burst", all(10))
	if d := time.Since(start); first >= interval || d < interval {
		t.Fatalf("first round after %v, the burst after %v: want the first at once and the burst after the %v interval", first, d, interval)
	}
	writes := 0
	for _, r := range many {
		r.mu.Lock()
		batches := r.batches
		r.mu.Unlock()
		if batches < 2 || batches > 3 || !inOrder(r.got(), 10) {
			t.Fatalf("a subscriber got %v in %d writes, want 1..10 in 2 (one round, then the coalesced burst), 3 at most", r.got(), batches)
		}
		writes += batches
	}
	if extra := writes - 2*len(many); extra > coalesceReady {
		t.Fatalf("%d writes to %d subscribers: %d more than one round and one coalesced burst", writes, len(many), extra)
	}
}
