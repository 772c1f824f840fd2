//go:build !linux

package watch

import (
	"errors"
	"syscall"
)

// Watcher is not available here: Add always fails.
type Watcher struct{}

// ErrUnsupported is what Add returns where there is no watcher (not Linux).
var ErrUnsupported = errors.New("watching connections without a goroutine each needs Linux")

// Default is the process's watcher.
var Default = &Watcher{}

// Add reports ErrUnsupported.
func (w *Watcher) Add(syscall.RawConn, func()) (func(), error) { return nil, ErrUnsupported }

// Watched is 0.
func (w *Watcher) Watched() int { return 0 }
