// Package hub fans encoded events out to the subscribers of one shard relay.
//
// The registry is split into 64 shards, each with its own RWMutex, so subscribing and
// unsubscribing never stall a broadcast for long; totals are running atomic counters, never walks
// under a lock. Broadcast hands every matching subscriber the same *event.Encoded and never
// blocks: each Subscriber has a queue bounded in bytes, and a subscriber whose queue would pass
// its limit is closed once as a slow consumer (ErrSlowConsumer) and gets nothing more; it resumes
// by cursor on a new connection. Enqueueing allocates nothing per subscriber once a queue has
// grown to its working size (the writer hands its drained slice back, double-buffering).
//
// A subscriber is drained in one of two ways. Pulled: a goroutine of its own calls
// Subscriber.Next, which returns everything queued since the last call, so a burst becomes one
// write (WebSocket, the sidecar). Pushed (push.go): Subscriber.Push hands it to the hub's few
// writer goroutines, which call its Output with everything queued whenever it has events; an
// idle pushed subscriber holds no goroutine (a shard relay's live SSE streams). Writers work
// in rounds at most SetWriteInterval apart, so under load each connection gets one write per
// round.
package hub
