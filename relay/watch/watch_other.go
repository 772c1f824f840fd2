//go:build !linux

package watch

import (
	"syscall"
)

// Watcher is not available here: Add always fails.
type Watcher struct{}

// Add reports ErrUnsupported.
func (w *Watcher) Add(syscall.RawConn, func()) (func(), error) { return nil, ErrUnsupported }

// Watched is 0.
func (w *Watcher) Watched() int { return 0 }
