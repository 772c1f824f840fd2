package relaytest

import (
	"bufio"
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald/internal/testing/rediscluster"
	"github.com/redis/go-redis/v9"
)

// Cluster is a throw-away Redis Cluster (3 masters, 3 replicas) on ports Base..Base+5, started
// by hack/redis-cluster.sh in its own directory. Tests that kill, pause or reshard nodes use one
// of these, never the shared cluster other packages test against. The embedded Cluster starts,
// stops, signals and restarts nodes; the methods here ask the cluster about itself.
type Cluster struct {
	*rediscluster.Cluster
}

// StartCluster runs `hack/redis-cluster.sh up` with REDIS_CLUSTER_BASE_PORT=base and
// REDIS_CLUSTER_DIR=dir; the script waits until the cluster is healthy.
func StartCluster(base int, dir string) (*Cluster, error) {
	c, err := rediscluster.Start(base, dir)
	if err != nil {
		return nil, err
	}
	return &Cluster{c}, nil
}

func (c *Cluster) node(port int) *redis.Client {
	// Admin commands like CLUSTER SETSLOT fsync nodes.conf: on a busy disk that takes seconds.
	// Probes of a paused node bound themselves with their context (MasterOf, WaitHealthy).
	return redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(port), DialTimeout: time.Second, ReadTimeout: 5 * time.Second, MaxRetries: -1})
}

// Do runs a command on one node.
func (c *Cluster) Do(ctx context.Context, port int, args ...any) (any, error) {
	n := c.node(port)
	defer n.Close()
	return n.Do(ctx, args...).Result()
}

// MasterOf returns the port of the node that every reachable node agrees owns slot. Each node
// gets its own short deadline, so a paused node (SIGSTOP accepts connections but never answers)
// costs half a second instead of the caller's whole deadline.
func (c *Cluster) MasterOf(ctx context.Context, slot int) (int, error) {
	owner := 0
	for _, p := range c.Ports() {
		n := c.node(p)
		nctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		slots, err := n.ClusterSlots(nctx).Result()
		cancel()
		n.Close()
		if err != nil {
			continue
		}
		for _, s := range slots {
			if slot >= int(s.Start) && slot <= int(s.End) && len(s.Nodes) > 0 {
				port, _ := strconv.Atoi(s.Nodes[0].Addr[strings.LastIndexByte(s.Nodes[0].Addr, ':')+1:])
				if owner != 0 && owner != port {
					return 0, fmt.Errorf("nodes disagree on the owner of slot %d: %d and %d", slot, owner, port)
				}
				owner = port
			}
		}
	}
	if owner == 0 {
		return 0, fmt.Errorf("no node claims slot %d", slot)
	}
	return owner, nil
}

// Healthy reports nil when every node answers, says cluster_state:ok, knows no failing node,
// and every replica's link is up and synced: the state in which killing a master is safe
// (REDIS-NOTES.md: a replica that has not synced can take the whole cluster down).
func (c *Cluster) Healthy(ctx context.Context) error {
	replicas := 0
	for _, p := range c.Ports() {
		n := c.node(p)
		info, err := n.ClusterInfo(ctx).Result()
		if err != nil {
			n.Close()
			return fmt.Errorf("node %d: %w", p, err)
		}
		if !strings.Contains(info, "cluster_state:ok") {
			n.Close()
			return fmt.Errorf("node %d: cluster_state is not ok", p)
		}
		nodes, err := n.ClusterNodes(ctx).Result()
		if err == nil && (strings.Contains(nodes, "fail") || strings.Contains(nodes, "handshake")) {
			err = fmt.Errorf("node %d still sees a failing node", p)
		}
		if err != nil {
			n.Close()
			return err
		}
		repl, err := n.Info(ctx, "replication").Result()
		n.Close()
		if err != nil {
			return err
		}
		if field(repl, "role") == "slave" {
			if field(repl, "master_link_status") != "up" || field(repl, "master_sync_in_progress") != "0" {
				return fmt.Errorf("replica %d is not in sync", p)
			}
			replicas++
		}
	}
	if replicas != 3 {
		return fmt.Errorf("%d replicas in sync, want 3", replicas)
	}
	return nil
}

// WaitHealthy polls Healthy until it holds or within passes.
func (c *Cluster) WaitHealthy(within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := c.Healthy(ctx)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster not healthy after %v: %w", within, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func field(info, name string) string {
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), name+":"); ok {
			return v
		}
	}
	return ""
}

// NodeID is the cluster node ID of the node on port.
func (c *Cluster) NodeID(ctx context.Context, port int) (string, error) {
	v, err := c.Do(ctx, port, "CLUSTER", "MYID")
	if err != nil {
		return "", err
	}
	s, _ := v.(string)
	return s, nil
}

// MigrateSlot moves slot from the master on port src to the master on port dst the way
// redis-cli --cluster reshard does: IMPORTING/MIGRATING, MIGRATE every key, then SETSLOT NODE
// on both and on every other master.
func (c *Cluster) MigrateSlot(ctx context.Context, slot, src, dst int) error {
	srcID, err := c.NodeID(ctx, src)
	if err != nil {
		return err
	}
	dstID, err := c.NodeID(ctx, dst)
	if err != nil {
		return err
	}
	if _, err := c.Do(ctx, dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", srcID); err != nil {
		return fmt.Errorf("IMPORTING: %w", err)
	}
	if _, err := c.Do(ctx, src, "CLUSTER", "SETSLOT", slot, "MIGRATING", dstID); err != nil {
		return fmt.Errorf("MIGRATING: %w", err)
	}
	for {
		v, err := c.Do(ctx, src, "CLUSTER", "GETKEYSINSLOT", slot, 100)
		if err != nil {
			return err
		}
		keys, _ := v.([]any)
		if len(keys) == 0 {
			break
		}
		args := []any{"MIGRATE", "127.0.0.1", dst, "", 0, 5000, "KEYS"}
		args = append(args, keys...)
		if _, err := c.Do(ctx, src, args...); err != nil {
			return fmt.Errorf("MIGRATE: %w", err)
		}
	}
	for _, p := range []int{dst, src} {
		if _, err := c.Do(ctx, p, "CLUSTER", "SETSLOT", slot, "NODE", dstID); err != nil {
			return fmt.Errorf("SETSLOT NODE on %d: %w", p, err)
		}
	}
	for _, p := range c.Ports() {
		if p != src && p != dst {
			_, _ = c.Do(ctx, p, "CLUSTER", "SETSLOT", slot, "NODE", dstID) // replicas refuse; masters learn it now instead of by gossip
		}
	}
	return nil
}

// Masters are the ports of the nodes that are masters now.
func (c *Cluster) Masters(ctx context.Context) []int {
	var ms []int
	for _, p := range c.Ports() {
		n := c.node(p)
		repl, err := n.Info(ctx, "replication").Result()
		n.Close()
		if err == nil && field(repl, "role") == "master" {
			ms = append(ms, p)
		}
	}
	return ms
}
