package client

import (
	"encoding/json"
	"testing"
)

// FuzzDecode: whatever a stream sends, decode returns an event or an error, never panics, and
// an event it accepts keeps the bytes it came from.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"specversion":"1.0","heraldcursor":"1-0","id":"0:1-0","source":"/s","type":"t","subject":"k","time":"2026-01-02T03:04:05.000Z","data":{"n":1}}`), false)
	f.Add([]byte(`{"heraldcursor":"9-1","id":"0:gap:9-1","type":"dev.herald.gap","data":{"reason":"trimmed","from":"5-0","resume":"9-1","message":"m"}}`), true)
	f.Add([]byte(`{"data_base64":"/wA=","time":"x"}`), false)
	f.Fuzz(func(t *testing.T, data []byte, gap bool) {
		ev, err := decode(data, gap)
		if err != nil {
			return
		}
		if string(ev.Raw) != string(data) || (gap && ev.Gap == nil) || (!gap && ev.Gap != nil) {
			t.Fatalf("decode(%q, %v) = %+v", data, gap, ev)
		}
		if !json.Valid(ev.Raw) {
			t.Fatalf("accepted invalid JSON %q", data)
		}
	})
}
