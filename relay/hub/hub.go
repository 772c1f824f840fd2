package hub

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald/relay/cursor"
	"github.com/heraldhq/herald/relay/event"
)

// ErrSlowConsumer is what Next returns once a subscriber's queue passed its byte limit.
var ErrSlowConsumer = errors.New("slow consumer: the subscriber's queue passed its byte limit")

// ErrUpstreamLost is what Next returns once the relay ended a subscriber because it lost its
// Redis subscription for longer than it waits (Disconnect): the client resumes elsewhere.
var ErrUpstreamLost = errors.New("the relay lost its Redis subscription")

// ErrClosed is what Next returns after Close.
var ErrClosed = errors.New("subscriber closed")

const shardCount = 64

// DefaultQueueBytes is the default byte limit of a subscriber's queue: a few seconds of a busy
// channel's events for a subscriber that stalls briefly (a GC pause, a slow network), and room
// for a 64 KiB message many times over. Relays raise it to hold two of the largest messages
// their channel allows (shardmap.QueueBytes).
const DefaultQueueBytes = 1 << 20

// Hub is the subscriber registry of one shard relay.
type Hub struct {
	shards     [shardCount]registryShard
	nextID     atomic.Uint64
	queueBytes atomic.Int64

	subscribers atomic.Int64  // currently registered
	delivered   atomic.Uint64 // events enqueued to subscribers, all time
	deliveredB  atomic.Uint64 // their bytes
	slowClosed  atomic.Uint64 // subscribers closed as slow consumers, all time

	writers writers // the goroutines that serve pushed subscribers (push.go)

	// order serializes broadcasts with interest changes (interest.go), so a change falls
	// between two events: last is the cursor of the newest event broadcast.
	order sync.Mutex
	last  cursor.ID
	round uint64 // counts broadcasts: a subscriber on several matching lists takes an event once
}

type registryShard struct {
	mu    sync.RWMutex
	all   []*Subscriber            // subscribers without a key filter
	byKey map[string][]*Subscriber // subscribers of one key
	// Adjustable subscribers that follow a set of keys (interest.go): on the list of each key,
	// and here, so that an event for every key (a gap, a heartbeat) reaches them once.
	sets map[*Subscriber]struct{}
	// keyed counts the subscribers of one key on byKey (not the adjustable ones): an event for
	// every key looks through byKey for them only when there are some, since an adjustable
	// subscriber may sit on 100,000 lists.
	keyed int
	// prefixes counts the lists of prefixes (event.IsPrefix) on byKey: an event looks up the
	// prefixes of its key only when there are some.
	prefixes int
}

// New returns a hub whose subscribers may each queue up to queueBytes of encoded events.
func New(queueBytes int) *Hub {
	h := &Hub{}
	h.queueBytes.Store(int64(queueBytes))
	for i := range h.shards {
		h.shards[i].byKey = make(map[string][]*Subscriber)
		h.shards[i].sets = make(map[*Subscriber]struct{})
	}
	h.writers.cond.L = &h.writers.mu
	return h
}

// AtLeastQueueBytes raises the queue limit of subscribers that register from now on to n, if
// it is lower (a sidecar learns its channel's message size from the shard map).
func (h *Hub) AtLeastQueueBytes(n int) {
	for {
		cur := h.queueBytes.Load()
		if int64(n) <= cur || h.queueBytes.CompareAndSwap(cur, int64(n)) {
			return
		}
	}
}

// Subscribers is the number of registered subscribers.
func (h *Hub) Subscribers() int64 { return h.subscribers.Load() }

// Delivered is the number of events enqueued to subscribers so far.
func (h *Hub) Delivered() uint64 { return h.delivered.Load() }

// DeliveredBytes is the size of the events enqueued to subscribers so far, each copy counted.
func (h *Hub) DeliveredBytes() uint64 { return h.deliveredB.Load() }

// SlowClosed is the number of subscribers closed as slow consumers so far.
func (h *Hub) SlowClosed() uint64 { return h.slowClosed.Load() }

// Subscribe registers a subscriber for key ("" = every key). It receives every event broadcast
// after Subscribe returns. The caller must Close it.
func (h *Hub) Subscribe(key string) *Subscriber {
	s := h.newSubscriber()
	s.key = key
	sh := h.registryOf(s)
	sh.mu.Lock()
	sh.add(s, key)
	s.registered = true
	sh.mu.Unlock()
	h.subscribers.Add(1)
	return s
}

func (h *Hub) newSubscriber() *Subscriber {
	return &Subscriber{hub: h, id: h.nextID.Add(1), limit: int(h.queueBytes.Load()), wake: make(chan struct{}, 1)}
}

func (h *Hub) registryOf(s *Subscriber) *registryShard { return &h.shards[s.id%shardCount] }

// add appends s to the list of key ("" = the list of every key) and records where it is.
func (sh *registryShard) add(s *Subscriber, key string) {
	if key == "" {
		s.pos = len(sh.all)
		sh.all = append(sh.all, s)
		return
	}
	if s.keys == nil {
		sh.keyed++
	}
	list := sh.byKey[key]
	if len(list) == 0 && event.IsPrefix(key) {
		sh.prefixes++
	}
	s.setPos(key, len(list))
	sh.byKey[key] = append(list, s)
}

// keyedSubscribers lists the subscribers of one key (not the adjustable ones); sh.mu is held.
func (sh *registryShard) keyedSubscribers() []*Subscriber {
	if sh.keyed == 0 {
		return nil
	}
	subs := make([]*Subscriber, 0, sh.keyed)
	for _, list := range sh.byKey {
		for _, s := range list {
			if s.keys == nil {
				subs = append(subs, s)
			}
		}
	}
	return subs
}

// remove takes s off the list of key, swapping the last entry into its place.
func (sh *registryShard) remove(s *Subscriber, key string) {
	if key == "" {
		sh.all = removeAt(sh.all, s.pos, "")
		return
	}
	if s.keys == nil {
		sh.keyed--
	}
	list := removeAt(sh.byKey[key], s.posOf(key), key)
	if len(list) == 0 {
		delete(sh.byKey, key)
		if event.IsPrefix(key) {
			sh.prefixes--
		}
	} else {
		sh.byKey[key] = list
	}
}

// posOf is where s is in the list of key: an adjustable subscriber is on several lists.
func (s *Subscriber) posOf(key string) int {
	if s.keys != nil && key != "" {
		return s.keys[key]
	}
	return s.pos
}

func (s *Subscriber) setPos(key string, i int) {
	if s.keys != nil && key != "" {
		s.keys[key] = i
		return
	}
	s.pos = i
}

func (h *Hub) unregister(s *Subscriber) {
	sh := h.registryOf(s)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if !s.registered {
		return
	}
	s.forEachList(func(key string) { sh.remove(s, key) })
	delete(sh.sets, s)
	s.registered = false
	h.subscribers.Add(-1)
}

// forEachList calls f with every list s is on: "" for the list of every key. An adjustable
// subscriber stays on the list of each of its keys whether it follows every key or not, so
// that switching costs O(1).
func (s *Subscriber) forEachList(f func(key string)) {
	if s.keys == nil {
		f(s.key)
		return
	}
	if s.all {
		f("")
	}
	for k := range s.keys {
		f(k)
	}
}

// removeAt swap-removes list[i] (a list of key) and fixes the moved subscriber's position.
func removeAt(list []*Subscriber, i int, key string) []*Subscriber {
	last := len(list) - 1
	if i != last {
		list[i] = list[last]
		list[i].setPos(key, i)
	}
	list[last] = nil
	return list[:last]
}

// Broadcast enqueues e to every subscriber it matches: all subscribers for an event without a
// key (gaps, heartbeats), otherwise the unfiltered ones, those of e.Key and those of a prefix
// of e.Key (each once, whatever the number of its entries that match). It never blocks on a
// subscriber and allocates nothing per subscriber.
func (h *Hub) Broadcast(e *event.Encoded) {
	h.order.Lock()
	defer h.order.Unlock()
	if e.Kind != event.KindHeartbeat {
		h.last = e.ID
	}
	h.round++
	h.writers.hold()
	defer h.writers.release()
	var n uint64
	for i := range h.shards {
		n += h.shards[i].broadcast(e, h.round)
	}
	if e.Kind != event.KindHeartbeat {
		h.delivered.Add(n)
		h.deliveredB.Add(n * uint64(e.Size()))
	}
}

// Parts is how many parts HeartbeatPart divides a hub's subscribers into.
const Parts = shardCount

// HeartbeatPart queues a heartbeat to the subscribers of part i (of Parts): a caller that sends
// part i+1 an interval/Parts after part i gives every subscriber one heartbeat per interval in
// small rounds, instead of one burst to every subscriber that events queue behind.
func (h *Hub) HeartbeatPart(i int) {
	h.order.Lock()
	defer h.order.Unlock()
	h.round++
	h.writers.hold()
	defer h.writers.release()
	h.shards[i%shardCount].broadcast(event.Heartbeat, h.round)
}

// broadcast enqueues e to the subscribers of this registry shard it matches (see Broadcast) and
// returns how many took it.
func (sh *registryShard) broadcast(e *event.Encoded, round uint64) (n uint64) {
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	for _, s := range sh.all {
		n += s.enqueue(e)
	}
	if e.Key != "" {
		n += sh.routeKey(e, e.Key, round)
		if sh.prefixes > 0 {
			event.EachPrefix(e.Key, func(p string) bool {
				n += sh.routeKey(e, p, round)
				return true
			})
		}
		return n
	}
	if sh.keyed > 0 {
		for _, list := range sh.byKey {
			for _, s := range list {
				if s.keys == nil {
					n += s.enqueue(e)
				}
			}
		}
	}
	for s := range sh.sets {
		n += s.enqueue(e)
	}
	return n
}

// routeKey enqueues e to the subscribers on the list of k (a key or a prefix); an adjustable
// subscriber already given e in this round (from another of its lists) is skipped. sh.mu is
// read-held and h.order held, so round is only written by this broadcast.
func (sh *registryShard) routeKey(e *event.Encoded, k string, round uint64) (n uint64) {
	for _, s := range sh.byKey[k] {
		if s.all { // one that follows every key has it from the list of every key
			continue
		}
		if s.keys != nil {
			if s.round == round {
				continue
			}
			s.round = round
		}
		n += s.enqueue(e)
	}
	return n
}

// Subscriber is one downstream connection's view of the hub.
type Subscriber struct {
	hub   *Hub
	id    uint64
	limit int

	// Where the subscriber is in the registry, guarded by its registry shard's lock.
	key        string         // the key it follows ("" = every key), unless keys is set
	pos        int            // its index in the list of key (or of every key)
	registered bool           // false once unregistered, or for a detached subscriber
	keys       map[string]int // an adjustable subscriber's keys, each with its index in that key's list
	all        bool           // an adjustable subscriber that follows every key: on that list too (Broadcast skips it on its keys' lists)
	round      uint64         // the last broadcast that gave an adjustable subscriber an event (written under Hub.order)

	mu     sync.Mutex
	queue  []*event.Encoded // pending events, oldest first
	queued int              // bytes pending
	reply  int              // 1 + the index in queue of the reply still pending (Reply), 0: none
	err    error            // why the subscriber stopped, once it has
	wake   chan struct{}    // capacity 1: "the queue is not empty or err is set"

	// Push mode (push.go): out receives batches from the hub's writers instead of a goroutine
	// calling Next.
	out     Output
	running bool             // queued for a writer, or held by one (or by out) with a batch
	spare   []*event.Encoded // the drained batch array, reused by the next batch

	onClose []func() // called once, by the first Close
}

// OnClose adds f to what runs once when the subscriber is closed (by whoever closes it).
func (s *Subscriber) OnClose(f func()) {
	s.mu.Lock()
	s.onClose = append(s.onClose, f)
	s.mu.Unlock()
}

// enqueue queues e for the subscriber (queue) and reports 1 if it did, for the hub's counts.
func (s *Subscriber) enqueue(e *event.Encoded) uint64 {
	if s.queue1(e, false) {
		return 1
	}
	return 0
}

// queue1 appends e unless that would pass the byte limit, in which case the subscriber is
// closed as slow (once). An empty queue takes any one event, however large: a message bigger
// than the limit is slow for nobody, it only may not pile up. A reply (a WebSocket pong)
// replaces the reply still queued, if there is one. It reports whether e was queued.
func (s *Subscriber) queue1(e *event.Encoded, reply bool) bool {
	size := e.Size()
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return false
	}
	if reply && s.reply > 0 {
		// The peer has not been sent the previous answer yet: the newest supersedes it.
		old := s.queue[s.reply-1]
		s.queue[s.reply-1] = e
		s.queued += size - old.Size()
		s.mu.Unlock()
		return true
	}
	if s.queued > 0 && s.queued+size > s.limit {
		schedule := s.failLocked(ErrSlowConsumer)
		s.mu.Unlock()
		s.hub.slowClosed.Add(1)
		if schedule {
			s.hub.writers.schedule(s) // its writer ends the stream
		}
		return false
	}
	s.queue = append(s.queue, e)
	s.queued += size
	if reply {
		s.reply = len(s.queue)
	}
	schedule := s.claimLocked()
	s.mu.Unlock()
	if schedule {
		s.hub.writers.schedule(s)
		return true
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return true
}

// takeLocked hands over the queue, leaving next (an empty array to reuse) in its place.
func (s *Subscriber) takeLocked(next []*event.Encoded) []*event.Encoded {
	batch := s.queue
	s.queue = next
	s.queued = 0
	s.reply = 0
	return batch
}

// failLocked records why the subscriber stops and drops what it had queued. It reports
// whether a pushed subscriber must be scheduled (after s.mu is released) to end its stream.
func (s *Subscriber) failLocked(err error) (schedule bool) {
	s.err = err
	clear(s.queue)
	s.takeLocked(s.queue[:0])
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return s.claimLocked()
}

// Err is why the subscriber stopped (ErrSlowConsumer, ErrUpstreamLost or ErrClosed), nil while
// it runs.
func (s *Subscriber) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Next waits until events are queued and returns all of them, oldest first. buf is the slice
// the previous call returned (or nil); its contents are dropped and its array reused, so a
// steady stream allocates nothing. Next returns ErrSlowConsumer, ErrUpstreamLost or ErrClosed
// once the subscriber stopped, or ctx's error.
func (s *Subscriber) Next(ctx context.Context, buf []*event.Encoded) ([]*event.Encoded, error) {
	clear(buf)
	buf = buf[:0]
	for {
		s.mu.Lock()
		if s.err != nil {
			err := s.err
			s.mu.Unlock()
			return buf, err
		}
		if len(s.queue) > 0 {
			batch := s.takeLocked(buf)
			s.mu.Unlock()
			return batch, nil
		}
		s.mu.Unlock()
		select {
		case <-s.wake:
		case <-ctx.Done():
			return buf, ctx.Err()
		}
	}
}

// Disconnect ends every current subscriber with err (a relay that lost Redis sends its clients
// to another replica); unlike Close, the hub keeps serving subscribers that come later. It
// returns how many it ended.
func (h *Hub) Disconnect(err error) int {
	n := 0
	for _, s := range h.registered() {
		s.mu.Lock()
		schedule := false
		if s.err == nil {
			schedule = s.failLocked(err)
			n++
		}
		s.mu.Unlock()
		if schedule {
			h.writers.schedule(s) // its writer ends the stream
		}
	}
	return n
}

// Stop ends one subscriber with err (a reason of its server's, such as an expired token): like
// Disconnect, for one. Its stream is told err where the transport can tell it (stream.Ended).
// It reports whether the subscriber was still running.
func (s *Subscriber) Stop(err error) bool {
	if s.hub == nil {
		return false
	}
	s.mu.Lock()
	running := s.err == nil
	schedule := running && s.failLocked(err)
	s.mu.Unlock()
	if schedule {
		s.hub.writers.schedule(s) // its writer ends the stream
	}
	return running
}

// Drain ends every current subscriber with err, spread evenly over d, so that the clients of a
// relay that is going away come back elsewhere a few at a time instead of all at once. It
// returns how many it ended, once the last is ended; when ctx ends it ends the rest at once.
func (h *Hub) Drain(ctx context.Context, err error, d time.Duration) int {
	subs := h.registered()
	if len(subs) == 0 {
		return 0
	}
	var tick <-chan time.Time
	if step := d / time.Duration(len(subs)); step > 0 {
		t := time.NewTicker(step)
		defer t.Stop()
		tick = t.C
	}
	n := 0
	for i, s := range subs {
		if i > 0 && tick != nil {
			select {
			case <-tick:
			case <-ctx.Done():
				tick = nil
			}
		}
		if s.Stop(err) {
			n++
		}
	}
	return n
}

// registered lists every registered subscriber.
func (h *Hub) registered() []*Subscriber {
	var subs []*Subscriber
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.RLock()
		subs = append(subs, sh.all...)
		subs = append(subs, sh.keyedSubscribers()...)
		for s := range sh.sets {
			subs = append(subs, s)
		}
		sh.mu.RUnlock()
	}
	return subs
}

// Close unregisters the subscriber. It is safe to call more than once and concurrently with
// Broadcast.
func (s *Subscriber) Close() {
	s.mu.Lock()
	schedule := s.err == nil && s.failLocked(ErrClosed)
	onClose := s.onClose
	s.onClose = nil
	s.mu.Unlock()
	defer func() {
		for _, f := range onClose {
			f()
		}
	}()
	if schedule {
		s.hub.writers.schedule(s)
	}
	if s.hub != nil {
		s.hub.unregister(s)
	}
}

// Detached returns a subscriber that belongs to no hub and never receives anything: for a
// stream that only replays history (it must not count as a live subscriber). Close it as usual.
func Detached() *Subscriber {
	return &Subscriber{wake: make(chan struct{}, 1)}
}
