package hub

import (
	"github.com/heraldhq/herald/relay/cursor"
	"github.com/heraldhq/herald/relay/event"
)

// Interest is what an adjustable subscriber follows: every key, or a set of keys and key
// prefixes (event.IsPrefix), possibly none, in which case it receives only gaps and heartbeats.
type Interest struct {
	All  bool
	Keys []string
}

// Change adjusts an Interest: All, when set, switches between every key and the key set; Add
// and Remove edit the key set (kept while All is on, and used again once it is off).
type Change struct {
	All         *bool
	Add, Remove []string
}

// SubscribeInterest registers an adjustable subscriber (a sidecar's upstream): one stream that
// follows in, changed later with Adjust without a new connection. Its routing costs what any
// keyed subscriber's does: an event goes through the list of its key only, whatever the number
// of adjustable subscribers.
func (h *Hub) SubscribeInterest(in Interest) *Subscriber {
	s := h.newSubscriber()
	s.keys = make(map[string]int, len(in.Keys))
	s.all = in.All
	sh := h.registryOf(s)
	sh.mu.Lock()
	for _, k := range in.Keys {
		if _, dup := s.keys[k]; !dup {
			s.keys[k] = -1
			sh.add(s, k)
		}
	}
	if s.all {
		sh.add(s, "")
	} else {
		sh.sets[s] = struct{}{}
	}
	s.registered = true
	sh.mu.Unlock()
	h.subscribers.Add(1)
	return s
}

// Adjust applies c between two broadcasts and queues, in order with the subscriber's events,
// notice(at): every event up to at was routed by the old interest, every event after it by
// the new one. at is the cursor of the newest event broadcast before the change, or floor if
// that is later (a relay's stream that replayed past the live position). It returns at, and
// false if the subscriber is not adjustable, no longer registered, or was closed as a slow
// consumer because the notice would pass its byte limit.
func (s *Subscriber) Adjust(c Change, floor cursor.ID, notice func(at cursor.ID) *event.Encoded) (cursor.ID, bool) {
	h := s.hub
	if h == nil || s.keys == nil {
		return cursor.ID{}, false
	}
	h.order.Lock()
	defer h.order.Unlock()
	sh := h.registryOf(s)
	sh.mu.Lock()
	if !s.registered {
		sh.mu.Unlock()
		return cursor.ID{}, false
	}
	if c.All != nil && *c.All != s.all {
		// O(1) whatever the number of keys: the subscriber stays on its keys' lists, and moves
		// between the list of every key and the set of adjustable subscribers (gaps and
		// heartbeats reach it through one of the two).
		if *c.All {
			delete(sh.sets, s)
			sh.add(s, "")
		} else {
			sh.remove(s, "")
			sh.sets[s] = struct{}{}
		}
		s.all = *c.All
	}
	for _, k := range c.Remove {
		if _, ok := s.keys[k]; ok {
			sh.remove(s, k)
			delete(s.keys, k)
		}
	}
	for _, k := range c.Add {
		if _, ok := s.keys[k]; !ok {
			s.keys[k] = -1
			sh.add(s, k)
		}
	}
	sh.mu.Unlock()
	at := h.last
	if at.Less(floor) {
		at = floor
	}
	if !s.Notify(notice(at)) {
		return cursor.ID{}, false // closed as a slow consumer: the notice would pass its limit
	}
	return at, true
}

// Follows reports what an adjustable subscriber follows now (for status pages and tests).
func (s *Subscriber) Follows() (all bool, keys int) {
	if s.hub == nil {
		return false, 0
	}
	sh := s.hub.registryOf(s)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	return s.all, len(s.keys)
}

// Notify queues a notice for this subscriber alone (event.KindNotice), in order with its
// events. A notice counts against the byte limit like an event: a peer that asks for notices
// (interest changes) while it stops reading is closed as a slow consumer, never let to grow
// the queue. It reports whether the notice was queued.
func (s *Subscriber) Notify(e *event.Encoded) bool {
	return s.hub != nil && s.queue1(e, false)
}

// Reply queues a notice that answers the peer (a WebSocket pong): only the newest reply not
// yet written is kept, since it supersedes an unsent one (RFC 6455 5.5.3), so a peer that
// pings without reading holds one reply in the queue however often it pings.
func (s *Subscriber) Reply(e *event.Encoded) bool {
	return s.hub != nil && s.queue1(e, true)
}
