package watch

import (
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// pair returns both ends of a loopback TCP connection.
func pair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if server, err = ln.Accept(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

// drain reads what rc has without waiting: the bytes, and whether the peer is gone.
func drain(rc syscall.RawConn) (got []byte, eof bool) {
	var buf [64]byte
	_ = rc.Read(func(fd uintptr) bool {
		for {
			n, err := syscall.Read(int(fd), buf[:])
			if n > 0 {
				got = append(got, buf[:n]...)
				continue
			}
			eof = n == 0 && err == nil || err != nil && err != syscall.EAGAIN
			return true
		}
	})
	return got, eof
}

func TestWatcherCallsOnInputAndHangUpWithoutAGoroutineEach(t *testing.T) {
	w := &Watcher{}
	if runtime.GOOS != "linux" {
		// Elsewhere there is no watcher: Add says so and callers keep a goroutine per stream.
		server, _ := pair(t)
		rc, _ := server.(*net.TCPConn).SyscallConn()
		if _, err := w.Add(rc, func() {}); err != ErrUnsupported {
			t.Fatalf("Add on %s = %v, want ErrUnsupported", runtime.GOOS, err)
		}
		return
	}
	type seen struct {
		data string
		eof  bool
	}
	const conns = 50
	calls := make(chan seen, conns*4)
	var clients []net.Conn
	var removes []func()
	for range conns {
		server, client := pair(t)
		rc, _ := server.(*net.TCPConn).SyscallConn()
		remove, err := w.Add(rc, func() {
			b, eof := drain(rc)
			if len(b) > 0 || eof {
				calls <- seen{string(b), eof}
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		clients, removes = append(clients, client), append(removes, remove)
	}
	if got := w.Watched(); got != conns {
		t.Fatalf("Watched = %d, want %d", got, conns)
	}
	next := func() seen {
		t.Helper()
		select {
		case s := <-calls:
			return s
		case <-time.After(5 * time.Second):
			t.Fatal("no call within 5 s")
			return seen{}
		}
	}
	if _, err := clients[7].Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if s := next(); s.data != "ping" || s.eof {
		t.Fatalf("after input the handler read %+v, want ping", s)
	}
	clients[9].Close()
	if s := next(); !s.eof {
		t.Fatalf("after the peer closed the handler read %+v, want the end", s)
	}
	removes[3]()
	removes[3]() // twice is harmless
	if _, err := clients[3].Write([]byte("unheard")); err != nil {
		t.Fatal(err)
	}
	if _, err := clients[4].Write([]byte("heard")); err != nil {
		t.Fatal(err)
	}
	if s := next(); s.data != "heard" {
		t.Fatalf("got %+v, want only the input of a watched connection", s)
	}
	if got := w.Watched(); got != conns-1 {
		t.Fatalf("Watched = %d after a removal, want %d", got, conns-1)
	}
}
