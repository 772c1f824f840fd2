// Package stream owns a subscriber's stream, SSE or WebSocket, from the moment its subscriber
// is registered with a hub to its end, for every role that serves one (a shard relay, a
// sidecar):
//
//	register (the role) -> Serve: take the connection over -> Source.Replay -> the seam
//	  (Source.Filter with Advance) -> live on the hub's writers -> the end, with a reason
//
// A role supplies a Source: its replay (a relay reads its Redis stream, a sidecar its shard
// relays), its filter of live batches (the seam, a sidecar's composite cursors) and the
// subscriber's cursor. Admission to a role's limits rides along as an Admission, given back
// when the replay is over and when the stream ends. Validating the request, answering refusals
// as problems and registering with the hub stay with the role's handlers.
//
// A taken-over connection (conn.go) is a Sink for the replay, written with blocking writes,
// and then a hub.Output: the hub's few writer goroutines write live batches to it with
// non-blocking writes, so an idle stream holds no goroutine. SSE (sse.go) and WebSocket
// (websocket.go, RFC 6455 over gobwas/ws's handshake) differ only in their framer. An SSE
// stream that cannot be taken over (HTTP/2, a HEAD) is served on its handler's goroutine
// through net/http (sseSink); a WebSocket always is taken over.
//
// What a WebSocket client sends is read by the shared watcher (package watch), which must never
// wait: pings are answered through the hub in order with the events. A subscriber sends no
// messages, except where its role takes commands (Options.Commands: an edge's follow, unfollow,
// fresh token): each text frame is then handed to a goroutine of the stream's own that runs
// while commands wait, and answered with TextNotice through the hub, in order with the events.
//
// How a stream ends, for a client to act on:
//
//	slow consumer       SSE ": closed: slow consumer: ... Last-Event-ID <cursor> ..."; WebSocket 4429
//	the relay lost Redis SSE ": closed: this relay lost ..."; WebSocket 1013
//	end of a replay     SSE ": end of replay"; WebSocket 1000 (?live=false)
//	a failed replay     SSE ": closed: <reason>"; WebSocket 1013 with the reason
//	a client's misstep  WebSocket 1008 (a message where the role takes no commands, too many
//	                    control frames or waiting commands, a fragmented command), 1003 (a
//	                    binary message), 1007 (text that is not UTF-8), 1009 (a command past
//	                    MaxCommandBytes) or 1002 (bad frame)
package stream
