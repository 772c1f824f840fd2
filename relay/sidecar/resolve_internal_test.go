package sidecar

import (
	"context"
	"errors"
	"net"
	"slices"
	"testing"

	"github.com/heraldhq/herald/relay/shardmap"
)

// Replicas come from DNS (the headless Service). Those that failed lately are left out; when
// every one of them refused or was slow, as when a DNS answer still names relays a rollout
// removed, calls go to the shard's Service, which kube-proxy keeps current; a replica that went
// silent is never preferred to one that only refused.
func TestShardBasesLeaveFailedReplicasAndFallBackToTheService(t *testing.T) {
	dns := func(_ context.Context, host string) ([]string, error) {
		if host == "orders-pods-0.shop.svc" {
			return []string{"10.0.0.9", "10.0.0.7"}, nil // DNS shuffles them
		}
		return nil, errors.New("no such host")
	}
	s := &Sidecar{resolver: &resolver{lookupHost: dns}, down: map[string]mark{}}
	sh := shardmap.Shard{Replicas: "http://orders-pods-0.shop.svc:7070", Endpoint: "http://orders-shard-0.shop.svc:7070"}
	ctx := context.Background()
	bases, err := s.shardBases(ctx, sh, false)
	if want := []string{"http://10.0.0.7:7070", "http://10.0.0.9:7070"}; err != nil || !slices.Equal(bases, want) {
		t.Fatalf("with no replica down: %v, %v; want %v, sorted", bases, err, want)
	}
	refused := errors.New("connection refused")
	silent := &net.OpError{Op: "dial", Err: timeoutError{}}
	s.markDown(bases[0], refused)
	if got, _ := s.shardBases(ctx, sh, false); !slices.Equal(got, bases[1:]) {
		t.Fatalf("with %s down: %v; want the other replica", bases[0], got)
	}
	for _, b := range bases {
		s.markDown(b, refused)
	}
	if got, _ := s.shardBases(ctx, sh, false); !slices.Equal(got, []string{sh.Endpoint}) {
		t.Fatalf("with every replica refusing: %v; want the shard's Service %s", got, sh.Endpoint)
	}
	s.markDown(bases[0], silent)
	s.markDown(bases[0], refused) // a refusal does not shorten a silence
	if got, _ := s.shardBases(ctx, sh, false); !slices.Equal(got, bases[1:]) {
		t.Fatalf("with %s silent and the other refusing: %v; want the one that refused", bases[0], got)
	}
	s.markDown(bases[1], silent)
	if got, _ := s.shardBases(ctx, sh, false); !slices.Equal(got, bases) {
		t.Fatalf("with every replica silent: %v; want them all", got)
	}
	// Without a headless Service in the map (an earlier operator), the Service is all there is.
	old := shardmap.Shard{Endpoint: "http://orders-pods-0.shop.svc:7070"}
	if got, _ := s.shardBases(ctx, old, false); !slices.Equal(got, bases) {
		t.Fatalf("a map without replicas: %v", got)
	}
}

type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }
