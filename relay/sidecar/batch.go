package sidecar

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"

	"github.com/heraldhq/herald/relay/problem"
	"github.com/heraldhq/herald/relay/publish"
	"github.com/heraldhq/herald/relay/shardmap"
)

// publishBatch splits a batch of CloudEvents by the shard of each event's key and sends each
// shard's part, in its order, to that shard's relays at the same time. Every event is checked
// here first, so a bad one stores nothing. The app gets the relays' results merged back into the
// batch's order: 202 when every event was stored, else the problem the relay would answer
// (publish.WriteBatch) with each event's fate.
func (s *Sidecar) publishBatch(w http.ResponseWriter, r *http.Request, ch *channel, m *shardmap.Map, params publish.Params, body []byte, maxBytes int64) {
	req, bad := publish.Read(params, r.Header, body, maxBytes, nil)
	if bad != nil {
		problem.WriteWith(w, bad.Status, bad.Detail, bad.Ext)
		return
	}
	parts := map[int][]int{} // shard -> indices of its events, in order
	anyWithoutID := false
	for i := range req.Events {
		shard := m.ShardFor(req.Events[i].Key)
		parts[shard] = append(parts[shard], i)
		anyWithoutID = anyWithoutID || req.Events[i].ProducerID() == ""
	}
	hdr := http.Header{}
	for h, v := range r.Header {
		if forwarded(h) {
			hdr[h] = v
		}
	}
	// Events with an id are deduplicated by it; the others by a key and their index, which must
	// be the app's or one of the sidecar's own for its retries.
	idem, own := params.IdempotencyKey, false
	if idem == "" && anyWithoutID {
		idem, own = newIdempotencyKey(), true
	}
	if idem != "" {
		w.Header().Set(publish.IdempotencyKeyHeader, idem)
	}

	ctx, cancel := context.WithTimeout(r.Context(), s.opt.PublishTimeout)
	defer cancel()
	results := make([]publish.Outcome, len(req.Events))
	var passThrough *relayAnswer // a shard's answer that is not about events: given as it is when it is the only one
	var mu sync.Mutex
	var wg sync.WaitGroup
	for shard, idx := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			part := bytes.NewBuffer(make([]byte, 0, len(body)/len(req.Events)*len(idx)+2))
			part.WriteByte('[')
			for n, i := range idx {
				if n > 0 {
					part.WriteByte(',')
				}
				part.Write(req.Events[i].Raw)
			}
			part.WriteByte(']')
			h := hdr.Clone()
			if idem != "" {
				h.Set(publish.IdempotencyKeyHeader, shardPartKey(idem, shard))
			}
			if own {
				h.Set(publish.RetryKeyHeader, "1")
			}
			ans, lastErr := s.forward(ctx, ch, shard, r.URL.RawQuery, part.Bytes(), h)
			if ans == nil {
				fail := publish.Failed(http.StatusServiceUnavailable, "no relay of shard "+strconv.Itoa(shard)+" took it (last: "+lastErr+")")
				for _, i := range idx {
					results[i] = fail
				}
				return
			}
			if outcomes, ok := publish.ParseBatchAnswer(ans.body); ok && len(outcomes) == len(idx) {
				for n, i := range idx {
					results[i] = outcomes[n]
					if own && ans.retried && req.Events[i].ProducerID() == "" {
						results[i].Duplicate = false // our own retry is not the app's duplicate
					}
				}
				return
			}
			mu.Lock()
			if len(parts) == 1 {
				passThrough = ans
			}
			mu.Unlock()
			var got struct {
				Detail string `json:"detail"`
			}
			_ = json.Unmarshal(ans.body, &got)
			status := ans.status
			if got.Detail == "" || status < 400 {
				got.Detail = "shard " + strconv.Itoa(shard) + "'s relay answered " + strconv.Itoa(ans.status) + ": " + clip(ans.body)
			}
			if status < 400 { // an answer that is not about these events: their fate is unknown
				status = http.StatusServiceUnavailable
			}
			fail := publish.Failed(status, got.Detail)
			for _, i := range idx {
				results[i] = fail
			}
		}()
	}
	wg.Wait()
	if passThrough != nil {
		passThrough.writeTo(w)
		return
	}
	stored := 0
	for _, o := range results {
		if o.Stored() {
			stored++
		}
	}
	s.met.Published.Add(float64(stored))
	publish.WriteBatch(w, results)
}

// shardPartKey is the Idempotency-Key of one shard's part of a batch sent with key: the same for
// the same batch while the shard map stays, so the app's retry through the sidecar stores nothing
// twice.
func shardPartKey(key string, shard int) string {
	sum := sha256.Sum256([]byte(key + "\x00shard " + strconv.Itoa(shard)))
	return "s-" + hex.EncodeToString(sum[:16])
}
