// Package sidecar is the relay injected next to an app: it serves HTTP API v1 on loopback with
// the paths, problem+json errors, events and cursors of a shard relay (not its interest
// streams: it holds those itself, upstream), and reaches the channel's shard relays for the app.
// Its subscribers' streams are served by package stream, as a shard relay's are, with a source
// of its own (subscribe.go: replay from the shard relays, composite cursors).
//
//   - Discovery: each channel's shard map comes from GET /v1/channels/{c}/shards on the
//     channel's relay Service ({c}-relay.{ns}.svc:7070), refreshed periodically and whenever a
//     call fails or a relay says the map moved on (421). Service hosts are resolved by DNS, or
//     through an endpoints file (shardmap.Endpoints) where there is no cluster DNS. A shard's
//     relays are called by their own addresses, from its headless Service (Shard.Replicas; else
//     its Service, Shard.Endpoint), so that a replica that failed or went silent is avoided
//     (markDown) rather than picked again by kube-proxy.
//   - Publish: routed by key (shardmap.ShardFor) to the shard's relays; a failed attempt is
//     repeated on another replica with the same Idempotency-Key (the sidecar makes one up when
//     the app sent none), so a retry never stores a message twice.
//   - Subscribe: ONE upstream SSE stream per (channel, shard), opened on the first local
//     subscriber, whatever the number of local clients; it reconnects to another replica with
//     its cursor (no loss, no duplicate), also when the relay went silent (IdleTimeout). Local
//     fan-out goes through relay/hub (bounded queues, slow-consumer close). A keyed
//     subscription reads its key's shard and gets the relay's own bytes and cursors. A
//     whole-channel subscription gets the shards merged, each event identified by a composite
//     cursor (cursor.Composite: the last stream ID of every shard), encoded once for all
//     subscribers that are in step with the merged stream. A subscription of several keys or
//     of a prefix (key= repeated, a key ending in "/") reads the merged stream too, routed by
//     the local hub; each upstream follows that subscription's keys of its shard and every
//     prefix.
//   - Resume: Last-Event-ID (or ?since=) replays each shard after its ID from the shard relays
//     (?live=false), then joins the shared stream, skipping per shard what replay already sent.
//   - Credentials: every call to a shard relay carries Authorization: Bearer <token>, read from
//     the projected service account token file and re-read when it changes.
package sidecar
