package capacity

import (
	"fmt"
	"io"
	"math"

	"github.com/heraldhq/herald/internal/cli"
)

// Main is `herald plan`: it prints what a load needs (docs/capacity.md).
func Main(args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	var l Load
	fs := cli.New("plan", stderr, "Usage: herald plan --subscribers N --rate R [flags]",
		"Prints the relay cores and pods, shards, replicas, Redis masters and memory a channel needs,",
		"from the per-core figures make bench measured on the reference machine (docs/capacity.md).")
	fs.IntVar(&l.Subscribers, "subscribers", 0, "streams open at the shard relays at once (a sidecar's upstream streams count one each)")
	fs.Float64Var(&l.Rate, "rate", 0, "messages published per second on the channel")
	fs.Float64Var(&l.Fanout, "fanout", 1, "subscribers each message reaches on average: 1 when each follows keys of its own, --subscribers when all follow everything")
	fs.Float64Var(&l.WebSocketShare, "websocket-share", 0, "part of the subscribers on WebSocket, 0..1 (they take more memory)")
	fs.Float64Var(&l.Headroom, "headroom", 0.6, "share of a core a plan fills")
	fs.IntVar(&l.Replicas, "replicas", 2, "least relay replicas per shard")
	if err := fs.Parse(args, getenv); err != nil {
		return err
	}
	p, err := Make(l, Reference)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "load: %d subscribers, %s msgs/s, fan-out %g: %s deliveries/s in %s writes/s\n",
		l.Subscribers, num(l.Rate), l.Fanout, num(p.Deliveries), num(p.Writes))
	fmt.Fprintf(stdout, "relay CPU:     %.2f cores in all\n", p.RelayCores)
	fmt.Fprintf(stdout, "shards:        %d (spec.shards)\n", p.Shards)
	fmt.Fprintf(stdout, "replicas:      %d per shard (spec.relay.replicas), %d relay pods\n", p.Replicas, p.RelayPods)
	fmt.Fprintf(stdout, "relay pod:     %.1f CPU, %.0f MiB (spec.relay.resources requests)\n", p.PodCores, math.Ceil(p.PodMemory/(1<<20)))
	fmt.Fprintf(stdout, "Redis masters: %d (%.2f cores of publishes)\n", p.RedisMasters, p.RedisCores)
	return nil
}

func num(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.3gM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.3gk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}
