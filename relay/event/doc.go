// Package event turns published notifications into the bytes subscribers receive, once.
//
// A Message is what a publisher sent (key, CloudEvents type, content type, data) plus the stream
// ID Redis gave it. Encoder.Encode builds, in one buffer, the SSE frame
//
//	id: <cursor>
//	event: message
//	data: <CloudEvents 1.0 JSON, structured mode, one line>
//	<empty line>
//
// and Encoded.JSON is the CloudEvent inside that same buffer, which the WebSocket writer sends as
// one text frame. Every subscriber of a message gets the same *Encoded; its bytes are read-only
// (never append to them). The package also parses what a publisher POSTs (binary and structured
// CloudEvents HTTP modes) and the relay's own wire formats between the publish script and the
// live channel; all of it is untrusted input and fuzzed.
package event
