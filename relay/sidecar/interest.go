package sidecar

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"
)

// A sidecar's upstream stream of a shard follows only what its local subscribers need: the
// keys of its keyed subscribers, or every key while a whole-channel subscriber exists. It is an
// interest stream of the shard relay (see the relay's httpapi/interest.go): changes are posted
// while it stays connected, and each shows in the stream as a comment with the cursor from
// which it holds. A local subscriber registers only once the upstream follows what it needs, so
// it gets every event published after it subscribed; a reconnect carries the whole interest and
// resumes after the last cursor read, so a change neither loses nor repeats anything.

// interest is what one shardStream's local subscribers need, and what its relay was told.
type interest struct {
	mu      sync.Mutex
	keys    map[string]int // local keyed subscribers per key
	whole   int            // local whole-channel subscribers: every key is needed
	version uint64         // bumped whenever what is needed changes

	stream  string          // the relay's id of the connected upstream stream ("" while none)
	base    string          // the relay it is connected to
	sentAll bool            // that relay follows every key for us
	sent    map[string]bool // the keys it follows for us (kept while sentAll, as the relay keeps them)
	// dirty holds the keys whose need may differ from sent: a change is computed from them
	// alone, so it costs what changed, not the 100,000 keys an edge may follow.
	dirty   map[string]struct{}
	posted  uint64        // the newest version posted to the stream (or opened with)
	applied uint64        // the newest version the stream showed in effect
	changed chan struct{} // closed (and replaced) when applied moves
	plain   bool          // the connected stream is a plain one of every key (an older relay)
	cancel  context.CancelCauseFunc
	kick    chan struct{} // the adjuster has work
}

func newInterest() *interest {
	return &interest{keys: map[string]int{}, sent: map[string]bool{}, dirty: map[string]struct{}{}, changed: make(chan struct{}), kick: make(chan struct{}, 1)}
}

// errInterest ends an upstream stream whose interest could not be changed: the next one
// carries the whole interest from the start.
var errInterest = errors.New("changing the upstream stream's keys failed")

// want records that a local subscriber needs key ("" = every key) and returns the version to
// wait for; drop undoes it.
func (in *interest) want(key string) uint64 {
	in.mu.Lock()
	defer in.mu.Unlock()
	if key == "" {
		in.whole++
		if in.whole == 1 {
			in.bumpLocked()
		}
	} else {
		in.keys[key]++
		if in.keys[key] == 1 {
			in.dirty[key] = struct{}{}
			if in.whole == 0 {
				in.bumpLocked()
			}
		}
	}
	return in.version
}

func (in *interest) drop(key string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if key == "" {
		in.whole--
		if in.whole == 0 {
			in.bumpLocked()
		}
		return
	}
	if in.keys[key]--; in.keys[key] == 0 {
		delete(in.keys, key)
		in.dirty[key] = struct{}{}
		if in.whole == 0 {
			in.bumpLocked()
		}
	}
}

func (in *interest) bumpLocked() {
	in.version++
	select {
	case in.kick <- struct{}{}:
	default:
	}
}

// describe says what the stream asks the relay for, for the status page.
func (in *interest) describe() string {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.whole > 0 {
		return "every key"
	}
	if len(in.keys) == 1 {
		return "1 key"
	}
	return strconv.Itoa(len(in.keys)) + " keys"
}

// await returns once the upstream follows what version asked for.
func (in *interest) await(ctx context.Context, version uint64) error {
	for {
		in.mu.Lock()
		if in.applied >= version || in.plain {
			in.mu.Unlock()
			return nil
		}
		ch := in.changed
		in.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (in *interest) setAppliedLocked(v uint64) {
	if v > in.applied {
		in.applied = v
		close(in.changed)
		in.changed = make(chan struct{})
	}
}

// opening is what a stream is opened with: the interest as of version.
type opening struct {
	all     bool
	keys    []string
	version uint64
}

// openKeysBudget bounds the bytes of keys a stream's URL carries. Servers and proxies limit a
// request's head (Go's to 1 MiB, Envoy's to 60 KiB by default); a stream that needs more keys
// opens following every key, which holds them all, and narrows to its keys with a change.
var openKeysBudget = 32 << 10

// query is the interest a stream opens with.
func (in *interest) query() opening {
	in.mu.Lock()
	defer in.mu.Unlock()
	o := opening{all: in.whole > 0, version: in.version}
	if !o.all {
		size := 0
		for k := range in.keys {
			o.keys = append(o.keys, k)
			size += len(k) + len("&key=")
		}
		if size > openKeysBudget {
			o.all, o.keys = true, nil
		}
	}
	return o
}

// values are the query parameters of an opening.
func (o opening) values() url.Values {
	if o.all {
		return url.Values{"interest": {"all"}}
	}
	return url.Values{"interest": {"keys"}, "key": o.keys}
}

// opened records that the stream at base announced itself as id, following o (it was opened
// with it): subscribers waiting for o's version go on, and later changes are posted.
func (in *interest) opened(id, base string, o opening, cancel context.CancelCauseFunc) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.stream, in.base, in.cancel, in.posted = id, base, cancel, o.version
	in.plain = false
	in.sentAll = o.all
	clear(in.sent)
	for _, k := range o.keys {
		in.sent[k] = true
	}
	// What changed since the opening's keys were read is what differs now (once per opening).
	clear(in.dirty)
	for k := range in.keys {
		if !in.sent[k] {
			in.dirty[k] = struct{}{}
		}
	}
	for k := range in.sent {
		if in.keys[k] == 0 {
			in.dirty[k] = struct{}{}
		}
	}
	in.setAppliedLocked(o.version)
	if o.all && in.whole == 0 && in.version == o.version {
		in.version++ // opened wider than needed (openKeysBudget): narrowing it is a change to post
	}
	if in.version > o.version {
		select {
		case in.kick <- struct{}{}:
		default:
		}
	}
}

// openedPlain records that a plain stream of every key is connected (to a relay that predates
// interest streams): every subscriber is served at once, and nothing is posted.
func (in *interest) openedPlain() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.plain = true
	close(in.changed)
	in.changed = make(chan struct{})
}

// closed forgets the stream (it failed): changes wait for the next one.
func (in *interest) closed() {
	in.mu.Lock()
	in.stream, in.cancel, in.plain = "", nil, false
	in.mu.Unlock()
}

// shown records an interest comment of the stream: the change posted as seq is in effect.
func (in *interest) shown(seq uint64) {
	in.mu.Lock()
	in.setAppliedLocked(seq)
	in.mu.Unlock()
}

// next is the change that brings the relay to what is needed, the stream to post it to, and
// false when there is nothing to do.
func (in *interest) next() (c change, stream, base string, ok bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.stream == "" || in.posted >= in.version {
		return change{}, "", "", false
	}
	c.Seq = in.version
	all := in.whole > 0
	if all != in.sentAll {
		c.All = &all
	}
	if !all {
		for k := range in.dirty {
			switch need := in.keys[k] > 0; {
			case need && !in.sent[k]:
				c.Add = append(c.Add, k)
			case !need && in.sent[k]:
				c.Remove = append(c.Remove, k)
			default:
				delete(in.dirty, k) // wanted and dropped again before it was posted
			}
		}
		slices.Sort(c.Add)
		slices.Sort(c.Remove)
	}
	return c, in.stream, in.base, true
}

// change is the body of an interest change (the relay's httpapi.interestChange, without the
// members that say nothing: the API documents them as absent, not null).
type change struct {
	Seq    uint64   `json:"seq"`
	All    *bool    `json:"all,omitempty"`
	Add    []string `json:"add,omitempty"`
	Remove []string `json:"remove,omitempty"`
}

// tookChange records that stream took c (unless another stream replaced it meanwhile).
func (in *interest) tookChange(stream string, c change) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.stream != stream {
		return
	}
	in.posted = max(in.posted, c.Seq)
	if c.All != nil {
		in.sentAll = *c.All
	}
	// c's keys stay dirty: the next change checks them again (one dropped meanwhile is removed
	// then) and forgets those that agree.
	for _, k := range c.Add {
		in.sent[k] = true
	}
	for _, k := range c.Remove {
		delete(in.sent, k)
	}
}

// failed ends stream, if it is still the connected one, so the next carries the whole interest.
func (in *interest) failed(stream string, err error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.stream == stream && in.cancel != nil {
		in.cancel(fmt.Errorf("%w: %v", errInterest, err))
	}
}

// adjust posts the changes of a shard's upstream interest as they come, one at a time.
func (st *shardStream) adjust(ctx context.Context) {
	in := st.interest
	for {
		select {
		case <-ctx.Done():
			return
		case <-in.kick:
		}
		for {
			c, stream, base, ok := in.next()
			if !ok {
				break
			}
			if err := st.post(ctx, base, stream, c); err != nil {
				if ctx.Err() != nil {
					return
				}
				var limited *limitedError
				if errors.As(err, &limited) {
					// The relay's rate of changes: wait as told; what changes meanwhile goes
					// in the next change, merged with this one.
					sleep(ctx, limited.wait)
					continue
				}
				st.ch.s.log.Warn("changing the upstream stream's keys failed; re-opening it", "channel", st.ch.ref.String(), "shard", st.index, "error", err.Error())
				in.failed(stream, err)
				break
			}
			in.tookChange(stream, c)
		}
	}
}

// post sends one change to the relay the stream is connected to.
func (st *shardStream) post(ctx context.Context, base, stream string, c change) error {
	body, err := json.Marshal(c)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := st.ch.send(ctx, http.MethodPost, base+"/v1/channels/"+st.ch.ref.Name+"/streams/"+stream, bytes.NewReader(body),
		http.Header{"Content-Type": {"application/json"}})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		err := fmt.Errorf("%s answered %d: %s", base, resp.StatusCode, clip(b))
		if resp.StatusCode == http.StatusTooManyRequests {
			return &limitedError{err: err, wait: retryAfter(resp.Header, 5*time.Second)}
		}
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	return nil
}

// limitedError is a change the relay refused for its limits (429): it is sent again, merged
// with what changed meanwhile, after wait.
type limitedError struct {
	err  error
	wait time.Duration
}

func (e *limitedError) Error() string { return e.err.Error() }
