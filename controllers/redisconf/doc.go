// Package redisconf is the operator's side of Redis: it reads the topology of a Redis Cluster (or
// a standalone Redis), places each shard of a channel on a master, and makes sure the shard
// streams and the channel's ACL user exist on every node that needs them. Every Ensure call
// reads first and writes only what is missing or different, so a steady-state reconcile sends
// Redis nothing but reads.
package redisconf
