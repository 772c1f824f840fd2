package sidecar

import (
	"context"
	"net/http"
	"sync"

	"github.com/heraldhq/herald/relay/event"
	"github.com/heraldhq/herald/relay/publish"
)

// Coalescing: the single publishes of local apps to one shard (with one ack mode) that arrive
// while one is on its way to the relay are sent together as one batch when it returns, so a
// busy pod costs its relays one request per round trip instead of one per message. A publish
// that finds nothing in flight goes out at once, alone and unchanged; so does any publish the
// sidecar does not read as a well-formed event (the relay answers it as before).
const (
	maxCoalesced      = 256     // events per batch
	maxCoalescedBytes = 2 << 20 // bytes of events per batch (the relay takes 4 MiB)
)

// coalescer queues the publishes of one (shard, ack mode) of a channel.
type coalescer struct {
	mu    sync.Mutex
	busy  bool // a publish or batch of this queue is on its way
	queue []*queuedPublish
}

// queuedPublish is one app's publish, waiting for its answer.
type queuedPublish struct {
	ctx    context.Context               // the app's request: once it ended, the publish is not sent
	event  []byte                        // the publish as a structured CloudEvent
	key    publish.EventKey              // its Idempotency-Key, if any
	alone  func() (*relayAnswer, string) // sends the app's request by itself (nil answer: no relay took it, and why)
	done   chan struct{}                 // closed when answer is set
	ans    *relayAnswer                  // the relay's answer for this event (nil: no relay took it, or failed)
	err    string                        // with a nil ans: the last failure
	failed int                           // the status of its event's failure in a batch (0: none)
	detail string                        // what the failure said
}

// coalescerFor returns the queue of shard with waitReplicas.
func (ch *channel) coalescerFor(shard, waitReplicas int) *coalescer {
	ch.coalMu.Lock()
	defer ch.coalMu.Unlock()
	k := [2]int{shard, waitReplicas}
	c := ch.coal[k]
	if c == nil {
		c = &coalescer{}
		ch.coal[k] = c
	}
	return c
}

// publish sends q alone if nothing of the queue is in flight, else queues it for the next batch
// (sent by sendBatch). q.done is closed once q has its answer.
func (c *coalescer) publish(q *queuedPublish, sendBatch func([]*queuedPublish)) {
	c.mu.Lock()
	if c.busy {
		c.queue = append(c.queue, q)
		c.mu.Unlock()
		return
	}
	c.busy = true
	c.mu.Unlock()
	defer func() { close(q.done); go c.drain(sendBatch) }() // even if alone panics: the queue goes on
	q.ans, q.err = q.alone()
}

// drain sends what queued up meanwhile, batch after batch, until the queue is empty.
func (c *coalescer) drain(sendBatch func([]*queuedPublish)) {
	for {
		c.mu.Lock()
		if len(c.queue) == 0 {
			c.busy = false
			c.mu.Unlock()
			return
		}
		n, size := 0, 0
		for n < len(c.queue) && n < maxCoalesced && (n == 0 || size+len(c.queue[n].event) <= maxCoalescedBytes) {
			size += len(c.queue[n].event)
			n++
		}
		batch := c.queue[:n:n]
		c.queue = append([]*queuedPublish(nil), c.queue[n:]...)
		c.mu.Unlock()
		live := batch[:0:0]
		for _, q := range batch {
			if q.ctx.Err() != nil { // its app has had its 503 already: a retry of it must not find it stored
				close(q.done)
				continue
			}
			live = append(live, q)
		}
		if len(live) > 0 {
			sendBatch(live)
		}
	}
}

// sendBatch sends qs as one batch to a relay of shard and gives each its answer. A relay that
// answers the batch as a whole (one older than batches answers 415) gets each publish alone.
func (s *Sidecar) sendBatch(ch *channel, shard int, query string, qs []*queuedPublish) {
	defer func() {
		for _, q := range qs {
			close(q.done)
		}
	}()
	if len(qs) == 1 {
		qs[0].ans, qs[0].err = qs[0].alone()
		return
	}
	body := make([]byte, 0, 2+len(qs)*(len(qs[0].event)+1))
	body = append(body, '[')
	var keys []byte
	for i, q := range qs {
		if i > 0 {
			body = append(body, ',')
		}
		body = append(body, q.event...)
		keys = publish.AppendEventKey(keys, q.key)
	}
	body = append(body, ']')
	hdr := http.Header{"Content-Type": {event.BatchMediaType}, publish.EventKeysHeader: {string(keys)}}
	ctx, cancel := context.WithTimeout(context.Background(), s.opt.PublishTimeout)
	defer cancel()
	s.met.PublishBatches.Inc()
	ans, _ := s.forward(ctx, ch, shard, query, body, hdr)
	var outcomes []publish.Outcome
	ok := false
	if ans != nil {
		outcomes, ok = publish.ParseBatchAnswer(ans.body)
	}
	if !ok || len(outcomes) != len(qs) {
		// No relay took the batch, or one answered it as a whole (an older relay: 415; a map
		// that moved on: 421): each publish tries alone, with its own retries and answer.
		var wg sync.WaitGroup
		for _, q := range qs {
			wg.Add(1)
			go func() { defer wg.Done(); q.ans, q.err = q.alone() }()
		}
		wg.Wait()
		return
	}
	for i, q := range qs {
		if o := outcomes[i]; !o.Stored() {
			q.failed, q.detail = o.Status, o.Detail
			continue
		}
		q.ans = &relayAnswer{status: http.StatusAccepted, header: http.Header{"Content-Type": {"application/json"}},
			body: append(outcomes[i].Result.AppendJSON(nil), '\n'), retried: ans.retried}
	}
}

// coalescable reports whether a single publish, read and valid, may go in a batch: not one
// that carries a sidecar's own headers (a relay's answer to those stays the app's answer).
func coalescable(r *http.Request) bool {
	return r.Header.Get(publish.RetryKeyHeader) == "" && r.Header.Get(publish.EventKeysHeader) == ""
}
