package upstream

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/relay/cursor"
	"github.com/heraldhq/herald/relay/shardmap"
)

// These tests publish as a channel's ACL user, as a relay in a cluster does, on the Redis Cluster
// `make test` starts. They are about the publish function and the commands the operator grants.

func seeds() []string {
	if a := os.Getenv("HERALD_REDIS_ADDRS"); a != "" {
		return strings.Split(a, ",")
	}
	return []string{"127.0.0.1:7001"}
}

// userWith creates, on every node, a user for a fresh channel allowed the given commands, and
// returns a client logged in as that user and the channel's map (both retention bounds set).
func userWith(t *testing.T, commands []string) (*redis.ClusterClient, *shardmap.Map) {
	t.Helper()
	ctx := context.Background()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	ns, ch := "acl", "c"+hex.EncodeToString(b)
	name, pattern := shardmap.ACLUser(ns, ch), shardmap.KeyPattern(ns, ch)
	admin := redis.NewClusterClient(&redis.ClusterOptions{Addrs: seeds()})
	t.Cleanup(func() { admin.Close() })
	args := []any{"ACL", "SETUSER", name, "reset", "on", ">pw", "~" + pattern, "&" + pattern, "-@all"}
	for _, c := range commands {
		args = append(args, "+"+c)
	}
	err := admin.ForEachShard(ctx, func(ctx context.Context, n *redis.Client) error { return n.Do(ctx, args...).Err() })
	if err != nil {
		t.Fatal(err)
	}
	// As the operator does: the publish function on every master.
	err = admin.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
		return n.FunctionLoadReplace(ctx, shardmap.PublishLibrary).Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = admin.ForEachShard(ctx, func(ctx context.Context, n *redis.Client) error {
			return n.Do(ctx, "ACL", "DELUSER", name).Err()
		})
	})
	m := shardmap.New(ns, ch, shardmap.DeliveryDurable, []string{shardmap.HashTag(ns, ch, 0, 0)})
	m.Retention = shardmap.Retention{MaxLength: 1000, MaxAge: shardmap.Duration{Duration: time.Hour}}
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: seeds(), Username: name, Password: "pw", DisableIdentity: true})
	t.Cleanup(func() {
		admin.Del(ctx, m.Shards[0].Stream)
		c.Close()
	})
	return c, m
}

func TestTheGrantedCommandsPublishWithBothRetentionBounds(t *testing.T) {
	c, m := userWith(t, shardmap.RelayCommands)
	p := NewPublisher(c, m, 0, time.Minute)
	if _, err := p.Publish(context.Background(), PublishRequest{Key: "k", Type: "t", ContentType: "text/plain", Data: []byte("x"), IdempotencyKey: "i1"}); err != nil {
		t.Fatalf("publishing as the channel's user, with maxLength and maxAge: %v", err)
	}
}

func TestAFailureAfterStoringStillRemembersTheIdempotencyKey(t *testing.T) {
	ctx := context.Background()
	// Without SPUBLISH the function fails after XADD: the entry is stored, the announcement is not.
	c, m := userWith(t, slices.DeleteFunc(slices.Clone(shardmap.RelayCommands), func(s string) bool { return s == "spublish" }))
	p := NewPublisher(c, m, 0, time.Minute)
	req := PublishRequest{Key: "k", Type: "t", ContentType: "text/plain", Data: []byte("x"), IdempotencyKey: "retry-me"}
	if _, err := p.Publish(ctx, req); err == nil {
		t.Fatal("the first attempt should fail: the user may not SPUBLISH")
	}
	res, err := p.Publish(ctx, req)
	if err != nil || !res.Duplicate {
		t.Fatalf("a retry must find the stored entry through its Idempotency-Key: %+v, %v", res, err)
	}
	if n, err := c.XLen(ctx, m.Shards[0].Stream).Result(); err != nil || n != 1 {
		t.Fatalf("the stream holds %d entries (err %v); a retry must not store the message again", n, err)
	}
}

// A channel's credentials publish through the function and run no Lua of their own, write no
// other channel's keys and listen to no other channel (every attempt answers NOPERM): what a
// tenant holding its relays' password can do to others is what the function does.
func TestTheChannelUserRunsNoLuaOfItsOwn(t *testing.T) {
	ctx := context.Background()
	c, m := userWith(t, shardmap.RelayCommands)
	if _, err := NewPublisher(c, m, 0, time.Minute).Publish(ctx, PublishRequest{Key: "k", Type: "t", ContentType: "text/plain", Data: []byte("x")}); err != nil {
		t.Fatalf("publishing through the function as the channel's user: %v", err)
	}
	own := m.Shards[0].Stream
	other := shardmap.New("acl", "someone-else", shardmap.DeliveryDurable, []string{shardmap.HashTag("acl", "someone-else", 0, 0)})
	master, err := c.MasterForKey(ctx, own)
	if err != nil {
		t.Fatal(err)
	}
	attempts := map[string][]any{
		"EVAL":                         {"EVAL", "return 1", "1", own},
		"EVALSHA":                      {"EVALSHA", "0000000000000000000000000000000000000000", "1", own},
		"SCRIPT LOAD":                  {"SCRIPT", "LOAD", "return 1"},
		"FUNCTION LOAD":                {"FUNCTION", "LOAD", "REPLACE", "#!lua name=mine\nredis.register_function('mine', function() return 1 end)"},
		"FUNCTION DELETE":              {"FUNCTION", "DELETE", shardmap.PublishLibraryName},
		"XADD to another channel":      {"XADD", other.Shards[0].Stream, "*", "k", "v"},
		"SET on another channel's key": {"SET", shardmap.IdempotencyKey(other.Shards[0].HashTag, "x"), "1"},
		"FLUSHALL":                     {"FLUSHALL"},
		"CONFIG SET":                   {"CONFIG", "SET", "maxmemory", "1"},
	}
	for what, args := range attempts {
		if err := master.Do(ctx, args...).Err(); err == nil || !strings.Contains(err.Error(), "NOPERM") {
			t.Errorf("%s as the channel's user: %v, want NOPERM", what, err)
		}
	}
	ps := master.SSubscribe(ctx, other.Shards[0].LiveChannel)
	defer ps.Close()
	if _, err := ps.ReceiveTimeout(ctx, 2*time.Second); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Errorf("SSUBSCRIBE to another channel's live channel: %v, want NOPERM", err)
	}
}

// maxAge trims by the master's clock (TIME inside the function), not the relay's: a relay whose
// clock runs two days ahead keeps fresh entries.
func TestMaxAgeTrimsByTheMastersClock(t *testing.T) {
	ctx := context.Background()
	c, m := userWith(t, shardmap.RelayCommands)
	p := NewPublisher(c, m, 0, time.Minute)
	p.now = func() time.Time { return time.Now().Add(48 * time.Hour) }
	const n = 300 // three of the stream's radix nodes (100 entries each): approximate trimming removes whole nodes
	for i := range n {
		if _, err := p.Publish(ctx, PublishRequest{Key: "k", Type: "t", ContentType: "text/plain", Data: []byte(strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := c.XLen(ctx, m.Shards[0].Stream).Result(); err != nil || got != n {
		t.Fatalf("the stream holds %d of %d fresh entries (err %v): maxAge trimmed by the relay's clock", got, n, err)
	}
}

// With a history depth the function keeps each key's newest IDs, as the channel's user (the
// granted commands cover LPUSH, LTRIM, EXPIRE and LRANGE), with and without an idempotency key;
// History reads the last N of each key back, oldest first, and a retry indexes nothing twice.
func TestTheHistoryIndexKeepsEachKeysNewestEvents(t *testing.T) {
	ctx := context.Background()
	c, m := userWith(t, shardmap.RelayCommands)
	m.HistoryPerKey = 3
	p := NewPublisher(c, m, 0, time.Minute)
	ids := map[string][]string{}
	for n := range 5 {
		for _, k := range []string{"a", "b"} {
			req := PublishRequest{Key: k, Type: "t", ContentType: "text/plain", Data: []byte(strconv.Itoa(n))}
			if n%2 == 0 {
				req.IdempotencyKey = k + strconv.Itoa(n)
			}
			res, err := p.Publish(ctx, req)
			if err != nil {
				t.Fatalf("publishing with a history index as the channel's user: %v", err)
			}
			ids[k] = append(ids[k], res.ID.String())
			if req.IdempotencyKey != "" { // a retry stores and indexes nothing new
				if again, err := p.Publish(ctx, req); err != nil || !again.Duplicate {
					t.Fatalf("retry: %+v %v", again, err)
				}
			}
		}
	}
	s := &Subscription{cluster: c, shard: m.Shards[0], history: m.HistoryPerKey}
	msgs, err := s.History(ctx, []string{"a", "b", "never"}, 2, cursorOf(t, ids["b"][4]))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, msg := range msgs {
		got = append(got, msg.ID.String())
	}
	want := []string{ids["a"][3], ids["b"][3], ids["a"][4], ids["b"][4]}
	if !slices.Equal(got, want) {
		t.Fatalf("History(a, b, 2) = %q, want %q", got, want)
	}
	// Up to a cursor: what came after it is live, not history; the index holds the newest 3
	// (b2, b3, b4), so of those only b2 is left.
	if msgs, _ = s.History(ctx, []string{"b"}, 3, cursorOf(t, ids["b"][2])); len(msgs) != 1 || msgs[0].ID.String() != ids["b"][2] {
		t.Fatalf("History(b, 3, before %s) = %+v", ids["b"][2], msgs)
	}
	if _, err := s.History(ctx, []string{"a"}, 4, cursorOf(t, ids["b"][4])); err != ErrNoHistory {
		t.Fatalf("deeper than kept: %v, want ErrNoHistory", err)
	}
}

func cursorOf(t *testing.T, s string) cursor.ID {
	t.Helper()
	id, err := cursor.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
