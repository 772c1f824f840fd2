package sidecar

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/heraldhq/herald/relay/shardmap"
)

// Replicas come from DNS (the headless Service); when every one of them failed lately, as when
// a DNS answer still names relays a rollout removed, calls go to the shard's Service, which
// kube-proxy keeps current; otherwise the failed ones are left out.
func TestEveryReplicaDownFallsBackToTheService(t *testing.T) {
	s := &Sidecar{resolver: &resolver{}}
	sh := shardmap.Shard{Replicas: "http://localhost:7070", Endpoint: "http://orders-shard-0.shop.svc:7070"}
	ctx := context.Background()
	bases, err := s.shardBases(ctx, sh, false)
	if err != nil || len(bases) == 0 || slices.Contains(bases, sh.Endpoint) {
		t.Fatalf("with no replica down: %v, %v; want localhost's addresses", bases, err)
	}
	refused := errors.New("connection refused")
	s.markDown(bases[0], refused)
	if got, _ := s.shardBases(ctx, sh, false); len(bases) > 1 && (slices.Contains(got, bases[0]) || slices.Contains(got, sh.Endpoint)) {
		t.Fatalf("with %s down: %v; want the other replicas", bases[0], got)
	}
	for _, b := range bases {
		s.markDown(b, refused)
	}
	if got, _ := s.shardBases(ctx, sh, false); !slices.Equal(got, []string{sh.Endpoint}) {
		t.Fatalf("with every replica down: %v; want the shard's Service %s", got, sh.Endpoint)
	}
	// Without a headless Service in the map (an earlier operator), the Service is all there is.
	old := shardmap.Shard{Endpoint: "http://localhost:7070"}
	if got, _ := s.shardBases(ctx, old, false); slices.Contains(got, sh.Endpoint) || len(got) == 0 {
		t.Fatalf("a map without replicas: %v", got)
	}
}
