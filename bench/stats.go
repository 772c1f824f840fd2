package bench

import (
	"math/bits"
	"time"
)

// Latencies are recorded in microseconds in a log-linear histogram: exact below 32 µs, then
// 32 buckets per power of two (about 3% resolution), up to about 19 hours.
const (
	histSubBits = 5
	histSub     = 1 << histSubBits
	histBuckets = (37 - histSubBits) << histSubBits
)

// Hist is a latency histogram. One per subscriber (no sharing on the hot path), merged at the end.
type Hist struct {
	counts [histBuckets]uint32
	max    uint64
}

func histIndex(us uint64) int {
	if us < histSub {
		return int(us)
	}
	e := bits.Len64(us) - 1
	i := (e-histSubBits+1)<<histSubBits | int((us>>(e-histSubBits))&(histSub-1))
	if i >= histBuckets {
		return histBuckets - 1
	}
	return i
}

// histValue is the middle of bucket i, in microseconds.
func histValue(i int) uint64 {
	if i < histSub {
		return uint64(i)
	}
	e := i>>histSubBits + histSubBits - 1
	lo := uint64(histSub|i&(histSub-1)) << (e - histSubBits)
	return lo + (uint64(1)<<(e-histSubBits))/2
}

// Record adds one latency.
func (h *Hist) Record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	us := uint64(d / time.Microsecond)
	h.counts[histIndex(us)]++
	if us > h.max {
		h.max = us
	}
}

// Merged is the sum of many Hists.
type Merged struct {
	counts [histBuckets]uint64
	n      uint64
	max    uint64
}

// Add merges h.
func (m *Merged) Add(h *Hist) {
	for i, c := range h.counts {
		if c != 0 {
			m.counts[i] += uint64(c)
			m.n += uint64(c)
		}
	}
	m.max = max(m.max, h.max)
}

// Quantile returns the q-quantile (0..1) in milliseconds; max for q >= 1.
func (m *Merged) Quantile(q float64) float64 {
	if m.n == 0 {
		return 0
	}
	if q >= 1 {
		return float64(m.max) / 1000
	}
	want := uint64(q*float64(m.n)) + 1
	var seen uint64
	for i, c := range m.counts {
		seen += c
		if seen >= want {
			return float64(min(histValue(i), m.max)) / 1000
		}
	}
	return float64(m.max) / 1000
}

// Bitmap remembers which sequence numbers (relative to a base) a subscriber saw.
type Bitmap struct{ words []uint64 }

// Set marks i and reports whether it was set already.
func (b *Bitmap) Set(i uint64) (dup bool) {
	w := i / 64
	if w >= uint64(len(b.words)) {
		n := max(2*len(b.words), int(w)+1, 64)
		nw := make([]uint64, n)
		copy(nw, b.words)
		b.words = nw
	}
	bit := uint64(1) << (i % 64)
	dup = b.words[w]&bit != 0
	b.words[w] |= bit
	return dup
}

// Has reports whether i was set.
func (b *Bitmap) Has(i uint64) bool {
	w := i / 64
	return w < uint64(len(b.words)) && b.words[w]&(uint64(1)<<(i%64)) != 0
}
