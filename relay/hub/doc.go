// Package hub fans encoded events out to the subscribers of one relay (a shard relay's, or a
// sidecar's local subscribers).
//
// The registry is split into 64 shards, each with its own RWMutex, so subscribing and
// unsubscribing never stall a broadcast for long; totals are running atomic counters, never walks
// under a lock. Broadcast hands every matching subscriber the same *event.Encoded and never
// blocks: each Subscriber has a queue bounded in bytes, and a subscriber whose queue would pass
// its limit is closed once as a slow consumer (ErrSlowConsumer) and gets nothing more; it resumes
// by cursor on a new connection. Enqueueing allocates nothing per subscriber once a queue has
// grown to its working size (the writer hands its drained slice back, double-buffering).
//
// A subscriber is drained in one of two ways. Pushed (push.go): Subscriber.Push hands it to
// the hub's few writer goroutines, which call its Output with everything queued whenever it has
// events; an idle pushed subscriber holds no goroutine. Every live stream whose connection is
// taken over from net/http is pushed, SSE or WebSocket, relay or sidecar (package stream).
// Writers work in rounds at most SetWriteInterval apart, so under load each connection gets one
// write per round. Pulled: a goroutine of its own calls Subscriber.Next, which returns
// everything queued since the last call, so a burst becomes one write (an SSE stream that
// cannot be taken over: HTTP/2, a HEAD).
//
// What a subscriber's peer asks for (an interest change's notice, a WebSocket pong) is queued
// with Notify or Reply and counts against the same byte limit; a newer reply replaces one not
// yet written.
package hub
