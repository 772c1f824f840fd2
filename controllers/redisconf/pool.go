package redisconf

import "sync"

// Pool shares one Conn per distinct Options, so a thousand channels on the operator's default
// Redis use one set of connections.
type Pool struct {
	mu    sync.Mutex
	conns map[string]*Conn
}

// Get returns the connection for opts, creating it on first use.
func (p *Pool) Get(opts Options) *Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		p.conns = map[string]*Conn{}
	}
	k := opts.Key()
	c, ok := p.conns[k]
	if !ok {
		c = NewConn(opts)
		p.conns[k] = c
	}
	return c
}
