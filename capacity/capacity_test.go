package capacity

import (
	"math"
	"testing"
)

func TestMake(t *testing.T) {
	for name, tc := range map[string]struct {
		load                      Load
		cores                     float64 // relay cores, all pods
		shards, replicas, masters int
		podMiB                    float64 // memory of one pod, MiB (rounded)
	}{
		// make bench (a), full size: 1,000 subscribers all following 1,000 msgs/s. Measured:
		// 0.69-0.73 relay cores (0.69-0.73 CPU s per 1M deliveries).
		"bench (a) 1000 x 1000": {load: Load{Subscribers: 1000, Rate: 1000, Fanout: 1000},
			cores: 0.735, shards: 1, replicas: 2, masters: 1, podMiB: 56},
		// make bench (a), scaled down: measured 0.56 cores (5.56 CPU s per 1M deliveries).
		"bench (a) 1000 x 100": {load: Load{Subscribers: 1000, Rate: 100, Fanout: 1000},
			cores: 0.5595, shards: 1, replicas: 2, masters: 1, podMiB: 56},
		// The example: a million users, each following their own key, 10,000 msgs/s.
		// Streams, not CPU, decide: 100 relays of 10,000 subscribers.
		"1M users x 10k msgs/s": {load: Load{Subscribers: 1_000_000, Rate: 10_000, Fanout: 1},
			cores: 0.905, shards: 13, replicas: 8, masters: 1, podMiB: 86},
		// The same users in groups of 100, on WebSocket: deliveries decide.
		"1M users in groups x 10k msgs/s, WebSocket": {load: Load{Subscribers: 1_000_000, Rate: 10_000, Fanout: 100, WebSocketShare: 1},
			cores: 6.36, shards: 13, replicas: 8, masters: 1, podMiB: 86},
		// Publish-heavy: Redis masters decide the shards.
		"50k msgs/s to few subscribers": {load: Load{Subscribers: 1000, Rate: 50_000, Fanout: 1},
			cores: 4.56, shards: 4, replicas: 2, masters: 4, podMiB: 54},
	} {
		t.Run(name, func(t *testing.T) {
			p, err := Make(tc.load, Reference)
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(p.RelayCores-tc.cores) > 0.01*tc.cores || p.Shards != tc.shards || p.Replicas != tc.replicas ||
				p.RedisMasters != tc.masters || p.RelayPods != p.Shards*p.Replicas || math.Round(p.PodMemory/(1<<20)) != tc.podMiB {
				t.Fatalf("plan %+v (pod %.0f MiB), want %.3f cores, %d shards x %d replicas, %d masters, %.0f MiB", p, p.PodMemory/(1<<20),
					tc.cores, tc.shards, tc.replicas, tc.masters, tc.podMiB)
			}
			if float64(p.RelayPods)*p.PodCores < p.RelayCores {
				t.Fatalf("%d pods of %.1f cores cannot carry %.2f cores", p.RelayPods, p.PodCores, p.RelayCores)
			}
		})
	}
}

func TestMakeRefusesImpossibleLoads(t *testing.T) {
	for _, l := range []Load{{Subscribers: -1}, {Subscribers: 10, Fanout: 11}, {Subscribers: 10, WebSocketShare: 2}} {
		if _, err := Make(l, Reference); err == nil {
			t.Fatalf("Make(%+v) accepted it", l)
		}
	}
}
