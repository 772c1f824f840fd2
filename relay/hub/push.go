package hub

import (
	"runtime"
	"sync"
	"time"

	"github.com/heraldhq/herald/relay/event"
)

// Output is where a pushed subscriber's events go: a connection the hub's writers write to
// without a goroutine of its own.
type Output interface {
	// Send writes batch, or as much of it as the peer takes without waiting. It returns true
	// when it is done with batch (sent, or the connection failed and the subscriber was
	// closed), false when it kept the rest for a goroutine of its own that waits for the peer;
	// that goroutine calls Subscriber.Resume(batch) once it is done.
	Send(batch []*event.Encoded) (done bool)
	// End ends the stream: err is ErrSlowConsumer, ErrUpstreamLost or ErrClosed. It is called
	// once, and no Send follows it.
	End(err error)
}

// Push hands the subscriber to the hub's writers: from now on every batch queued for it goes
// to out.Send from one of a few shared goroutines, one batch at a time, and out.End is called
// when it stops. An idle pushed subscriber costs no goroutine. Next must not be used after Push.
func (s *Subscriber) Push(out Output) {
	s.mu.Lock()
	s.out = out
	schedule := (len(s.queue) > 0 || s.err != nil) && s.claimLocked()
	s.mu.Unlock()
	if schedule {
		s.hub.writers.schedule(s)
	}
}

// claimLocked marks a pushed subscriber as running and reports whether it has to be scheduled
// (it was not already queued for, or held by, a writer).
func (s *Subscriber) claimLocked() bool {
	if s.out == nil || s.running {
		return false
	}
	s.running = true
	return true
}

// Resume hands back a batch Output.Send kept: the subscriber is scheduled again if events
// arrived meanwhile or it was closed.
func (s *Subscriber) Resume(batch []*event.Encoded) {
	clear(batch)
	s.mu.Lock()
	s.spare = batch[:0]
	again := len(s.queue) > 0 || s.err != nil
	s.running = again
	s.mu.Unlock()
	if again {
		s.hub.writers.schedule(s)
	}
}

// serve writes what is queued for s (or ends it): called by a writer that took s off the
// ready list.
func (s *Subscriber) serve() {
	s.mu.Lock()
	if err := s.err; err != nil {
		s.mu.Unlock() // running stays true: s is never scheduled again
		s.out.End(err)
		return
	}
	batch := s.takeLocked(s.spare)
	s.spare = nil
	s.mu.Unlock()
	if s.out.Send(batch) {
		s.Resume(batch)
	}
}

// writers is a hub's small pool of goroutines that serve pushed subscribers from one ready
// list: a broadcast wakes at most the idle writers, never a goroutine per subscriber.
type writers struct {
	mu      sync.Mutex
	cond    sync.Cond // signalled when ready grows while a writer waits
	ready   []*Subscriber
	started bool
	stopped bool
	idle    int // writers waiting on cond
	count   int

	broadcasting int // broadcasts under way: they wake the writers once, when done (see hold)

	interval  time.Duration // least time between the starts of two write rounds under load (0: none)
	lastRound time.Time     // when the last share of the ready list was taken
	lastShare time.Duration // how long the last share took to write
}

// Coalescing starts when writes back up: a ready list longer than coalesceReady, or a share
// that took longer than a quarter of the interval to write. Below that every event goes out at
// once, so a modest stream is not delayed by up to the interval for no gain.
const coalesceReady = 256

// SetWriteInterval sets the least time between the starts of two write rounds of pushed
// subscribers under load. A round writes each ready connection once, with everything queued
// for it. While the writers keep up (short rounds, few connections ready) each event goes out
// at once; once they back up, a connection gets one write per d carrying all its events,
// instead of one write (and one wakeup of its reader) each: fewer system calls on both ends
// for at most d of added latency. 0: a round starts as soon as a writer is free.
func (h *Hub) SetWriteInterval(d time.Duration) {
	h.writers.mu.Lock()
	h.writers.interval = max(d, 0)
	h.writers.mu.Unlock()
}

// schedule puts s on the ready list, starting the writers on first use. After the hub was
// closed (the writers are gone) s is served on a goroutine of its own, so a late event or
// close still reaches the connection; not on the caller's, which may hold a registry lock
// that ending the stream needs.
func (w *writers) schedule(s *Subscriber) {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		go s.serve()
		return
	}
	w.startLocked()
	w.ready = append(w.ready, s)
	if w.idle > 0 && w.broadcasting == 0 {
		w.cond.Signal()
	}
	w.mu.Unlock()
}

// startLocked starts the writers on first use.
func (w *writers) startLocked() {
	if !w.started {
		w.started = true
		w.count = runtime.GOMAXPROCS(0)
		for range w.count {
			go w.run()
		}
	}
}

// hold keeps a broadcast's schedules from waking the writers one connection at a time;
// release wakes them once for all it readied. A writer then sees the whole broadcast, and
// judges by all of it whether the writers are backed up.
func (w *writers) hold() {
	w.mu.Lock()
	w.broadcasting++
	w.mu.Unlock()
}

func (w *writers) release() {
	w.mu.Lock()
	w.broadcasting--
	if w.broadcasting == 0 && len(w.ready) > 0 && w.idle > 0 {
		w.cond.Broadcast()
	}
	w.mu.Unlock()
}

// run takes a fair share of the ready list at a time (so several writers split a broadcast),
// and leaves the rest for the others.
func (w *writers) run() {
	var mine []*Subscriber
	for {
		w.mu.Lock()
		for len(w.ready) == 0 {
			if w.stopped {
				w.mu.Unlock()
				return
			}
			w.idle++
			w.cond.Wait()
			w.idle--
		}
		backedUp := len(w.ready) > coalesceReady || w.lastShare > w.interval/4
		if wait := w.interval - time.Since(w.lastRound); wait > 0 && backedUp && !w.stopped {
			// The writers are busy and a round ran moments ago: let events pile up, so each
			// connection gets one write carrying all of them instead of one write each.
			w.mu.Unlock()
			time.Sleep(wait)
			w.mu.Lock()
			if len(w.ready) == 0 {
				w.mu.Unlock()
				continue
			}
		}
		w.lastRound = time.Now()
		// Oldest first: taking from the tail would starve the head while new ones arrive.
		n := max((len(w.ready)+w.count-1)/w.count, min(len(w.ready), 64))
		mine = append(mine[:0], w.ready[:n]...)
		left := copy(w.ready, w.ready[n:])
		clear(w.ready[left:])
		w.ready = w.ready[:left]
		if left > 0 && w.idle > 0 {
			w.cond.Signal()
		}
		w.mu.Unlock()
		start := time.Now()
		for _, s := range mine {
			s.serve()
		}
		took := time.Since(start)
		w.mu.Lock()
		w.lastShare = took
		w.mu.Unlock()
		clear(mine)
	}
}

// Close closes every subscriber (pushed ones are ended by the writers, which then stop); a
// pushed subscriber that has events or is closed later is served on a goroutine of its own.
// Relays call it on shutdown, since pushed connections outlive their HTTP handlers.
func (h *Hub) Close() {
	for _, s := range h.registered() {
		s.Close()
	}
	w := &h.writers
	w.mu.Lock()
	w.stopped = true
	w.cond.Broadcast()
	w.mu.Unlock()
}
