// Package capacity turns a load (subscribers, messages per second, fan-out) into what a channel
// needs: relay cores and pods, shards, replicas, Redis masters and memory. The figures it
// starts from are measured by `make bench` (docs/capacity.md says how); `herald plan` prints
// a plan, and `make bench` prints the model's relay CPU beside the measured one.
package capacity

import (
	"fmt"
	"math"
	"time"
)

// Figures are per-core costs and sizes measured on the reference machine.
type Figures struct {
	// WriteCPU is the relay CPU of one write to one subscriber's connection (a system call and
	// its framing). Under load writes are coalesced: at most one per subscriber per interval.
	WriteCPU time.Duration
	// DeliveryCPU is the relay CPU of one more event inside a write.
	DeliveryCPU time.Duration
	// PublishCPU is the relay CPU of one acknowledged publish (HTTP, Redis call, the event's
	// encoding when it comes back on the subscription).
	PublishCPU time.Duration
	// WriteInterval is the relay's --write-interval: the least time between two coalesced
	// writes to one subscriber.
	WriteInterval time.Duration
	// RedisPublishesPerCore is how many publishes one Redis master (one core) takes per second.
	RedisPublishesPerCore float64
	// SSEBytes and WebSocketBytes are a relay's memory per idle subscriber; RelayBaseBytes a
	// relay's own.
	SSEBytes, WebSocketBytes, RelayBaseBytes float64
	// SubscribersPerRelay is a relay's --max-subscribers (its default).
	SubscribersPerRelay int
}

// Reference is what `make bench` measured on the 2-core reference machine (2026-12-02): the
// fit of scenario (a) at 1,000 × 1,000 and 1,000 × 100, (f) and (d).
var Reference = Figures{
	WriteCPU:              5400 * time.Nanosecond,
	DeliveryCPU:           110 * time.Nanosecond,
	PublishCPU:            85 * time.Microsecond,
	WriteInterval:         10 * time.Millisecond,
	RedisPublishesPerCore: 25000,
	SSEBytes:              3.4 * 1024,
	WebSocketBytes:        3.4 * 1024,
	RelayBaseBytes:        54 << 20,
	SubscribersPerRelay:   10000,
}

// Load is what a channel must carry.
type Load struct {
	Subscribers int     // streams open at the shard relays at once (sidecar upstreams count as one each)
	Rate        float64 // messages published per second on the channel
	// Fanout is how many subscribers each message reaches on average: 1 when every subscriber
	// follows keys of its own (a user's notifications), Subscribers when all follow everything.
	Fanout float64
	// WebSocketShare is the part of the subscribers on WebSocket (0..1); the rest use SSE.
	WebSocketShare float64
	// Headroom is the share of a core a plan fills (default 0.6): bursts, failovers (a relay's
	// subscribers move to the others) and noisy neighbours need the rest.
	Headroom float64
	// Replicas is the least relay replicas per shard (default 2, so one can fail).
	Replicas int
}

// Plan is what a load needs.
type Plan struct {
	Deliveries   float64 // events delivered per second
	Writes       float64 // writes to subscriber connections per second (after coalescing)
	RelayCores   float64 // relay CPU, all pods together
	RedisCores   float64 // Redis masters' CPU for the publishes
	Shards       int
	Replicas     int // relay pods per shard
	RelayPods    int // Shards × Replicas
	RedisMasters int
	PodCores     float64 // CPU request of one relay pod
	PodMemory    float64 // bytes: memory request of one relay pod
}

// RelayCPU is the model's relay CPU (cores) for deliveries, writes and publishes per second.
func (f Figures) RelayCPU(deliveries, writes, publishes float64) float64 {
	return writes*f.WriteCPU.Seconds() + deliveries*f.DeliveryCPU.Seconds() + publishes*f.PublishCPU.Seconds()
}

// Writes is the writes per second to subscribers that each get perSubscriber events per
// second: one per event until coalescing caps them at one per write interval.
func (f Figures) Writes(subscribers int, perSubscriber float64) float64 {
	perSub := perSubscriber
	if f.WriteInterval > 0 {
		perSub = math.Min(perSub, 1/f.WriteInterval.Seconds())
	}
	return float64(subscribers) * perSub
}

// maxReplicas bounds the relay replicas of one shard in a plan.
const maxReplicas = 8

// Make plans load with figures f.
func Make(load Load, f Figures) (Plan, error) {
	if load.Subscribers < 0 || load.Rate < 0 || load.Fanout < 0 || load.WebSocketShare < 0 || load.WebSocketShare > 1 {
		return Plan{}, fmt.Errorf("capacity: subscribers, rate and fan-out must not be negative, the WebSocket share is 0..1")
	}
	if load.Fanout > float64(load.Subscribers) {
		return Plan{}, fmt.Errorf("capacity: a fan-out of %g is more than the %d subscribers", load.Fanout, load.Subscribers)
	}
	headroom := load.Headroom
	if headroom <= 0 || headroom > 1 {
		headroom = 0.6
	}
	replicas := max(load.Replicas, 2)
	var p Plan
	p.Deliveries = load.Rate * load.Fanout
	perSub := 0.0
	if load.Subscribers > 0 {
		perSub = p.Deliveries / float64(load.Subscribers)
	}
	p.Writes = f.Writes(load.Subscribers, perSub)
	// Every replica of a shard receives and encodes each of the shard's messages once; the
	// publish itself runs on one of them.
	p.RelayCores = f.RelayCPU(p.Deliveries, p.Writes, load.Rate)
	p.RedisCores = load.Rate / f.RedisPublishesPerCore
	p.RedisMasters = max(1, int(math.Ceil(p.RedisCores/headroom)))

	// Pods of one core each, at the headroom, and enough of them for the streams.
	byCPU := int(math.Ceil(p.RelayCores / headroom))
	byStreams := int(math.Ceil(float64(load.Subscribers) / float64(f.SubscribersPerRelay)))
	pods := max(byCPU, byStreams, replicas)
	// Shards spread the publishes over the masters (a shard lives on one master); replicas
	// spread the subscribers of a shard, but each replica reads and encodes all of its shard's
	// messages, so a shard gets at most maxReplicas of them.
	p.Shards = max(p.RedisMasters, int(math.Ceil(float64(pods)/maxReplicas)))
	p.Replicas = max(replicas, int(math.Ceil(float64(pods)/float64(p.Shards))))
	p.RelayPods = p.Shards * p.Replicas
	p.PodCores = math.Ceil(p.RelayCores/float64(p.RelayPods)/headroom*10) / 10
	perPod := math.Ceil(float64(load.Subscribers) / float64(p.RelayPods))
	p.PodMemory = f.RelayBaseBytes + perPod*((1-load.WebSocketShare)*f.SSEBytes+load.WebSocketShare*f.WebSocketBytes)
	return p, nil
}
