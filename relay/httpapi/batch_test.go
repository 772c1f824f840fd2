package httpapi

import (
	"reflect"
	"testing"
)

// FuzzEventKeys: a Herald-Event-Keys value is refused, or reads as keys that write back as a
// value that reads the same.
func FuzzEventKeys(f *testing.F) {
	f.Add("k:abc - r:sidecar-0f", 3)
	f.Add("k:a:b  -\tk:", 3)
	f.Add("x:y", 1)
	f.Fuzz(func(t *testing.T, v string, n int) {
		if n < 0 || n > 1000 {
			return
		}
		keys, err := ParseEventKeys(v, n)
		if err != nil {
			return
		}
		var b []byte
		for _, k := range keys {
			if k.Key != "" && ValidIdempotencyKey(k.Key) != nil {
				t.Fatalf("%q gave the invalid key %q", v, k.Key)
			}
			b = AppendEventKey(b, k)
		}
		again, err := ParseEventKeys(string(b), n)
		if err != nil || !reflect.DeepEqual(again, keys) {
			t.Fatalf("%q -> %+v -> %q -> %+v (%v)", v, keys, b, again, err)
		}
	})
}
