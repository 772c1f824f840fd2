package shardmap

import (
	"encoding/json"
	"testing"
)

// FuzzParse: sidecars read shard maps from the network, so any bytes must give a map or an
// error, and a map that validates must survive a round trip unchanged.
func FuzzParse(f *testing.F) {
	good, _ := json.Marshal(New("ns", "orders", DeliveryDurable, []string{HashTag("ns", "orders", 0, 0)}))
	f.Add(good)
	f.Add([]byte(`{"namespace":"a","channel":"b","delivery":"Live","shards":[{"index":0,"hashTag":"t","liveChannel":"c"}]}`))
	f.Add([]byte(`{"retention":{"maxAge":"-1h"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			return
		}
		again, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("a valid map does not marshal: %v", err)
		}
		m2, err := Parse(again)
		if err != nil {
			t.Fatalf("a valid map does not parse again: %v\n%s", err, again)
		}
		if m2.ShardFor("k") != m.ShardFor("k") || len(m2.Shards) != len(m.Shards) {
			t.Fatalf("round trip changed the map: %s", again)
		}
	})
}
