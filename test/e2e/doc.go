// Package e2e tests the whole system as real processes, the way `make dev` runs it: the envtest
// control plane, a Redis Cluster of its own (hack/redis-cluster.sh on ports 7901-7906, or
// $HERALD_E2E_REDIS_BASE_PORT), the manager as a process of bin/herald and the relay runner of
// hack/localstack, which runs the operator's relay Deployments as local processes.
//
// The tests carry the build tag e2e and run with `make test-e2e` (CI runs it after `make test`):
//
//	make build && go test -tags e2e -count=1 -v ./test/e2e/
//
// TestDurableChannel applies a 3-shard Durable channel (Ready, shards on distinct masters,
// shard relays refusing callers without a token or from another namespace), then publishes
// 10,000 keyed messages through one app sidecar while 50 subscribers (whole-channel and
// per-key, SSE and WebSocket) listen through two sidecars. During the load it kills the Redis
// master of shard 0 and the relay replica of shard 1 that serves the sidecars, both with
// SIGKILL, and cuts 10 subscribers' connections (they resume with Last-Event-ID). Every
// subscriber must get every acknowledged message exactly once and in per-shard order; entries
// Redis itself lost must be reported by the relay as rollback gaps, and are counted. Then it
// deletes the channel (deletionPolicy Delete) and checks that its keys and ACL users are gone
// from every node and its relays stopped.
//
// TestRedisOverMutualTLS starts a second stack whose Redis Cluster speaks only TLS and wants
// client certificates (the six ports after the first stack's), with the manager given its CA and
// a client certificate. A channel on the default Redis and one with spec.redis.tls Secrets of
// its own must each become Ready and deliver a message through a shard relay.
//
// On failure the test keeps its directory (kubeconfig, manager.log, runner.log, relays/logs,
// Redis logs) and prints its path.
package e2e
