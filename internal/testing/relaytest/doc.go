// Package relaytest holds what the relay's tests share: starting a shard relay on loopback
// against a real Redis Cluster, an SSE client that reads frames as a browser would, publishing
// helpers, and throw-away Redis Clusters (started with hack/redis-cluster.sh on their own ports)
// for tests that kill, pause or reshard nodes. It is internal and used by tests only.
package relaytest
