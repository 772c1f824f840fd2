package redisconf

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// EnsureLibrary makes every master hold the function library code (named name), loading it
// with FUNCTION LOAD REPLACE where it is missing or different: a master that lost it (a new
// node, a flushed one) gets it back on the next pass. Replicas get it from their masters. It
// returns the masters it had to write to and those it could not check or write.
func (c *Conn) EnsureLibrary(ctx context.Context, nodes []Node, name, code string) (written []string, lagging []Lag) {
	for _, nd := range nodes {
		if !nd.Master {
			continue
		}
		if nd.Failed() {
			if nd.OwnsSlots {
				lagging = append(lagging, Lag{nd, errMarkedFailed})
			}
			continue
		}
		n := c.node(nd.Addr)
		libs, err := n.FunctionList(ctx, redis.FunctionListQuery{LibraryNamePattern: name, WithCode: true}).Result()
		if err != nil {
			lagging = append(lagging, Lag{nd, fmt.Errorf("FUNCTION LIST: %w", err)})
			continue
		}
		if len(libs) == 1 && libs[0].Name == name && libs[0].Code == code {
			continue
		}
		if err := n.FunctionLoadReplace(ctx, code).Err(); err != nil {
			lagging = append(lagging, Lag{nd, fmt.Errorf("FUNCTION LOAD (the operator's Redis user needs +function|load): %w", err)})
			continue
		}
		written = append(written, nd.Addr)
	}
	return written, lagging
}
