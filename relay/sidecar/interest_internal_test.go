package sidecar

import (
	"strconv"
	"testing"
)

// An interest comment from the network is either not one, or reads as a sequence number and
// a cursor that write back to the same comment.
func FuzzInterestComment(f *testing.F) {
	for _, seed := range []string{"interest 1 1-0", "interest 18446744073709551615 1796163194967-12", "interest 1", "interest x 1-0", "interest 1 1-0 extra", "stream abc", "heartbeat"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, comment string) {
		seq, at, ok := parseInterestComment(comment)
		if !ok {
			return
		}
		again := "interest " + strconv.FormatUint(seq, 10) + " " + at.String()
		seq2, at2, ok := parseInterestComment(again)
		if !ok || seq2 != seq || at2 != at {
			t.Fatalf("%q read as %d %v; written back as %q it reads as %d %v %v", comment, seq, at, again, seq2, at2, ok)
		}
	})
}
