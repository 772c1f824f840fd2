package upstream

import "github.com/heraldhq/herald/relay/cursor"

// deliveredRing remembers the most recent IDs the processor delivered, in delivery order, to
// find the newest entry that survived a rollback. IDs in it ascend (it is reset at a rollback).
type deliveredRing struct {
	ids   []cursor.ID
	start int // index of the oldest ID
	n     int
}

func newDeliveredRing(size int) *deliveredRing { return &deliveredRing{ids: make([]cursor.ID, size)} }

func (r *deliveredRing) add(id cursor.ID) {
	if r.n < len(r.ids) {
		r.ids[(r.start+r.n)%len(r.ids)] = id
		r.n++
		return
	}
	r.ids[r.start] = id
	r.start = (r.start + 1) % len(r.ids)
}

func (r *deliveredRing) at(i int) cursor.ID { return r.ids[(r.start+i)%len(r.ids)] }

func (r *deliveredRing) reset() { r.start, r.n = 0, 0 }

// oldest returns the oldest remembered ID and whether there is one.
func (r *deliveredRing) oldest() (cursor.ID, bool) {
	if r.n == 0 {
		return cursor.ID{}, false
	}
	return r.at(0), true
}

// contains reports whether id was delivered and is still remembered (binary search).
func (r *deliveredRing) contains(id cursor.ID) bool {
	lo, hi := 0, r.n
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if r.at(mid).Less(id) {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo < r.n && r.at(lo) == id
}
