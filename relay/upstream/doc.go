// Package upstream is the Redis side of a shard relay: publishing (one Lua script per message),
// the shard's single sharded-pub/sub subscription, catch-up from the stream, failover handling
// and resume plans for subscribers that come back with a cursor.
//
// # One subscription per shard, health-checked
//
// Subscription.Run keeps exactly one SSUBSCRIBE to the shard's live channel, on the slot's
// master. It uses PubSub.ReceiveTimeout, never PubSub.Channel (which hides sunsubscribe, drops
// messages and reconnects silently; REDIS-NOTES.md). Any of these ends a session:
//
//   - an error from Receive (connection lost, MOVED in reply to SSUBSCRIBE);
//   - an unrequested "sunsubscribe" (slot migrated, or the master was demoted after a pause);
//   - a PING that cannot be written;
//   - no heartbeat probe of our own within ProbeTimeout: the relay SPUBLISHes a probe on its own
//     live channel every ProbeInterval and must hear it back (this catches the redis 7.0 bug where
//     a subscription on a moved replica goes silent, and a paused master).
//
// A new session reloads the cluster map (ReloadState), waits until MasterForKey names a node
// that answers a keyed command for the slot without MOVED, subscribes on that node's own client
// (so go-redis cannot pick a node from a stale map, issue #3133/#3806) and only then asks the
// processor to catch up: XRANGE from the last delivered ID, deduplicated by ID against what the
// live subscription delivers meanwhile. Subscribe first, read the stream second: nothing can
// fall between the two.
//
// # Never block the Redis read loop
//
// The read loop hands each live message to one processor goroutine through a bounded channel.
// A full channel is counted (handoff_overflows_total) and makes the processor catch up from the
// stream before it takes the next message, so an overflow costs latency, never a message.
//
// # Rollbacks
//
// Stream IDs come from the master's clock, and asynchronous replication can lose acknowledged
// writes in a failover. After every resubscribe the processor checks whether the last ID it
// delivered is still in the stream (or whether last-generated-id is now below it). If not,
// Redis lost entries: it counts a rollback, logs it, broadcasts a "gap" event with reason
// "rollback" to every subscriber, remembers the range for resuming subscribers, and continues
// after the newest entry it had delivered that survived — entries written after the failover
// are delivered even when their IDs are lower than IDs delivered before it.
package upstream
