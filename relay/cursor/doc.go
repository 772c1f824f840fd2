// Package cursor parses, prints and compares the relay's cursors.
//
// A cursor is the Redis stream ID of the last event a subscriber has seen on one shard
// ("<milliseconds>-<sequence>", both unsigned 64-bit decimals). Stream IDs grow monotonically
// on one master, so comparing two IDs orders events of one shard; after a failover that lost
// acknowledged writes they can go backwards, which the upstream detects and reports (see
// relay/upstream). A cursor travels as the SSE `id:` field, the `Last-Event-ID` header, the
// `?since=` parameter and the CloudEvents `id` attribute; it is untrusted input and every
// parser here is fuzzed.
//
// A sidecar's whole-channel subscription merges all shards of a channel; its cursor is a
// Composite, one stream ID per shard ("<id0>.<id1>.<id2>"), so resuming replays every shard
// from exactly where that subscriber was. A one-shard composite prints as the plain ID.
package cursor
