package sidecar

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/heraldhq/herald/relay/cursor"
	"github.com/heraldhq/herald/relay/event"
	"github.com/heraldhq/herald/relay/hub"
	"github.com/heraldhq/herald/relay/stream"
	"github.com/heraldhq/herald/relay/usertoken"
)

// An edge's WebSocket stream takes commands from its client (docs/edge.md, "WebSocket
// commands"): one JSON object per text frame, each answered by one reply, a text frame queued in
// order with the stream's events. A reply is no CloudEvent (it has no specversion):
//
//	{"follow":["user-42","team-7/"]}  {"type":"followed","keys":[...],"at":"<cursor>"}
//	{"unfollow":["team-7/"]}          {"type":"unfollowed","keys":[...],"at":"<cursor>"}
//	{"token":"<jwt>"}                 {"type":"token","expires":"<RFC 3339>"}
//	a refusal                         {"type":"error","status":403,"detail":"...","command":"follow"}
//
// Events of a followed key published after its "followed" reply reach the stream; none of an
// unfollowed key come after its "unfollowed" reply. at is the merged stream's cursor at the
// change. The stream package runs one command at a time on a goroutine of the stream's own, so
// a follow may wait for the shard relays and the replies keep the commands' order; a refusal
// ends only the command, never the stream.

// edgeStream is what an edge WebSocket's commands change: what it follows (ls.keys, the
// upstream interest, its subscriber of the merged stream) and the token it runs on.
type edgeStream struct {
	edge    *edge
	ls      *localSub
	sub     *hub.Subscriber // adjustable: registered by channel.subscribeAll with keys
	streams []*shardStream
	grant   *usertoken.Grant // the newest token's; only the command goroutine reads or replaces it
	expiry  *time.Timer      // ends the stream when grant's token expires
}

// command is one parsed command.
type command struct {
	name  string   // "follow", "unfollow" or "token"
	keys  []string // of follow and unfollow: valid, each once
	token string
}

// refusal is a command refused: the error reply's status and detail.
type refusal struct {
	status  int
	detail  string
	command string // "" when it could not be told
	key     string // the key refused, if one was
}

// reply is every reply's JSON; members that say nothing are left out.
type reply struct {
	Type    string   `json:"type"`
	Keys    []string `json:"keys,omitempty"`
	At      string   `json:"at,omitempty"`
	Expires string   `json:"expires,omitempty"`
	Status  int      `json:"status,omitempty"`
	Detail  string   `json:"detail,omitempty"`
	Command string   `json:"command,omitempty"`
	Key     string   `json:"key,omitempty"`
}

func (r reply) notice() *event.Encoded {
	b, _ := json.Marshal(r) // strings and ints: it cannot fail, and the result is UTF-8
	return stream.TextNotice(b)
}

func (r *refusal) reply() reply {
	return reply{Type: "error", Status: r.status, Detail: r.detail, Command: r.command, Key: r.key}
}

// run handles one command, on the stream's command goroutine, and queues its reply.
func (es *edgeStream) run(text []byte) {
	c, refused := parseCommand(text)
	if refused == nil {
		switch c.name {
		case "follow":
			refused = es.follow(c.keys)
		case "unfollow":
			refused = es.unfollow(c.keys)
		case "token":
			refused = es.renew(c.token)
		}
	}
	if refused != nil {
		es.sub.Notify(refused.reply().notice())
	}
}

// parseCommand reads one command: a JSON object with exactly one of follow, unfollow (each a
// non-empty list of keys and prefixes) and token. Every refusal is a 400 that says what was
// wrong.
func parseCommand(text []byte) (command, *refusal) {
	var in struct {
		Follow   *[]string `json:"follow"`
		Unfollow *[]string `json:"unfollow"`
		Token    *string   `json:"token"`
	}
	dec := json.NewDecoder(bytes.NewReader(text))
	dec.DisallowUnknownFields()
	err := dec.Decode(&in)
	if err == nil && dec.Decode(new(json.RawMessage)) != io.EOF {
		err = errors.New("more than one JSON value")
	}
	if err != nil {
		return command{}, &refusal{status: http.StatusBadRequest, detail: "a command is a JSON object with one of follow, unfollow or token: " + err.Error()}
	}
	var c command
	var list *[]string
	n := 0
	if in.Follow != nil {
		c.name, list, n = "follow", in.Follow, n+1
	}
	if in.Unfollow != nil {
		c.name, list, n = "unfollow", in.Unfollow, n+1
	}
	if in.Token != nil {
		c.name, c.token, n = "token", *in.Token, n+1
	}
	switch {
	case n != 1:
		return command{}, &refusal{status: http.StatusBadRequest, detail: "a command is a JSON object with exactly one of follow, unfollow or token; this one has " + strconv.Itoa(n)}
	case c.name == "token" && c.token == "":
		return command{}, &refusal{status: http.StatusBadRequest, detail: "token is empty: send the fresh token the app gave you", command: c.name}
	case list != nil && len(*list) == 0:
		return command{}, &refusal{status: http.StatusBadRequest, detail: c.name + " names no keys: give a list of keys and prefixes (ending in /)", command: c.name}
	}
	if list != nil {
		for _, k := range *list {
			if err := event.ValidateField("key", k, event.MaxKeyBytes); err != nil {
				return command{}, &refusal{status: http.StatusBadRequest, detail: c.name + ": " + err.Error(), command: c.name, key: clipKey(k)}
			}
			if !slices.Contains(c.keys, k) {
				c.keys = append(c.keys, k)
			}
		}
	}
	return c, nil
}

// clipKey shortens what a client sent before a reply names it.
func clipKey(k string) string {
	if len(k) > 64 {
		return string(bytes.ToValidUTF8([]byte(k[:64]), nil)) + "..."
	}
	return k
}

// commandContext bounds a command's upstream work (waiting for the shard relays, fetching a
// JWKS), and ends it when the sidecar stops.
func (es *edgeStream) commandContext() (context.Context, context.CancelFunc) {
	ctx, err := es.ls.ch.s.context()
	if err != nil {
		ctx = context.Background()
	}
	return context.WithTimeout(ctx, followTimeout)
}

// follow adds keys, each granted by the token, within the per-stream bound: first the upstream
// streams of their shards follow them (a prefix: every shard's), then the subscriber, whose
// reply marks from where their events come.
func (es *edgeStream) follow(keys []string) *refusal {
	for _, k := range keys {
		if !es.grant.MayFollow(k) {
			return &refusal{status: http.StatusForbidden, detail: "the token does not grant following " + strconv.Quote(k), command: "follow", key: k}
		}
	}
	ls := es.ls
	ls.mu.Lock()
	if ls.released {
		ls.mu.Unlock()
		return nil // the stream ended: nobody reads a reply
	}
	var added []string
	for _, k := range keys {
		if !slices.Contains(ls.keys, k) {
			added = append(added, k)
		}
	}
	if limit := es.edge.opt.KeysPerStream; len(ls.keys)+len(added) > limit {
		ls.mu.Unlock()
		return &refusal{status: http.StatusBadRequest, command: "follow",
			detail: "a stream at the edge follows at most " + strconv.Itoa(limit) + " keys and prefixes; this one follows " + strconv.Itoa(len(ls.keys)) + " and the command adds " + strconv.Itoa(len(added)) + "; unfollow some first"}
	}
	ls.keys = append(slices.Clip(ls.keys), added...) // a new array: the old one may be the grant's
	holds := es.want(added)
	ls.mu.Unlock()

	ctx, cancel := es.commandContext()
	err := awaitHolds(ctx, holds)
	cancel()
	if err != nil {
		es.forget(added)
		return &refusal{status: http.StatusServiceUnavailable, command: "follow", detail: "cannot follow yet: " + err.Error() + "; retry"}
	}
	es.adjust(hub.Change{Add: added}, reply{Type: "followed", Keys: keys})
	return nil
}

// unfollow removes keys the stream follows: first from the subscriber, whose reply marks the
// last of their events, then from the upstream streams.
func (es *edgeStream) unfollow(keys []string) *refusal {
	ls := es.ls
	ls.mu.Lock()
	followed := ls.keys
	ls.mu.Unlock()
	for _, k := range keys {
		if !slices.Contains(followed, k) {
			return &refusal{status: http.StatusBadRequest, detail: "the stream does not follow " + strconv.Quote(k), command: "unfollow", key: k}
		}
	}
	if es.adjust(hub.Change{Remove: keys}, reply{Type: "unfollowed", Keys: keys}) {
		es.forget(keys)
	}
	return nil
}

// renew takes a fresh token for the stream: of the same user, granting every key the stream
// follows. Its expiry replaces the old one's.
func (es *edgeStream) renew(raw string) *refusal {
	ctx, cancel := es.commandContext()
	g, err := es.edge.opt.Users.Verify(ctx, raw)
	cancel()
	if err != nil {
		r := &refusal{status: http.StatusUnauthorized, detail: err.Error(), command: "token"}
		if ue, ok := errors.AsType[*usertoken.Error](err); ok {
			r.status, r.detail = ue.Status, ue.Detail
		}
		return r
	}
	if g.Subject != es.grant.Subject {
		return &refusal{status: http.StatusForbidden, command: "token",
			detail: "the token is another user's (its sub is not the stream's); open a stream of its own for it"}
	}
	es.ls.mu.Lock()
	followed := es.ls.keys
	es.ls.mu.Unlock()
	for _, k := range followed {
		if !g.MayFollow(k) {
			return &refusal{status: http.StatusForbidden, command: "token", key: k,
				detail: "the token does not grant following " + strconv.Quote(k) + ", which the stream follows; unfollow it first"}
		}
	}
	if !es.expiry.Stop() {
		return nil // the old token expired meanwhile: the stream is ending with 4401
	}
	es.grant = g
	es.expiry.Reset(es.edge.untilExpiry(g))
	es.sub.Notify(reply{Type: "token", Expires: g.Expiry.UTC().Format(time.RFC3339)}.notice())
	return nil
}

// want asks the upstream streams for keys new to the stream: a key's shard, every shard for a
// prefix (the keys under it hash anywhere), as localSub.shardKeys has them. ls.mu is held.
func (es *edgeStream) want(keys []string) []hold {
	var holds []hold
	m := es.ls.ch.shardMap()
	for _, k := range keys {
		for _, shard := range es.ls.shards {
			if event.IsPrefix(k) || m.ShardFor(k) == shard {
				st := es.streams[shard]
				holds = append(holds, hold{st, k, st.interest.want(k)})
			}
		}
	}
	return holds
}

// forget drops keys from what the stream follows and gives their upstream interest back,
// unless the stream ended and gave back all of it already.
func (es *edgeStream) forget(keys []string) {
	ls := es.ls
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.released {
		return
	}
	m := ls.ch.shardMap()
	kept := make([]string, 0, len(ls.keys)) // never nil: nil is every key
	for _, k := range ls.keys {
		if !slices.Contains(keys, k) {
			kept = append(kept, k)
			continue
		}
		for _, shard := range ls.shards {
			if event.IsPrefix(k) || m.ShardFor(k) == shard {
				es.streams[shard].interest.drop(k)
			}
		}
	}
	ls.keys = kept
}

// adjust changes what the subscriber follows and queues r, with the merged stream's cursor at
// the change, between two of its events: every event after at is routed by the new keys. It
// reports false when the stream ended.
func (es *edgeStream) adjust(c hub.Change, r reply) bool {
	ch := es.ls.ch
	ch.mergeMu.Lock() // no event is merged meanwhile, so ch.pos is where the change falls
	defer ch.mergeMu.Unlock()
	r.At = ch.pos.String()
	n := r.notice()
	_, ok := es.sub.Adjust(c, cursor.ID{}, func(cursor.ID) *event.Encoded { return n })
	return ok
}
