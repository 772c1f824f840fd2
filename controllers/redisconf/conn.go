package redisconf

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/relay/shardmap"
)

// Options say how to reach a Redis Cluster or a standalone Redis.
type Options struct {
	Addrs    []string    // seed addresses, host:port
	Username string      // "" means the default user
	Password string      // "" means no AUTH
	TLS      *tls.Config // nil means plain TCP
	// TLSID tells TLS configurations apart in Key: a hash of the CA, server name and client
	// certificate they were built from, so that a renewed certificate gets fresh connections.
	TLSID string
	// MaxNodes caps how many nodes CLUSTER SHARDS may list (a fake cluster must not make the
	// operator dial thousands of addresses); 0 means DefaultMaxNodes.
	MaxNodes int
	// AllowNode, when set, says which node addresses CLUSTER SHARDS may send the operator to.
	AllowNode func(addr string) bool
}

// DefaultMaxNodes is the node cap of Options without one: ten times a large production cluster.
const DefaultMaxNodes = 1000

// Key identifies Options in a cache of connections.
func (o Options) Key() string {
	return fmt.Sprintf("%v|%s|%x|%t|%s", o.Addrs, o.Username, hashPassword(o.Password), o.TLS != nil, o.TLSID)
}

// Conn is an administrative connection. It talks to each node directly, because ACL users are
// per node and must be written to masters and replicas alike.
type Conn struct {
	opts Options

	mu       sync.Mutex
	nodes    map[string]*redis.Client // by address, dialled lazily
	rewrites map[string]string        // requested command rules -> how Redis wrote them down
}

// NewConn returns a connection; nothing is dialled until it is used.
func NewConn(opts Options) *Conn {
	return &Conn{opts: opts, nodes: map[string]*redis.Client{}, rewrites: map[string]string{}}
}

// Close closes every node connection.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, n := range c.nodes {
		errs = append(errs, n.Close())
	}
	c.nodes = map[string]*redis.Client{}
	return errors.Join(errs...)
}

// node returns the client of one address. Timeouts are short: an operator waiting on a dead node
// holds up every channel behind it.
func (c *Conn) node(addr string) *redis.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n, ok := c.nodes[addr]; ok {
		return n
	}
	n := redis.NewClient(&redis.Options{
		Addr:            addr,
		Username:        c.opts.Username,
		Password:        c.opts.Password,
		TLSConfig:       c.opts.TLS,
		DialTimeout:     2 * time.Second,
		ReadTimeout:     3 * time.Second,
		WriteTimeout:    3 * time.Second,
		MaxRetries:      1,
		PoolSize:        4,
		ConnMaxIdleTime: 5 * time.Minute,
		DisableIdentity: true, // CLIENT SETINFO does not exist before Redis 7.2
	})
	c.nodes[addr] = n
	return n
}

// Node is one Redis server of a topology.
type Node struct {
	Addr   string
	Master bool
	// Health is what CLUSTER SHARDS says of it: "online", "loading" (a replica still syncing,
	// which accepts ACL commands already) or "failed" (not dialled: it would only time out).
	Health string
	// OwnsSlots says the node is a master with slots: a failed one holds keys nobody can reach
	// until a replica takes over.
	OwnsSlots bool
}

// Failed says the cluster marked the node as failed: Redis 7.0 says "fail", its documentation
// "failed".
func (n Node) Failed() bool { return n.Health == "fail" || n.Health == "failed" }

// Discover reads the topology and the list of every node, failed and loading ones included,
// from the first seed that answers. Only online masters own slots in the topology.
func (c *Conn) Discover(ctx context.Context) (Topology, []Node, error) {
	var errs []error
	for _, seed := range c.opts.Addrs {
		topo, nodes, err := c.discoverFrom(ctx, seed)
		if err == nil {
			return topo, nodes, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", seed, err))
	}
	return Topology{}, nil, errors.Join(errs...)
}

func (c *Conn) discoverFrom(ctx context.Context, seed string) (Topology, []Node, error) {
	shards, err := c.node(seed).ClusterShards(ctx).Result()
	if err != nil && strings.Contains(err.Error(), "cluster support disabled") {
		if err := c.node(seed).Ping(ctx).Err(); err != nil {
			return Topology{}, nil, err
		}
		return Topology{Masters: []Master{{Addr: seed, Slots: [][2]int{{0, 16383}}}}},
			[]Node{{Addr: seed, Master: true, Health: "online", OwnsSlots: true}}, nil
	}
	if err != nil {
		return Topology{}, nil, err
	}
	topo := Topology{Cluster: true}
	var nodes []Node
	for _, s := range shards {
		for _, n := range s.Nodes {
			host := n.Endpoint
			if host == "" || host == "?" {
				host = n.IP
			}
			// A node that speaks only TLS reports port 0 and its tls-port; one that speaks both is
			// reached on the port that matches how this operator connects.
			port := n.Port
			if n.TLSPort != 0 && (port == 0 || c.opts.TLS != nil) {
				port = n.TLSPort
			}
			addr := host + ":" + strconv.FormatInt(port, 10)
			master := n.Role == "master"
			nodes = append(nodes, Node{Addr: addr, Master: master, Health: n.Health, OwnsSlots: master && len(s.Slots) > 0})
			if master && n.Health == "online" && len(s.Slots) > 0 {
				m := Master{Addr: addr}
				for _, r := range s.Slots {
					m.Slots = append(m.Slots, [2]int{int(r.Start), int(r.End)})
				}
				topo.Masters = append(topo.Masters, m)
			}
		}
	}
	if max := cmp.Or(c.opts.MaxNodes, DefaultMaxNodes); len(nodes) > max {
		return Topology{}, nil, fmt.Errorf("CLUSTER SHARDS lists %d nodes, more than the operator's cap of %d (--max-redis-nodes)", len(nodes), max)
	}
	for _, n := range nodes {
		if c.opts.AllowNode != nil && !c.opts.AllowNode(n.Addr) {
			return Topology{}, nil, fmt.Errorf("CLUSTER SHARDS lists the node %s, which is outside the addresses the operator may dial", n.Addr)
		}
	}
	topo.sort()
	return topo, nodes, nil
}

// EnsureStream creates an empty stream at key on master unless one exists. It reports whether
// it wrote anything.
func (c *Conn) EnsureStream(ctx context.Context, master, key string) (bool, error) {
	n := c.node(master)
	exists, err := n.Exists(ctx, key).Result()
	if err != nil || exists == 1 {
		return false, err
	}
	// An empty stream without a consumer group: create one with MKSTREAM, then drop the group.
	// (XADD + trim would leave a deleted entry behind, which relays would report as a gap.)
	const group = "herald-create"
	if err := n.XGroupCreateMkStream(ctx, key, group, "$").Err(); err != nil && !strings.Contains(err.Error(), "BUSYGROUP") {
		return false, fmt.Errorf("creating stream %s: %w", key, err)
	}
	if err := n.XGroupDestroy(ctx, key, group).Err(); err != nil {
		return true, fmt.Errorf("creating stream %s: %w", key, err)
	}
	return true, nil
}

// Owner reads the channel's owner record (shardmap.OwnerKey) from master; "" when there is none.
func (c *Conn) Owner(ctx context.Context, master, key string) (string, error) {
	v, err := c.node(master).Get(ctx, key).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	return v, err
}

// SetOwner writes the channel's owner record on master.
func (c *Conn) SetOwner(ctx context.Context, master, key, owner string) error {
	return c.node(master).Set(ctx, key, owner, 0).Err()
}

// DeleteKeys removes every key matching pattern from every master (UNLINK one key at a time:
// the keys of a channel live in different slots). It returns how many keys it removed.
func (c *Conn) DeleteKeys(ctx context.Context, nodes []Node, pattern string) (int, error) {
	removed := 0
	for _, nd := range nodes {
		if !nd.Master {
			continue
		}
		if skip, err := unreachableMaster(nd); skip {
			if err != nil {
				return removed, err
			}
			continue
		}
		n := c.node(nd.Addr)
		iter := n.Scan(ctx, 0, pattern, 1000).Iterator()
		for iter.Next(ctx) {
			if err := n.Unlink(ctx, iter.Val()).Err(); err != nil {
				return removed, fmt.Errorf("%s: unlinking %s: %w", nd.Addr, iter.Val(), err)
			}
			removed++
		}
		if err := iter.Err(); err != nil {
			return removed, fmt.Errorf("%s: scanning %s: %w", nd.Addr, pattern, err)
		}
	}
	return removed, nil
}

// RetainedTags finds the streams a channel of this namespace and name left in Redis (deletion
// policy Retain) and returns their hash tags by shard index, so that a re-created channel
// resumes its history instead of starting new streams beside it. SCAN visits every master's
// whole keyspace, so callers ask only while a channel has shards without a tag. When a shard has
// more than one stream, the smallest salt wins (the one placement would have chosen first).
func (c *Conn) RetainedTags(ctx context.Context, nodes []Node, namespace, channel string) (map[int]string, error) {
	prefix := namespace + "/" + channel + "/"
	tags := map[int]string{}
	salts := map[int]int{}
	for _, nd := range nodes {
		if !nd.Master {
			continue
		}
		if skip, err := unreachableMaster(nd); skip {
			if err != nil {
				return nil, err
			}
			continue
		}
		iter := c.node(nd.Addr).ScanType(ctx, 0, shardmap.StreamKey(prefix+"*"), 1000, "stream").Iterator()
		for iter.Next(ctx) {
			tag := strings.TrimSuffix(strings.TrimPrefix(iter.Val(), "herald:{"), "}:stream")
			shard, salt, ok := parseTag(strings.TrimPrefix(tag, prefix))
			if !ok {
				continue
			}
			if old, seen := salts[shard]; !seen || salt < old {
				tags[shard], salts[shard] = tag, salt
			}
		}
		if err := iter.Err(); err != nil {
			return nil, fmt.Errorf("%s: looking for retained streams: %w", nd.Addr, err)
		}
	}
	return tags, nil
}

// unreachableMaster says whether a master must be passed over because the cluster marked it
// failed, with an error when it still owns slots (its keys cannot be reached until a replica
// takes over) and nil when it is an old master left behind by a failover.
func unreachableMaster(nd Node) (bool, error) {
	if !nd.Failed() {
		return false, nil
	}
	if nd.OwnsSlots {
		return true, fmt.Errorf("%s: the master is marked failed and still owns slots: waiting for a replica to take over", nd.Addr)
	}
	return true, nil
}

// parseTag reads "<shard>.<salt>", the part of a hash tag after "<namespace>/<channel>/".
func parseTag(s string) (shard, salt int, ok bool) {
	a, b, found := strings.Cut(s, ".")
	if !found {
		return 0, 0, false
	}
	shard, err1 := strconv.Atoi(a)
	salt, err2 := strconv.Atoi(b)
	return shard, salt, err1 == nil && err2 == nil && shard >= 0 && salt >= 0
}
