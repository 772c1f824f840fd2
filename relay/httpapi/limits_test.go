package httpapi

import "testing"

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
	if l.total != 0 || len(l.callers) != 0 {
		t.Fatalf("after every stream ended: total %d, callers %v", l.total, l.callers)
	}
	var none *ticket
	none.ReplayDone()
	none.Release()
}
