package shardmap

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestSlot(t *testing.T) {
	// Expected values from the Redis cluster spec and CLUSTER KEYSLOT.
	tests := map[string]struct {
		key  string
		want int
	}{
		"plain key":                {key: "foo", want: 12182},
		"another plain key":        {key: "hello", want: 866},
		"tag decides":              {key: "{user1000}.following", want: Slot("user1000")},
		"empty tag hashes the key": {key: "foo{}{bar}", want: int(crc16("foo{}{bar}")) % SlotCount},
		"first tag only":           {key: "foo{{bar}}zap", want: Slot("{bar")},
		"crc16 check value":        {key: "123456789", want: 0x31C3 % SlotCount},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := Slot(tc.key); got != tc.want {
				t.Fatalf("Slot(%q) = %d, want %d", tc.key, got, tc.want)
			}
		})
	}
}

func TestStreamAndLiveChannelShareSlot(t *testing.T) {
	for salt := range 50 {
		tag := HashTag("team-a", "orders", 3, salt)
		if Slot(StreamKey(tag)) != Slot(LiveChannel(tag)) || Slot(StreamKey(tag)) != Slot(IdempotencyKey(tag, "x")) {
			t.Fatalf("tag %q: stream, live channel and idempotency key are in different slots", tag)
		}
	}
}

func TestKeyPatternCoversOnlyItsChannel(t *testing.T) {
	pat := KeyPattern("ns", "orders")
	mine := StreamKey(HashTag("ns", "orders", 0, 7))
	other := StreamKey(HashTag("ns", "orders-eu", 0, 7))
	if mine[:len(pat)-1] != pat[:len(pat)-1] {
		t.Fatalf("pattern %q does not cover %q", pat, mine)
	}
	if other[:len(pat)-1] == pat[:len(pat)-1] {
		t.Fatalf("pattern %q also covers another channel's key %q", pat, other)
	}
}

func TestShardForIsStableAndSpreads(t *testing.T) {
	counts := make([]int, 4)
	for i := range 4000 {
		key := "user-" + string(rune('a'+i%26)) + string(rune(i))
		s := ShardFor(key, 4)
		if s != ShardFor(key, 4) {
			t.Fatalf("ShardFor(%q) is not stable", key)
		}
		counts[s]++
	}
	for i, c := range counts {
		if c < 700 {
			t.Fatalf("shard %d got %d of 4000 keys: %v", i, c, counts)
		}
	}
	if ShardFor("anything", 1) != 0 || ShardFor("anything", 0) != 0 {
		t.Fatal("a single shard must take every key")
	}
	// The hash is part of the contract between operator, relays and sidecars.
	if got := ShardFor("order-42", 8); got != 4 {
		t.Fatalf("ShardFor(order-42, 8) = %d; changing the hash moves keys between shards", got)
	}
}

func TestMapRoundTripAndValidate(t *testing.T) {
	m := New("ns", "orders", DeliveryDurable, []string{HashTag("ns", "orders", 0, 1), HashTag("ns", "orders", 1, 4)})
	m.Retention = Retention{MaxLength: 1000, MaxAge: Duration{24 * time.Hour}}
	m.MaxMessageBytes = 65536
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var back Map
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if err := back.Validate(); err != nil {
		t.Fatal(err)
	}
	if back.Retention.MaxAge.Duration != 24*time.Hour || back.Shards[1].Endpoint != "http://orders-shard-1.ns.svc:7070" ||
		back.Shards[1].Replicas != "http://orders-pods-1.ns.svc:7070" {
		t.Fatalf("round trip lost data: %s", b)
	}
	back.Shards[1].Index = 5
	if back.Validate() == nil {
		t.Fatal("a map with a misnumbered shard must be invalid")
	}
}

// A map written by an operator from before Shard.Replicas still parses; sidecars then reach the
// shard through Endpoint.
func TestMapWithoutReplicasParses(t *testing.T) {
	old := `{"namespace":"ns","channel":"orders","delivery":"Live","maxMessageBytes":1024,"shards":[
		{"index":0,"hashTag":"ns/orders/0.1","stream":"","liveChannel":"herald:{ns/orders/0.1}:live","endpoint":"http://orders-shard-0.ns.svc:7070"}]}`
	m, err := Parse([]byte(old))
	if err != nil {
		t.Fatal(err)
	}
	if m.Shards[0].Replicas != "" || m.Shards[0].Endpoint != "http://orders-shard-0.ns.svc:7070" {
		t.Fatalf("shard 0 is %+v", m.Shards[0])
	}
	if b, _ := json.Marshal(m); strings.Contains(string(b), "replicas") {
		t.Fatalf("an empty Replicas is written: %s", b)
	}
}

// Every Service name of the longest channel name the API admits (54 characters) and the last
// shard is a DNS label (at most 63 characters), and no two of them are the same.
func TestServiceNamesFitTheLongestChannel(t *testing.T) {
	name := strings.Repeat("a", 54)
	seen := map[string]bool{ChannelServiceName(name): true}
	for i := range MaxShards {
		for _, n := range []string{ShardServiceName(name, i), ShardReplicasServiceName(name, i)} {
			if len(n) > 63 {
				t.Errorf("Service name %s has %d characters, more than a DNS label's 63", n, len(n))
			}
			if seen[n] {
				t.Errorf("Service name %s is used twice", n)
			}
			seen[n] = true
		}
	}
}
