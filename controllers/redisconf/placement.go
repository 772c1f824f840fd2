package redisconf

import (
	"fmt"

	"github.com/heraldhq/herald/relay/shardmap"
)

// maxSalt bounds the search for a tag on a master. A master owning a third of the slots is found
// in about three tries; one owning a single slot in about 16,384.
const maxSalt = 1 << 20

// Place returns one hash tag per shard. Tags already chosen (known[i] != "") are kept as they
// are: moving a shard would orphan its stream. New tags go to the master holding the fewest
// shards, so the masters' shard counts differ by at most one when all shards are placed at once.
func Place(namespace, channel string, known []string, topo Topology) ([]string, error) {
	tags := append([]string(nil), known...)
	if !topo.Cluster {
		for i, t := range tags {
			if t == "" {
				tags[i] = shardmap.HashTag(namespace, channel, i, 0)
			}
		}
		return tags, nil
	}
	if len(topo.Masters) == 0 {
		return nil, fmt.Errorf("the cluster has no master owning slots")
	}
	load := make(map[string]int, len(topo.Masters))
	for _, t := range tags {
		if t == "" {
			continue
		}
		if m, ok := topo.Owner(shardmap.Slot(t)); ok {
			load[m.Addr]++
		}
	}
	for i, t := range tags {
		if t != "" {
			continue
		}
		target := topo.Masters[0]
		for _, m := range topo.Masters[1:] {
			if load[m.Addr] < load[target.Addr] {
				target = m
			}
		}
		tag, err := tagOn(namespace, channel, i, target, topo)
		if err != nil {
			return nil, err
		}
		tags[i] = tag
		load[target.Addr]++
	}
	return tags, nil
}

// tagOn finds the first salt whose tag hashes to a slot owned by m.
func tagOn(namespace, channel string, shard int, m Master, topo Topology) (string, error) {
	for salt := 0; salt < maxSalt; salt++ {
		tag := shardmap.HashTag(namespace, channel, shard, salt)
		if owner, ok := topo.Owner(shardmap.Slot(tag)); ok && owner.Addr == m.Addr {
			return tag, nil
		}
	}
	return "", fmt.Errorf("no hash tag for shard %d hashes to a slot of master %s", shard, m.Addr)
}
