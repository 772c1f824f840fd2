package watch

import (
	"sync"
	"syscall"
)

// Watcher calls a handler whenever its connection has input, a hang-up or an error.
type Watcher struct {
	once     sync.Once
	epfd     int
	err      error
	mu       sync.Mutex
	handlers map[uint64]func()
	next     uint64
}

func (w *Watcher) start() {
	w.epfd, w.err = syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if w.err != nil {
		return
	}
	w.handlers = make(map[uint64]func())
	go w.run()
}

// Add calls onReady on the watcher's goroutine each time rc becomes readable (input, end of
// input, an error), and once at once if it already is. onReady must read until the socket has
// nothing more (EAGAIN) or is done, and must not block: every watched connection waits for it.
// remove stops the calls; call it before closing the connection.
func (w *Watcher) Add(rc syscall.RawConn, onReady func()) (remove func(), err error) {
	w.once.Do(w.start)
	if w.err != nil {
		return nil, w.err
	}
	w.mu.Lock()
	w.next++
	token := w.next
	w.handlers[token] = onReady
	w.mu.Unlock()
	var fd int
	cerr := rc.Control(func(f uintptr) {
		fd = int(f)
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | edgeTriggered}
		// The token, not the fd, names the connection: a closed fd's number is soon reused.
		*(*uint64)(pointerToFd(&ev)) = token
		err = syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_ADD, fd, &ev)
	})
	if err == nil {
		err = cerr
	}
	if err != nil {
		w.forget(token)
		return nil, err
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			w.forget(token)
			_ = rc.Control(func(f uintptr) { _ = syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_DEL, int(f), nil) })
		})
	}, nil
}

func (w *Watcher) forget(token uint64) {
	w.mu.Lock()
	delete(w.handlers, token)
	w.mu.Unlock()
}

// Watched is the number of connections being watched.
func (w *Watcher) Watched() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.handlers)
}

func (w *Watcher) run() {
	events := make([]syscall.EpollEvent, 256)
	for {
		n, err := syscall.EpollWait(w.epfd, events, -1)
		if err != nil {
			if err == syscall.EINTR {
				continue
			}
			return
		}
		for i := range n {
			token := *(*uint64)(pointerToFd(&events[i]))
			w.mu.Lock()
			h := w.handlers[token]
			w.mu.Unlock()
			if h != nil {
				h()
			}
		}
	}
}
