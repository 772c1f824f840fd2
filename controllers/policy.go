package controllers

import (
	"fmt"
	"path"
	"slices"

	heraldv1 "github.com/heraldhq/herald/api/v1alpha1"
)

// Policy is what the platform team lets a channel ask for beyond the operator's defaults. A
// channel is written by whoever may edit its namespace; the operator acts for the whole cluster.
// Without a policy a channel may not name its own Redis (the operator would dial it with a
// Secret of the namespace as password), run another relay image, or take a priority class.
type Policy struct {
	// RedisAddresses are the host:port a spec.redis may name, e.g. "redis-*.data.svc:6379"
	// (a DNS name pattern, * within one label) or "10.0.3.0/24:*" (a network); see addressList.
	// They also bound the nodes that Redis's CLUSTER SHARDS may send the operator to.
	RedisAddresses []string
	// RelayImages are path.Match patterns of the images spec.relay.image may name, e.g.
	// "registry.example/herald:*" ("*" does not cross "/"). The operator's relay image is always
	// allowed.
	RelayImages []string
	// PriorityClasses spec.relay.priorityClassName may name.
	PriorityClasses []string
	// RelayLimits are the most spec.relay.limits may set, field by field (nil: no ceiling).
	// The relays' caps guard them and the Redis every channel shares: a channel may lower
	// them, not lift them past what the platform team allows.
	RelayLimits heraldv1.RelayLimits
}

// check returns why the policy refuses ch, naming the field and the flag that would allow it,
// or nil.
func (p Policy) check(ch *heraldv1.NotificationChannel, relayImage string) error {
	if err := p.checkRedis(ch); err != nil {
		return err
	}
	if img := ch.Spec.Relay.Image; img != "" && img != relayImage && !matchAny(p.RelayImages, img) {
		return fmt.Errorf("spec.relay.image: %s is neither the operator's relay image nor allowed (--allowed-relay-images %v)", img, p.RelayImages)
	}
	if pc := ch.Spec.Relay.PriorityClassName; pc != "" && !slices.Contains(p.PriorityClasses, pc) {
		return fmt.Errorf("spec.relay.priorityClassName: %s is not allowed (--allowed-priority-classes %v)", pc, p.PriorityClasses)
	}
	return p.checkLimits(ch.Spec.Relay.Limits)
}

// checkLimits refuses a spec.relay.limits field over its ceiling.
func (p Policy) checkLimits(l *heraldv1.RelayLimits) error {
	if l == nil {
		return nil
	}
	for _, f := range []struct {
		field      string
		v, ceiling *int32
	}{
		{"maxSubscribers", l.MaxSubscribers, p.RelayLimits.MaxSubscribers},
		{"maxSubscribersPerCaller", l.MaxSubscribersPerCaller, p.RelayLimits.MaxSubscribersPerCaller},
		{"maxReplaysPerCaller", l.MaxReplaysPerCaller, p.RelayLimits.MaxReplaysPerCaller},
		{"replaysPerSecondPerCaller", l.ReplaysPerSecondPerCaller, p.RelayLimits.ReplaysPerSecondPerCaller},
	} {
		if f.v != nil && f.ceiling != nil && *f.v > *f.ceiling {
			return fmt.Errorf("spec.relay.limits.%s: %d is over the platform's ceiling of %d (--relay-limit-ceilings)", f.field, *f.v, *f.ceiling)
		}
	}
	return nil
}

// checkRedis refuses a spec.redis address outside the allow-list.
func (p Policy) checkRedis(ch *heraldv1.NotificationChannel) error {
	if r := ch.Spec.Redis; r != nil {
		for _, a := range r.Addresses {
			if !addressList(p.RedisAddresses).allows(a) {
				return fmt.Errorf("spec.redis.addresses: %s is not among the Redis addresses the operator may dial (--allowed-redis-addresses %v)", a, p.RedisAddresses)
			}
		}
	}
	return nil
}

func matchAny(patterns []string, s string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, s); ok {
			return true
		}
	}
	return false
}
