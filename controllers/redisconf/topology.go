package redisconf

import (
	"fmt"
	"sort"
)

// Topology is who owns which slots. A standalone Redis is one master owning every slot.
type Topology struct {
	Cluster bool     // false for a standalone Redis
	Masters []Master // sorted by address
}

// Master is a primary node and the slot ranges it owns.
type Master struct {
	Addr  string   // host:port as the cluster announces it
	Slots [][2]int // inclusive ranges
}

// Owner is the master that owns slot, if any.
func (t Topology) Owner(slot int) (Master, bool) {
	for _, m := range t.Masters {
		for _, r := range m.Slots {
			if slot >= r[0] && slot <= r[1] {
				return m, true
			}
		}
	}
	return Master{}, false
}

func (t *Topology) sort() {
	sort.Slice(t.Masters, func(i, j int) bool { return t.Masters[i].Addr < t.Masters[j].Addr })
}

// String is for messages: "3 masters (127.0.0.1:7001, ...)".
func (t Topology) String() string {
	addrs := make([]string, len(t.Masters))
	for i, m := range t.Masters {
		addrs[i] = m.Addr
	}
	return fmt.Sprintf("%d masters %v", len(t.Masters), addrs)
}
