// Package failover proves the shard relay's delivery guarantees while Redis fails under it.
//
// Its tests run a Durable shard relay at about 1,000 publishes per second against a throw-away
// Redis Cluster of their own (started in TestMain on ports HERALD_FAILOVER_BASE_PORT..+5,
// default 7301..7306), break the node that owns the shard's slot in one way per test (CLIENT
// KILL TYPE pubsub, kill -9, SIGSTOP past node-timeout then SIGCONT, slot migration) and then
// count, per subscriber, every message: each one the publisher got a 202 for must arrive exactly
// once and in stream order, except entries Redis itself lost, for which the relay must have
// reported a rollback. Every test restores the cluster to health (replicas in sync) before the
// next one starts. The package holds only tests.
package failover
