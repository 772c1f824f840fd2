package usertoken

import (
	"strings"
	"time"

	"github.com/heraldhq/herald/relay/event"
)

// Grant is what a verified token allows its holder.
type Grant struct {
	Subject string    // the token's sub: who holds it
	Expiry  time.Time // when it stops being valid (its exp)
	follow  grantSet
	publish grantSet
}

// MayFollow reports whether the grant covers following k, a key or a prefix: k is granted
// itself, or lies under a granted prefix ("team-7/" covers "team-7/a" and "team-7/a/").
func (g *Grant) MayFollow(k string) bool { return g.follow.covers(k) }

// MayPublish reports whether the grant covers publishing to key.
func (g *Grant) MayPublish(key string) bool { return g.publish.covers(key) }

// Follows lists the keys and prefixes the grant lets its holder follow (a stream that names
// none follows these).
func (g *Grant) Follows() []string { return g.follow.entries }

// grantSet is a token's list of keys and prefixes. A token grants a few (an edge keeps one per
// stream, thousands of them), so a short list is scanned; a long one is indexed.
type grantSet struct {
	entries []string
	keys    map[string]bool // set when the list is long
}

// indexFrom is the list length from which a grant indexes its keys.
const indexFrom = 16

func newGrantSet(entries []string) grantSet {
	s := grantSet{entries: entries}
	if len(entries) >= indexFrom {
		s.keys = make(map[string]bool, len(entries))
		for _, e := range entries {
			if !event.IsPrefix(e) {
				s.keys[e] = true
			}
		}
	}
	return s
}

func (s grantSet) covers(k string) bool {
	if s.keys[k] {
		return true
	}
	for _, e := range s.entries {
		if e == k && s.keys == nil || event.IsPrefix(e) && strings.HasPrefix(k, e) {
			return true
		}
	}
	return false
}
