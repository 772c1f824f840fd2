package httpapi

import (
	"fmt"
	"testing"
)

// The bookkeeping of the limiter: replays are given back when the stream goes live, streams
// when it ends, each once, and a caller that holds nothing is forgotten.
func TestLimiterCountsReplaysAndStreams(t *testing.T) {
	l := newLimiter(Limits{SubscribersPerCaller: 3, ReplaysPerCaller: 2})
	a, _, _ := l.admit("a", true, 0)
	b, _, _ := l.admit("a", true, 0)
	if t3, reason, retry := l.admit("a", true, 0); t3 != nil || reason != RefusedReplaysPerCaller || retry < 1 {
		t.Fatalf("a third concurrent replay: %v %q %d", t3, reason, retry)
	}
	a.ReplayDone()
	a.ReplayDone() // twice: counted once
	c, _, _ := l.admit("a", true, 0)
	if c == nil {
		t.Fatal("a replay that went live must give its place back")
	}
	if t4, reason, _ := l.admit("a", false, 0); t4 != nil || reason != RefusedSubscribersPerCaller {
		t.Fatalf("a fourth stream: %v %q", t4, reason)
	}
	for _, tk := range []*ticket{a, b, c, a} {
		tk.Release()
	}
	if !l.all.empty() || len(l.callers) != 0 || len(l.namespaces) != 0 {
		t.Fatalf("after every stream ended: %+v held, callers %v, namespaces %v", l.all, l.callers, l.namespaces)
	}
	var none *ticket
	none.ReplayDone()
	none.Release()
}

// Service accounts of one namespace share its caps: a tenant that spreads its streams, replays
// and interest keys over many accounts is refused once their sum reaches the namespace's, while
// another namespace is not held back.
func TestNamespaceCapsBoundManyServiceAccounts(t *testing.T) {
	l := newLimiter(Limits{SubscribersPerCaller: 2, SubscribersPerNamespace: 5, ReplaysPerNamespace: 3, InterestKeysPerNamespace: 10})
	var held []*ticket
	take := func(caller string, replay bool, keys int) string {
		tk, reason, _ := l.admit(caller, replay, keys)
		if tk != nil {
			held = append(held, tk)
		}
		return reason
	}
	for i := range 5 { // five accounts, one stream each: within every per-caller cap
		if reason := take(fmt.Sprintf("tenant/sa-%d", i), false, 0); reason != "" {
			t.Fatalf("stream %d refused: %s", i, reason)
		}
	}
	if reason := take("tenant/sa-5", false, 0); reason != RefusedSubscribersPerNamespace {
		t.Fatalf("a sixth account's stream: %q, want %s", reason, RefusedSubscribersPerNamespace)
	}
	if reason := take("other/sa", true, 10); reason != "" {
		t.Fatalf("another namespace was refused: %s", reason)
	}
	for _, tk := range held {
		tk.Release()
	}
	held = nil
	for i := range 3 {
		if reason := take(fmt.Sprintf("tenant/sa-%d", i), true, 3); reason != "" {
			t.Fatalf("replay %d refused: %s", i, reason)
		}
	}
	if reason := take("tenant/sa-9", true, 0); reason != RefusedReplaysPerNamespace {
		t.Fatalf("a fourth replay: %q, want %s", reason, RefusedReplaysPerNamespace)
	}
	if reason := take("tenant/sa-9", false, 2); reason != RefusedInterestKeysPerNamespace {
		t.Fatalf("keys past the namespace's: %q, want %s", reason, RefusedInterestKeysPerNamespace)
	}
	for _, tk := range held {
		tk.Release()
	}
	if !l.all.empty() || len(l.callers) != 0 || len(l.namespaces) != 0 {
		t.Fatalf("after every stream ended: %+v held, callers %v, namespaces %v", l.all, l.callers, l.namespaces)
	}
}
