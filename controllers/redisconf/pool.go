package redisconf

import (
	"context"
	"maps"
	"strings"
	"sync"
	"time"
)

// Pool shares one Conn per distinct Options, so a thousand channels on the operator's default
// Redis use one set of connections.
type Pool struct {
	mu    sync.Mutex
	conns map[string]*pooled
	now   func() time.Time // for tests
}

type pooled struct {
	conn  *Conn
	used  time.Time
	nodes map[string]string // what Watch saw last: address -> health and run ID
}

// Get returns the connection for opts, creating it on first use.
func (p *Pool) Get(opts Options) *Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		p.conns = map[string]*pooled{}
	}
	k := opts.Key()
	e, ok := p.conns[k]
	if !ok {
		e = &pooled{conn: NewConn(opts)}
		p.conns[k] = e
	}
	e.used = p.clock()
	return e.conn
}

func (p *Pool) clock() time.Time {
	if p.now != nil {
		return p.now()
	}
	return time.Now()
}

// Watch looks at every Redis of the pool each interval and calls changed with its Options.Key
// when a node restarted (a new run ID: it lost the ACL users, which Redis does not save), joined,
// left, changed health, or answers again after it did not: the channels on that Redis then need
// a pass at once instead of at their next resync. The first look at a Redis only records it.
// Connections no channel used for idle are closed. Watch returns when ctx ends.
func (p *Pool) Watch(ctx context.Context, interval, idle time.Duration, changed func(key string)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p.closeIdle(idle)
		p.mu.Lock()
		entries := maps.Clone(p.conns)
		p.mu.Unlock()
		var wg sync.WaitGroup
		for key, e := range entries {
			wg.Go(func() {
				seen := e.conn.nodeStates(ctx, max(interval, 2*time.Second))
				p.mu.Lock()
				before := e.nodes
				e.nodes = seen
				p.mu.Unlock()
				if before != nil && !maps.Equal(before, seen) && ctx.Err() == nil {
					changed(key)
				}
			})
		}
		wg.Wait()
	}
}

// closeIdle closes and forgets the connections no channel asked for since idle ago (a channel
// moved to another Redis, or was deleted).
func (p *Pool) closeIdle(idle time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, e := range p.conns {
		if p.clock().Sub(e.used) > idle {
			_ = e.conn.Close()
			delete(p.conns, k)
		}
	}
}

// Len is the number of open connection sets.
func (p *Pool) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// nodeStates says, per node, its health and run ID ("" when it does not answer); a Redis that
// cannot be discovered is one entry saying so.
func (c *Conn) nodeStates(ctx context.Context, timeout time.Duration) map[string]string {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_, nodes, err := c.Discover(ctx)
	if err != nil {
		return map[string]string{"": "unreachable"}
	}
	states := make(map[string]string, len(nodes))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, nd := range nodes {
		wg.Go(func() {
			state := nd.Health
			if !nd.Failed() {
				state += "/" + runID(c.node(nd.Addr).Info(ctx, "server").Val())
			}
			mu.Lock()
			states[nd.Addr] = state
			mu.Unlock()
		})
	}
	wg.Wait()
	return states
}

// runID finds run_id in an INFO reply.
func runID(info string) string {
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(line, "run_id:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
