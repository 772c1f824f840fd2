package redisconf

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/relay/shardmap"
)

// These tests run against the real Redis Cluster that `make test` starts (hack/redis-cluster.sh).
func seeds() []string {
	if a := os.Getenv("HERALD_REDIS_ADDRS"); a != "" {
		return strings.Split(a, ",")
	}
	return []string{"127.0.0.1:7001"}
}

func unique(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

func TestDiscoverSeesTheCluster(t *testing.T) {
	c := NewConn(Options{Addrs: append([]string{"127.0.0.1:1"}, seeds()...)}) // a dead seed first
	defer c.Close()
	topo, nodes, err := c.Discover(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !topo.Cluster || len(topo.Masters) != 3 || len(nodes) != 6 {
		t.Fatalf("want a cluster of 3 masters and 6 nodes, got %v and %d nodes", topo, len(nodes))
	}
	covered := 0
	for _, m := range topo.Masters {
		for _, r := range m.Slots {
			covered += r[1] - r[0] + 1
		}
	}
	if covered != shardmap.SlotCount {
		t.Fatalf("masters cover %d slots", covered)
	}
}

// TestDiscoverKeepsToItsLimits: a Redis whose CLUSTER SHARDS lists more nodes than the cap, or a
// node outside the addresses the operator may dial, is refused before any of them is dialled.
func TestDiscoverKeepsToItsLimits(t *testing.T) {
	ctx := context.Background()
	capped := NewConn(Options{Addrs: seeds(), MaxNodes: 5})
	defer capped.Close()
	if _, _, err := capped.Discover(ctx); err == nil || !strings.Contains(err.Error(), "more than the operator's cap of 5") {
		t.Fatalf("6 nodes with a cap of 5: %v", err)
	}
	host, port, _ := net.SplitHostPort(seeds()[0])
	first, _ := strconv.Atoi(port)
	outside := net.JoinHostPort(host, strconv.Itoa(first+5)) // the sixth node
	fenced := NewConn(Options{Addrs: seeds(), AllowNode: func(a string) bool { return a != outside }})
	defer fenced.Close()
	if _, _, err := fenced.Discover(ctx); err == nil || !strings.Contains(err.Error(), outside) {
		t.Fatalf("a node outside the allowed addresses: %v", err)
	}
	if n := len(fenced.nodes); n != 1 {
		t.Fatalf("%d nodes dialled, want only the seed", n)
	}
}

func TestUserIsolationStreamsAndCleanup(t *testing.T) {
	ctx := context.Background()
	admin := NewConn(Options{Addrs: seeds()})
	defer admin.Close()
	topo, nodes, err := admin.Discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ns := unique("ns")
	mine, other := unique("orders"), unique("billing")
	tags, err := Place(ns, mine, make([]string, 3), topo)
	if err != nil {
		t.Fatal(err)
	}
	otherTags, err := Place(ns, other, make([]string, 1), topo)
	if err != nil {
		t.Fatal(err)
	}
	user := User{Name: shardmap.ACLUser(ns, mine), Password: "s3cret", KeyPattern: shardmap.KeyPattern(ns, mine),
		Commands: shardmap.RelayCommands}
	defer admin.DeleteUser(ctx, nodes, user.Name) //nolint:errcheck // cleanup of a test user

	written, lagging := admin.EnsureUser(ctx, nodes, user)
	if len(lagging) != 0 {
		t.Fatal(lagging)
	}
	if len(written) != 6 {
		t.Fatalf("the user was written to %d nodes, want all 6", len(written))
	}
	if written, lagging = admin.EnsureUser(ctx, nodes, user); len(lagging) != 0 || len(written) != 0 {
		t.Fatalf("a second EnsureUser must write nothing: wrote %v, lagging %v", written, lagging)
	}

	for _, tag := range tags {
		m, _ := topo.Owner(shardmap.Slot(tag))
		created, err := admin.EnsureStream(ctx, m.Addr, shardmap.StreamKey(tag))
		if err != nil || !created {
			t.Fatalf("creating stream of %s: created=%v err=%v", tag, created, err)
		}
		if created, err = admin.EnsureStream(ctx, m.Addr, shardmap.StreamKey(tag)); err != nil || created {
			t.Fatalf("a second EnsureStream must write nothing: created=%v err=%v", created, err)
		}
	}

	relay := redis.NewClusterClient(&redis.ClusterOptions{Addrs: seeds(), Username: user.Name, Password: user.Password,
		DisableIdentity: true})
	defer relay.Close()
	if err := relay.XAdd(ctx, &redis.XAddArgs{Stream: shardmap.StreamKey(tags[0]), Values: []any{"m", "1"}}).Err(); err != nil {
		t.Fatalf("the channel's own user cannot XADD to its stream: %v", err)
	}
	if err := relay.SPublish(ctx, shardmap.LiveChannel(tags[0]), "x").Err(); err != nil {
		t.Fatalf("the channel's own user cannot SPUBLISH on its live channel: %v", err)
	}
	err = relay.XAdd(ctx, &redis.XAddArgs{Stream: shardmap.StreamKey(otherTags[0]), Values: []any{"m", "1"}}).Err()
	if err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Fatalf("XADD to another channel's stream: want NOPERM, got %v", err)
	}
	err = relay.SPublish(ctx, shardmap.LiveChannel(otherTags[0]), "x").Err()
	if err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Fatalf("SPUBLISH on another channel's live channel: want NOPERM, got %v", err)
	}
	if err := relay.Do(ctx, "FLUSHALL").Err(); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Fatalf("FLUSHALL: want NOPERM, got %v", err)
	}

	// A changed password is noticed and rewritten everywhere.
	user.Password = "rotated"
	if written, lagging = admin.EnsureUser(ctx, nodes, user); len(lagging) != 0 || len(written) != 6 {
		t.Fatalf("a changed user must be rewritten on all nodes: wrote %v, lagging %v", written, lagging)
	}

	removed, err := admin.DeleteKeys(ctx, nodes, user.KeyPattern)
	if err != nil || removed != 3 {
		t.Fatalf("DeleteKeys removed %d keys (err %v), want the 3 streams", removed, err)
	}
	if err := admin.DeleteUser(ctx, nodes, user.Name); err != nil {
		t.Fatal(err)
	}
	for _, nd := range nodes {
		if err := admin.node(nd.Addr).Do(ctx, "ACL", "GETUSER", user.Name).Err(); err != redis.Nil {
			t.Fatalf("%s still has the user (err %v)", nd.Addr, err)
		}
	}
}
