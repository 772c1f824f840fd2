package upstream

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/relay/cursor"
	"github.com/heraldhq/herald/relay/event"
	"github.com/heraldhq/herald/relay/shardmap"
)

// StreamInfo is what XINFO STREAM says about a shard stream, enough to tell "the cursor was
// trimmed away" from "nothing new" and to notice IDs going backwards.
type StreamInfo struct {
	Exists        bool
	Length        int64
	FirstEntry    cursor.ID // oldest retained entry (zero if empty)
	LastGenerated cursor.ID // last ID ever generated (survives trimming)
	MaxDeleted    cursor.ID // highest ID ever trimmed or deleted
	EntriesAdded  int64
}

// RetainedAfter is the cursor just before the oldest retained entry: reading after it returns
// the whole retained stream, and a subscriber at it has missed nothing that was trimmed.
func (i StreamInfo) RetainedAfter() cursor.ID {
	if i.Length == 0 {
		return i.LastGenerated
	}
	return i.FirstEntry.Prev()
}

// Trimmed reports whether entries with IDs after the cursor were removed. Redis 7.0 does not
// move max-deleted-entry-id when MAXLEN/MINID trims (only XDEL does; checked on 7.0.15), so
// trimming is recognised as "entries were removed (entries-added > length) and the cursor is
// before the oldest retained entry". That can report a gap for a cursor that was itself the
// newest trimmed entry when the next entry has a later millisecond: a false alarm is sent
// rather than a hole hidden.
func (i StreamInfo) Trimmed(after cursor.ID) bool {
	if after.Less(i.MaxDeleted) {
		return true
	}
	return i.EntriesAdded > i.Length && after.Less(i.RetainedAfter())
}

// streamInfo reads XINFO STREAM; a stream that does not exist yet is an empty StreamInfo.
func streamInfo(ctx context.Context, c redis.Cmdable, key string) (StreamInfo, error) {
	xi, err := c.XInfoStream(ctx, key).Result()
	if err != nil {
		if strings.Contains(err.Error(), "no such key") {
			return StreamInfo{}, nil
		}
		return StreamInfo{}, fmt.Errorf("XINFO STREAM %s: %w", key, err)
	}
	info := StreamInfo{Exists: true, Length: xi.Length, EntriesAdded: xi.EntriesAdded}
	if info.LastGenerated, err = parseRedisID(xi.LastGeneratedID); err != nil {
		return StreamInfo{}, err
	}
	if info.MaxDeleted, err = parseRedisID(xi.MaxDeletedEntryID); err != nil {
		return StreamInfo{}, err
	}
	if xi.FirstEntry.ID != "" {
		if info.FirstEntry, err = parseRedisID(xi.FirstEntry.ID); err != nil {
			return StreamInfo{}, err
		}
	}
	return info, nil
}

func parseRedisID(s string) (cursor.ID, error) {
	if s == "" {
		return cursor.ID{}, nil
	}
	id, err := cursor.Parse(s)
	if err != nil {
		return cursor.ID{}, fmt.Errorf("redis returned stream ID %q: %w", s, err)
	}
	return id, nil
}

// readAfter returns up to count entries with IDs strictly after id (XRANGE key (id + COUNT n).
func readAfter(ctx context.Context, c redis.Cmdable, key string, after cursor.ID, count int64) ([]event.Message, error) {
	xs, err := c.XRangeN(ctx, key, after.Exclusive(), "+", count).Result()
	if err != nil {
		return nil, fmt.Errorf("XRANGE %s %s: %w", key, after.Exclusive(), err)
	}
	return toMessages(xs)
}

func toMessages(xs []redis.XMessage) ([]event.Message, error) {
	out := make([]event.Message, 0, len(xs))
	for _, x := range xs {
		id, err := parseRedisID(x.ID)
		if err != nil {
			return nil, err
		}
		out = append(out, event.FromStreamFields(id, x.Values))
	}
	return out, nil
}

// ErrNoHistory is History's answer on a channel that keeps no per-key history, or for more
// events per key than it keeps.
var ErrNoHistory = errors.New("the channel keeps no per-key history that deep")

// HistoryDepth is how many of each key's newest events the channel indexes (0: none).
func (s *Subscription) HistoryDepth() int { return s.history }

// History returns the last n events of each of keys (keys of this shard) with IDs up to
// before (all of them when before is zero), oldest first: what a stream shows before its live
// events (?history=N). It reads each key's history index (shardmap.HistoryKey), then those
// entries; entries the stream's retention removed are left out.
func (s *Subscription) History(ctx context.Context, keys []string, n int, before cursor.ID) ([]event.Message, error) {
	if n < 1 || n > s.history {
		return nil, ErrNoHistory
	}
	pipe := s.cluster.Pipeline()
	lists := make([]*redis.StringSliceCmd, len(keys))
	for i, k := range keys {
		lists[i] = pipe.LRange(ctx, shardmap.HistoryKey(s.shard.HashTag, k), 0, int64(s.history-1))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("reading history indexes: %w", err)
	}
	var ids []string
	for _, l := range lists {
		taken := 0
		for _, raw := range l.Val() { // newest first
			id, err := cursor.Parse(raw)
			if err != nil || (!before.IsZero() && before.Less(id)) {
				continue // newer than the stream's start: it comes live
			}
			ids = append(ids, raw)
			if taken++; taken == n {
				break
			}
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	pipe = s.cluster.Pipeline()
	entries := make([]*redis.XMessageSliceCmd, len(ids))
	for i, id := range ids {
		entries[i] = pipe.XRangeN(ctx, s.shard.Stream, id, id, 1)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("reading history entries: %w", err)
	}
	var xs []redis.XMessage
	for _, e := range entries {
		xs = append(xs, e.Val()...) // none: trimmed by retention
	}
	msgs, err := toMessages(xs)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(msgs, func(a, b event.Message) int { return a.ID.Compare(b.ID) })
	return msgs, nil
}
