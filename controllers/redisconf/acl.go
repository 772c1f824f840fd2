package redisconf

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"
)

// User is a Redis ACL user that may touch only one channel's keys and shard channels.
type User struct {
	Name       string   // ACL user name
	Password   string   // plain text; Redis stores only its SHA-256
	KeyPattern string   // glob of the keys and shard channels it may use
	Commands   []string // allowed commands ("xadd", "cluster|shards"); everything else is denied
}

// rules are the ACL SETUSER arguments that make a user exactly u.
func (u User) rules() []any {
	args := []any{"reset", "on", "#" + hashPassword(u.Password), "~" + u.KeyPattern, "&" + u.KeyPattern, "-@all"}
	for _, cmd := range u.Commands {
		args = append(args, "+"+cmd)
	}
	return args
}

// EnsureUser makes u exist, exactly, on every node. ACLs are not propagated in a cluster, so
// each node is read and written on its own. It returns the nodes it had to write to.
func (c *Conn) EnsureUser(ctx context.Context, nodes []Node, u User) ([]string, error) {
	var written []string
	for _, nd := range nodes {
		n := c.node(nd.Addr)
		ok, err := userMatches(ctx, n, u)
		if err != nil {
			return written, fmt.Errorf("%s: reading ACL user %s: %w", nd.Addr, u.Name, err)
		}
		if ok {
			continue
		}
		args := append([]any{"ACL", "SETUSER", u.Name}, u.rules()...)
		if err := n.Do(ctx, args...).Err(); err != nil {
			return written, fmt.Errorf("%s: writing ACL user %s: %w", nd.Addr, u.Name, err)
		}
		written = append(written, nd.Addr)
	}
	return written, nil
}

// DeleteUser removes the user from every node. A node that never had it is fine.
func (c *Conn) DeleteUser(ctx context.Context, nodes []Node, name string) error {
	for _, nd := range nodes {
		if err := c.node(nd.Addr).Do(ctx, "ACL", "DELUSER", name).Err(); err != nil {
			return fmt.Errorf("%s: deleting ACL user %s: %w", nd.Addr, name, err)
		}
	}
	return nil
}

// userMatches compares ACL GETUSER with u. Redis reorders command rules, so they are compared as
// sets; flags Redis adds on its own (sanitize-payload) are ignored.
func userMatches(ctx context.Context, n *redis.Client, u User) (bool, error) {
	v, err := n.Do(ctx, "ACL", "GETUSER", u.Name).Result()
	if err == redis.Nil {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	got := map[string]any{}
	switch x := v.(type) {
	case map[any]any: // RESP3
		for k, val := range x {
			got[fmt.Sprint(k)] = val
		}
	case []any: // RESP2: alternating names and values
		for i := 0; i+1 < len(x); i += 2 {
			got[fmt.Sprint(x[i])] = x[i+1]
		}
	default:
		return false, fmt.Errorf("unexpected ACL GETUSER reply %T", v)
	}
	want := strings.Fields("-@all")
	for _, c := range u.Commands {
		want = append(want, "+"+c)
	}
	cmds := strings.Fields(fmt.Sprint(got["commands"]))
	slices.Sort(cmds)
	slices.Sort(want)
	return slices.Contains(strs(got["flags"]), "on") &&
		slices.Equal(strs(got["passwords"]), []string{hashPassword(u.Password)}) &&
		fmt.Sprint(got["keys"]) == "~"+u.KeyPattern &&
		fmt.Sprint(got["channels"]) == "&"+u.KeyPattern &&
		slices.Equal(cmds, want), nil
}

func strs(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, x := range list {
		out = append(out, fmt.Sprint(x))
	}
	return out
}

func hashPassword(p string) string {
	sum := sha256.Sum256([]byte(p))
	return hex.EncodeToString(sum[:])
}
