package upstream

import (
	"testing"

	"github.com/heraldhq/herald/relay/cursor"
)

func TestDeliveredRing(t *testing.T) {
	r := newDeliveredRing(4)
	if _, ok := r.oldest(); ok || r.contains(cursor.ID{}) {
		t.Fatal("empty ring claims content")
	}
	for i := uint64(1); i <= 6; i++ {
		r.add(cursor.ID{Ms: i * 10})
	}
	tests := map[string]struct {
		id   cursor.ID
		want bool
	}{
		"evicted":     {cursor.ID{Ms: 20}, false},
		"oldest kept": {cursor.ID{Ms: 30}, true},
		"newest":      {cursor.ID{Ms: 60}, true},
		"between":     {cursor.ID{Ms: 45}, false},
		"after":       {cursor.ID{Ms: 70}, false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := r.contains(tc.id); got != tc.want {
				t.Fatalf("contains(%v) = %v", tc.id, got)
			}
		})
	}
	if o, _ := r.oldest(); o.Ms != 30 {
		t.Fatalf("oldest = %v", o)
	}
	r.reset()
	if r.contains(cursor.ID{Ms: 60}) {
		t.Fatal("reset ring still remembers")
	}
}
