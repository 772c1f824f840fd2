// Package httpapi holds the handlers of HTTP API v1 on a shard relay: publish (POST
// .../messages, one event or a CloudEvents batch: publish.go; package publish reads the request
// and writes its answers), subscribe (SSE .../events and WebSocket .../ws: subscribe.go;
// package stream serves the stream), interest streams and their changes (POST
// .../streams/{id}: interest.go), the shard map (.../shards), /healthz, /readyz, /metrics and
// the API documents. The per-caller limits are limits.go; CORS and the WebSocket origin and
// upgrade checks are browser.go.
//
// Every error is an RFC 9457 problem (application/problem+json, package problem): type, title,
// status, detail, the detail again as "error", retryAfter with a Retry-After header, and
// extension members where a status needs them:
//
//	400 bad key, cursor, header, query parameter or body     404 unknown channel, path or stream
//	401/403 caller not authenticated/permitted               405 wrong method (Allow says which)
//	409 an idempotency key reused with another message       413 body over maxMessageBytes
//	415 missing or unusable Content-Type                     421 key of another shard (see below)
//	426 not a WebSocket upgrade (on .../ws)                   429 a limit reached (Retry-After)
//	503 Redis did not take the write, or the caller cannot be checked now (Retry-After)
//
// A shard relay serves one shard. A key that hashes to another shard gets 421 Misdirected
// Request with the members "shard" and "endpoint": the request is well-formed but was sent to
// the wrong server, which is exactly what 421 means (RFC 9110 15.5.20); the body says where to
// go.
//
// Subscribing: a handler validates the request, admits it against the limits and registers its
// subscriber with the hub; package stream serves the stream from there (replay after
// Last-Event-ID or ?since=, the seam, live delivery, the end) with this package's source: the
// shard's Redis stream. The sidecar serves its own subscribers through the same package.
package httpapi
