package redisconf

import (
	"context"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// EnsureFunction makes every master hold the function fn, loading the library code (named
// name) where no library holds fn: a master that lost it (a new node, a flushed one) gets it
// back on the next pass. The libraries of other versions stay, so relays that still call their
// functions keep working (a function's name carries its code's digest: fn found in any library
// is this code). Replicas get it from their masters. It returns the masters it had to write to
// and those it could not check or write.
func (c *Conn) EnsureFunction(ctx context.Context, nodes []Node, fn, name, code string) (written []string, lagging []Lag) {
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
		libs, err := n.FunctionList(ctx, redis.FunctionListQuery{}).Result()
		if err != nil {
			lagging = append(lagging, Lag{nd, fmt.Errorf("FUNCTION LIST: %w", err)})
			continue
		}
		if holds(libs, fn) {
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

// holds says whether one of libs registers the function fn.
func holds(libs []redis.Library, fn string) bool {
	for _, l := range libs {
		for _, f := range l.Functions {
			if f.Name == fn {
				return true
			}
		}
	}
	return false
}

// FunctionLibraries lists the names of the function libraries on the masters of nodes, all of
// them together. A master that cannot be listed (failed ones are not asked) is an error: what it
// holds is unknown.
func (c *Conn) FunctionLibraries(ctx context.Context, nodes []Node) (map[string]bool, error) {
	names := map[string]bool{}
	for _, nd := range nodes {
		if !nd.Master || nd.Failed() {
			continue
		}
		libs, err := c.node(nd.Addr).FunctionList(ctx, redis.FunctionListQuery{}).Result()
		if err != nil {
			return nil, fmt.Errorf("%s: FUNCTION LIST: %w", nd.Addr, err)
		}
		for _, l := range libs {
			names[l.Name] = true
		}
	}
	return names, nil
}

// DeleteFunctionLibrary removes the library name from every master that holds it (replicas
// follow their masters).
func (c *Conn) DeleteFunctionLibrary(ctx context.Context, nodes []Node, name string) error {
	for _, nd := range nodes {
		if !nd.Master || nd.Failed() {
			continue
		}
		err := c.node(nd.Addr).FunctionDelete(ctx, name).Err()
		if err != nil && !strings.Contains(err.Error(), "Library not found") {
			return fmt.Errorf("%s: FUNCTION DELETE %s (the operator's Redis user needs +function|delete): %w", nd.Addr, name, err)
		}
	}
	return nil
}
