package redisconf

import (
	"context"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/testing/rediscluster"
)

// TestWatchSeesRestartsAndCatchesUpLaggingNodes runs on a cluster of its own (nodes are paused
// and restarted). A paused replica is reported as lagging by EnsureUser while the others are
// written; once the cluster marks it failed it is not dialled at all. The pool's watch reports
// the Redis when the node answers again and when it restarts, and closes unused connections.
func TestWatchSeesRestartsAndCatchesUpLaggingNodes(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cluster, err := rediscluster.Start(7401, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cluster.Down() })

	var pool Pool
	opts := Options{Addrs: []string{cluster.Addr()}}
	conn := pool.Get(opts)
	changed := make(chan string, 16)
	go pool.Watch(ctx, 200*time.Millisecond, time.Hour, func(key string) { changed <- key })

	_, nodes, err := conn.Discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var replica Node
	for _, n := range nodes {
		if !n.Master {
			replica = n
		}
	}
	port := portOf(t, replica.Addr)
	user := User{Name: unique("watch"), Password: "pw", KeyPattern: "herald:{watch/*", Commands: []string{"ping"}}

	if err := cluster.Signal(port, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer cluster.Signal(port, syscall.SIGCONT) //nolint:errcheck // the node may be gone already
	written, lagging := conn.EnsureUser(ctx, nodes, user)
	if len(written) != 5 || len(lagging) != 1 || lagging[0].Node.Addr != replica.Addr {
		t.Fatalf("with %s paused: wrote %v, lagging %v; want 5 written and the paused replica lagging", replica.Addr, written, lagging)
	}
	awaitChange(t, changed, opts.Key(), "the replica stopped answering")
	// The cluster gives up on it after its node timeout: from then on it is not dialled.
	eventuallyFailed(t, conn, replica.Addr)
	start := time.Now()
	_, nodes, _ = conn.Discover(ctx)
	if _, lagging = conn.EnsureUser(ctx, nodes, user); len(lagging) != 1 || lagging[0].Err != errMarkedFailed {
		t.Fatalf("a failed node must lag as marked failed: %v", lagging)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("EnsureUser took %v with a failed node: it must not be dialled", d)
	}

	if err := cluster.Signal(port, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	awaitChange(t, changed, opts.Key(), "the replica answers again")

	// A restart quicker than the node timeout leaves the node "online" throughout: the run ID
	// is what tells.
	eventuallyOnline(t, conn, replica.Addr)
	before := conn.nodeStates(ctx, 2*time.Second)[replica.Addr]
	if err := cluster.Signal(port, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := cluster.Restart(port); err != nil {
		t.Fatal(err)
	}
	eventuallyOnline(t, conn, replica.Addr)
	after := conn.nodeStates(ctx, 2*time.Second)[replica.Addr]
	_, idBefore, _ := strings.Cut(before, "/")
	_, idAfter, _ := strings.Cut(after, "/")
	if idBefore == idAfter || idAfter == "" {
		t.Fatalf("the node's state before and after its restart: %q, %q; want other run IDs", before, after)
	}

	// Unused for longer than idle: closed and forgotten. In use: kept.
	now := time.Now()
	pool.mu.Lock()
	pool.now = func() time.Time { return now.Add(2 * time.Hour) }
	pool.mu.Unlock()
	pool.closeIdle(time.Hour)
	if n := pool.Len(); n != 0 {
		t.Fatalf("%d connection sets left open after an idle hour", n)
	}
}

func awaitChange(t *testing.T, changed <-chan string, key, what string) {
	t.Helper()
	for deadline := time.After(20 * time.Second); ; {
		select {
		case k := <-changed:
			if k == key {
				return
			}
		case <-deadline:
			t.Fatalf("the watch did not report the Redis when %s", what)
		}
	}
}

func eventuallyFailed(t *testing.T, c *Conn, addr string) {
	t.Helper()
	eventuallyState(t, c, addr, "failed", func(state string) bool { return Node{Health: state}.Failed() })
}

// eventuallyOnline waits for the node to be online and answer INFO.
func eventuallyOnline(t *testing.T, c *Conn, addr string) {
	t.Helper()
	eventuallyState(t, c, addr, "online", func(state string) bool {
		return strings.HasPrefix(state, "online/") && len(state) > len("online/")
	})
}

func eventuallyState(t *testing.T, c *Conn, addr, what string, ok func(string) bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if ok(c.nodeStates(context.Background(), 2*time.Second)[addr]) {
			return
		}
	}
	t.Fatalf("the cluster never said %s was %s", addr, what)
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return port
}
