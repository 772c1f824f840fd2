package redisconf

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
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

// Lag is a node that does not hold what a channel needs yet, and why.
type Lag struct {
	Node Node
	Err  error
}

func (l Lag) String() string {
	role := "replica"
	if l.Node.Master {
		role = "master"
	}
	return fmt.Sprintf("%s %s: %v", role, l.Node.Addr, l.Err)
}

var errMarkedFailed = errors.New("marked failed by the cluster")

// EnsureUser makes u exist, exactly, on every node. ACLs are not propagated in a cluster, so
// each node is read and written on its own. A node that cannot be written does not stop the
// others: it is returned as lagging, with the nodes that had to be written.
func (c *Conn) EnsureUser(ctx context.Context, nodes []Node, u User) (written []string, lagging []Lag) {
	for _, nd := range nodes {
		if nd.Failed() {
			lagging = append(lagging, Lag{nd, errMarkedFailed})
			continue
		}
		wrote, err := c.ensureUserOn(ctx, c.node(nd.Addr), u)
		if err != nil {
			lagging = append(lagging, Lag{nd, err})
		}
		if wrote {
			written = append(written, nd.Addr)
		}
	}
	return written, lagging
}

func (c *Conn) ensureUserOn(ctx context.Context, n *redis.Client, u User) (bool, error) {
	ok, err := c.userMatches(ctx, n, u)
	if err != nil {
		return false, fmt.Errorf("reading ACL user %s: %w", u.Name, err)
	}
	if ok {
		return false, nil
	}
	args := append([]any{"ACL", "SETUSER", u.Name}, u.rules()...)
	if err := n.Do(ctx, args...).Err(); err != nil {
		return false, fmt.Errorf("writing ACL user %s: %w", u.Name, err)
	}
	if err := c.learnRewrite(ctx, n, u); err != nil {
		return true, fmt.Errorf("reading back ACL user %s: %w", u.Name, err)
	}
	return true, nil
}

// DisableUser turns the user off and forgets its passwords on every node that has it, keeping
// its key and command rules: an old password then opens nothing, and EnsureUser turns it on
// again with the password it is given. A node that never had it is fine, and so is a failed
// one: a restarted Redis comes back without the users it was given (they are not saved).
func (c *Conn) DisableUser(ctx context.Context, nodes []Node, name string) error {
	for _, nd := range nodes {
		if nd.Failed() {
			continue
		}
		n := c.node(nd.Addr)
		u, err := getUser(ctx, n, name)
		if err != nil {
			return fmt.Errorf("%s: reading ACL user %s: %w", nd.Addr, name, err)
		}
		if u == nil {
			continue
		}
		if err := n.Do(ctx, "ACL", "SETUSER", name, "off", "resetpass").Err(); err != nil {
			return fmt.Errorf("%s: disabling ACL user %s: %w", nd.Addr, name, err)
		}
	}
	return nil
}

// DeleteUser removes the user from every node. A node that never had it is fine, and so is a
// failed one (see DisableUser).
func (c *Conn) DeleteUser(ctx context.Context, nodes []Node, name string) error {
	for _, nd := range nodes {
		if nd.Failed() {
			continue
		}
		if err := c.node(nd.Addr).Do(ctx, "ACL", "DELUSER", name).Err(); err != nil {
			return fmt.Errorf("%s: deleting ACL user %s: %w", nd.Addr, name, err)
		}
	}
	return nil
}

// userMatches compares ACL GETUSER with u. Redis rewrites command rules (it reorders them, and
// turns a list that covers most of a category into "+@category -other"), so the rules match when
// they are the same set, or when they are what Redis made of the same request before
// (learnRewrite). Flags Redis adds on its own (sanitize-payload) are ignored.
func (c *Conn) userMatches(ctx context.Context, n *redis.Client, u User) (bool, error) {
	got, err := getUser(ctx, n, u.Name)
	if err != nil || got == nil {
		return false, err
	}
	want := strings.Fields("-@all")
	for _, cmd := range u.Commands {
		want = append(want, "+"+cmd)
	}
	cmds := strings.Fields(fmt.Sprint(got["commands"]))
	slices.Sort(cmds)
	slices.Sort(want)
	c.mu.Lock()
	rewrite, learned := c.rewrites[strings.Join(want, " ")]
	c.mu.Unlock()
	sameCommands := slices.Equal(cmds, want) || (learned && strings.Join(cmds, " ") == rewrite)
	return slices.Contains(strs(got["flags"]), "on") &&
		slices.Equal(strs(got["passwords"]), []string{hashPassword(u.Password)}) &&
		fmt.Sprint(got["keys"]) == "~"+u.KeyPattern &&
		fmt.Sprint(got["channels"]) == "&"+u.KeyPattern &&
		sameCommands, nil
}

// learnRewrite remembers how Redis wrote down u's command rules, so the next check recognises them.
func (c *Conn) learnRewrite(ctx context.Context, n *redis.Client, u User) error {
	got, err := getUser(ctx, n, u.Name)
	if err != nil || got == nil {
		return err
	}
	want := strings.Fields("-@all")
	for _, cmd := range u.Commands {
		want = append(want, "+"+cmd)
	}
	slices.Sort(want)
	cmds := strings.Fields(fmt.Sprint(got["commands"]))
	slices.Sort(cmds)
	c.mu.Lock()
	c.rewrites[strings.Join(want, " ")] = strings.Join(cmds, " ")
	c.mu.Unlock()
	return nil
}

// getUser is ACL GETUSER as a map, or nil when the user does not exist.
func getUser(ctx context.Context, n *redis.Client, name string) (map[string]any, error) {
	v, err := n.Do(ctx, "ACL", "GETUSER", name).Result()
	if err == redis.Nil {
		return nil, nil
	}
	if err != nil {
		return nil, err
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
		return nil, fmt.Errorf("unexpected ACL GETUSER reply %T", v)
	}
	return got, nil
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
