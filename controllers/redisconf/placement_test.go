package redisconf

import (
	"testing"

	"github.com/heraldhq/herald/relay/shardmap"
)

func threeMasters() Topology {
	return Topology{Cluster: true, Masters: []Master{
		{Addr: "a:1", Slots: [][2]int{{0, 5460}}},
		{Addr: "b:1", Slots: [][2]int{{5461, 10922}}},
		{Addr: "c:1", Slots: [][2]int{{10923, 16383}}},
	}}
}

func TestPlace(t *testing.T) {
	tests := map[string]struct {
		shards   int
		known    map[int]string
		topo     Topology
		wantLoad map[string]int
	}{
		"one shard per master":     {shards: 3, topo: threeMasters(), wantLoad: map[string]int{"a:1": 1, "b:1": 1, "c:1": 1}},
		"seven shards on three":    {shards: 7, topo: threeMasters(), wantLoad: map[string]int{"a:1": 3, "b:1": 2, "c:1": 2}},
		"more masters than shards": {shards: 2, topo: threeMasters(), wantLoad: map[string]int{"a:1": 1, "b:1": 1}},
		"known tags are kept and counted": {shards: 3, topo: threeMasters(),
			known:    map[int]string{1: shardmap.HashTag("ns", "ch", 1, 0)},
			wantLoad: nil},
		"single-slot master": {shards: 2, topo: Topology{Cluster: true, Masters: []Master{
			{Addr: "a:1", Slots: [][2]int{{0, 16382}}}, {Addr: "b:1", Slots: [][2]int{{16383, 16383}}}}},
			wantLoad: map[string]int{"a:1": 1, "b:1": 1}},
		"standalone": {shards: 4, topo: Topology{Masters: []Master{{Addr: "r:1", Slots: [][2]int{{0, 16383}}}}},
			wantLoad: map[string]int{"r:1": 4}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			known := make([]string, tc.shards)
			for i, tag := range tc.known {
				known[i] = tag
			}
			tags, err := Place("ns", "ch", known, tc.topo)
			if err != nil {
				t.Fatal(err)
			}
			load := map[string]int{}
			seen := map[string]bool{}
			for i, tag := range tags {
				if tc.known[i] != "" && tag != tc.known[i] {
					t.Fatalf("shard %d moved from %q to %q", i, tc.known[i], tag)
				}
				if seen[tag] {
					t.Fatalf("tag %q used twice", tag)
				}
				seen[tag] = true
				m, ok := tc.topo.Owner(shardmap.Slot(tag))
				if !ok {
					t.Fatalf("tag %q hashes to an unowned slot", tag)
				}
				load[m.Addr]++
			}
			if tc.wantLoad != nil {
				for addr, n := range tc.wantLoad {
					if load[addr] != n {
						t.Fatalf("load %v, want %v", load, tc.wantLoad)
					}
				}
			}
			again, err := Place("ns", "ch", tags, tc.topo)
			if err != nil || len(again) != len(tags) {
				t.Fatal(err)
			}
			for i := range tags {
				if again[i] != tags[i] {
					t.Fatalf("placing again changed shard %d: %q -> %q", i, tags[i], again[i])
				}
			}
		})
	}
}

func TestPlaceWithoutMasters(t *testing.T) {
	if _, err := Place("ns", "ch", make([]string, 1), Topology{Cluster: true}); err == nil {
		t.Fatal("want an error when no master owns slots")
	}
}
