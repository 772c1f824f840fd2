package upstream

import (
	"context"
	"strconv"
	"sync"
	"testing"

	"github.com/heraldhq/herald/relay/shardmap"
)

// TestAutoPipelineCoalescesConcurrentPublishes: 400 concurrent publishes as a channel's user go
// out in fewer round trips than publishes, each gets its own ID in the stream, and an
// Idempotency-Key sent twice in one pipeline still stores once.
func TestAutoPipelineCoalescesConcurrentPublishes(t *testing.T) {
	cluster, m := userWith(t, shardmap.RelayCommands)
	p := NewPublisher(cluster, m, 0, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p.AutoPipeline(ctx)

	const n = 400
	ids := make([]string, n)
	dups := make([]bool, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := PublishRequest{Key: "k", Type: "t", ContentType: "text/plain", Data: []byte(strconv.Itoa(i))}
			if i >= n-2 { // the last two: the same message with the same key
				req.Data, req.IdempotencyKey = []byte("same"), "idem-1"
			}
			res, err := p.Publish(ctx, req)
			if err != nil {
				t.Errorf("publish %d: %v", i, err)
				return
			}
			ids[i], dups[i] = res.ID.String(), res.Duplicate
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if r := p.pipe.rounds.Load(); r >= n {
		t.Fatalf("%d publishes took %d round trips: nothing was coalesced", n, r)
	} else {
		t.Logf("%d publishes in %d round trips", n, r)
	}
	if ids[n-1] != ids[n-2] || dups[n-1] == dups[n-2] {
		t.Fatalf("the key sent twice: %s (duplicate %v) and %s (duplicate %v); want one ID, one duplicate", ids[n-2], dups[n-2], ids[n-1], dups[n-1])
	}
	entries, err := cluster.XLen(ctx, m.Shards[0].Stream).Result()
	if err != nil || entries != n-1 {
		t.Fatalf("the stream holds %d entries (%v), want %d", entries, err, n-1)
	}
	seen := map[string]bool{}
	for _, id := range ids[:n-1] {
		if seen[id] {
			t.Fatalf("ID %s given twice", id)
		}
		seen[id] = true
	}
}
