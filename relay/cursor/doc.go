// Package cursor parses, prints and compares the relay's cursors.
//
// A cursor is the Redis stream ID of the last event a subscriber has seen on one shard
// ("<milliseconds>-<sequence>", both unsigned 64-bit decimals). Stream IDs grow monotonically
// on one master, so comparing two IDs orders events of one shard; after a failover that lost
// acknowledged writes they can go backwards, which the upstream detects and reports (see
// relay/upstream). A cursor travels as the SSE `id:` field, the `Last-Event-ID` header, the
// `?since=` parameter and the CloudEvents `id` attribute; it is untrusted input and every
// parser here is fuzzed.
package cursor
