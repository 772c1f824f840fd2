// Package watch notices input and hang-ups on many idle connections from one goroutine, so a
// stream that only writes (an SSE or WebSocket subscriber served by the hub's writers) needs no
// goroutine of its own blocked in Read to learn that its peer went away or sent a control frame.
//
// On Linux it is an edge-triggered epoll set beside the Go runtime's own: the runtime still owns
// the sockets (deadlines, writes, Close); the watcher only waits for readiness and calls the
// connection's handler, which reads what is there without waiting. Elsewhere Add reports
// ErrUnsupported and callers keep a goroutine per connection.
package watch

import "errors"

// ErrUnsupported is what Add returns where there is no watcher (not Linux).
var ErrUnsupported = errors.New("watching connections without a goroutine each needs Linux")

// Default is the process's watcher (on Linux started on first use).
var Default = &Watcher{}
