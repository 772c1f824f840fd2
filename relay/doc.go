// Package relay is Herald's relay: the process between apps and Redis Cluster that publishes
// notifications (XADD + SPUBLISH in one script), fans them out to SSE and WebSocket subscribers
// from ONE Redis subscription per shard, and lets subscribers resume by cursor without gaps.
//
// Main is the entry point of `herald relay`. The shard role (one Deployment per shard of a
// NotificationChannel) is ShardRelay; the sidecar role (injected next to an app) is
// relay/sidecar. The parts live in sub-packages, named for what they do:
//
//	relay/shardmap  the contract with the operator: shard map, key and channel names, hashing
//	relay/cursor    stream-ID cursors and composite (one ID per shard) cursors: parse, print, compare
//	relay/event     CloudEvents JSON and SSE framing, encoded once per message; publish parsing
//	relay/hub       sharded subscriber registry, byte-bounded queues, slow-consumer close
//	relay/upstream  Redis: publish script, the shard subscription, catch-up, failover, rollbacks
//	relay/httpapi   HTTP API v1: publish, SSE, WebSocket, shard map, health, readiness, metrics
//	relay/metrics   Prometheus metrics
//	relay/auth      caller authentication of shard relays: TokenReview, namespace access check
//	relay/sidecar   the sidecar role: discovery, publish routing, one upstream per shard, merge
//
// See docs/relay.md for the behaviour a user and an operator can rely on.
package relay
