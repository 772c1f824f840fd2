// Package bench is Herald's load generator: it measures the whole system (real `herald relay`
// processes, a real Redis Cluster) against a raw-Redis baseline measured in the same run, and
// reports one Markdown table and a JSON file. `make bench` runs it through bench/cmd/herald-bench;
// docs/performance.md explains every figure and what limits it.
//
// Everything the load generator starts (the Redis Cluster of hack/redis-cluster.sh on its own
// ports, shard relays, a sidecar) it stops again, by PID. Server CPU and memory are read from
// /proc/<pid>/stat of those processes, so the figures are process-external; the load
// generator's own CPU is reported too, because its clients share the same cores.
//
// Clients are kept cheap: one goroutine per SSE connection reading with one bufio.Reader,
// parsing only the id line and the seq/ts fields of the data line; per-subscriber bitmaps
// count lost and duplicated messages, per-subscriber histograms the publish-to-deliver latency
// (publishers stamp the scheduled send time, so a publisher that falls behind shows up as
// latency rather than hiding it).
package bench
