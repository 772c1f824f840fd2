package watch

import (
	"syscall"
	"unsafe"
)

// pointerToFd points at the 64-bit data of an epoll event (its Fd and Pad fields together,
// as the kernel's epoll_data union is laid out).
func pointerToFd(ev *syscall.EpollEvent) unsafe.Pointer { return unsafe.Pointer(&ev.Fd) }

// edgeTriggered is EPOLLET, which package syscall declares as a negative int.
const edgeTriggered = 1 << 31
