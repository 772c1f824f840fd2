// Package httpapi serves HTTP API v1 of a shard relay: publish (POST .../messages), subscribe
// (SSE .../events and WebSocket .../ws, with resume by cursor), the shard map (.../shards) and
// /healthz, /readyz, /metrics.
//
// Every error is JSON, {"error": "<what is wrong and what to do>"}, with these statuses:
//
//	400 bad key, cursor, header, query parameter or body     404 unknown channel or path
//	405 wrong method (Allow says which)                      413 body over maxMessageBytes
//	415 missing or unusable Content-Type                     421 key of another shard (see below)
//	503 Redis did not take the write (Retry-After: 1)        401/403 caller not authenticated/permitted
//	                                                         (Config.Authorize; 503 when it cannot check)
//
// A shard relay serves one shard. A key that hashes to another shard gets 421 Misdirected
// Request with {"error", "shard", "endpoint"}: the request is well-formed but was sent to the
// wrong server, which is exactly what 421 means (RFC 9110 15.5.20); the body says where to go.
//
// Subscribing: the writer of a connection registers with the hub first, then (with a cursor
// from Last-Event-ID or ?since=) replays the stream after the cursor, then sends what the hub
// queued meanwhile, skipping IDs the replay already sent. Nothing falls between replay and live,
// and nothing is sent twice. A subscriber whose queue passes its byte limit is closed with the
// reason: an SSE comment ": closed: slow consumer ...", or WebSocket close code 4429.
// ?live=false (with a cursor) ends the stream after the replay with the comment ": end of
// replay" (WebSocket: normal closure): sidecars resume their subscribers with it.
//
// A live SSE stream of a shard relay is taken over from net/http after its replay and written
// by the hub's writers with non-blocking writes (ssepush.go), so an idle one holds no handler
// goroutine and no net/http buffers. Streams.SSE, Streams.WebSocket and the Sink they hand out are
// shared with the sidecar, so both roles frame, batch and close streams identically.
package httpapi
