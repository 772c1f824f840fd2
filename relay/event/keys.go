package event

import "strings"

// A followed key that ends with "/" is a prefix: it follows every key that starts with it
// ("team-7/" follows "team-7/alerts" and "team-7/a/b", and a key "team-7/" itself). Prefixes
// end at a slash so that routing an event costs one map lookup per slash in its key, however
// many prefixes are followed: a prefix costs no more per message than a key.

// IsPrefix reports whether a followed key is a prefix.
func IsPrefix(k string) bool { return strings.HasSuffix(k, "/") }

// EachPrefix calls f with each prefix of key that ends at a slash, shortest first, key itself
// excluded, until f returns false. It allocates nothing.
func EachPrefix(key string, f func(prefix string) bool) {
	for i := 0; i < len(key)-1; i++ {
		if key[i] == '/' && !f(key[:i+1]) {
			return
		}
	}
}

// KeySet is a fixed set of followed keys and prefixes, for matching stored events (a replay).
type KeySet struct {
	keys     map[string]bool
	prefixed bool // some entry is a prefix
}

// NewKeySet returns the set of keys (prefixes among them).
func NewKeySet(keys []string) KeySet {
	s := KeySet{keys: make(map[string]bool, len(keys))}
	for _, k := range keys {
		s.keys[k] = true
		s.prefixed = s.prefixed || IsPrefix(k)
	}
	return s
}

// Has reports whether an event of key is followed: key is in the set, or a prefix of it is.
func (s KeySet) Has(key string) bool {
	if s.keys[key] {
		return true
	}
	found := false
	if s.prefixed {
		EachPrefix(key, func(p string) bool {
			found = s.keys[p]
			return !found
		})
	}
	return found
}
