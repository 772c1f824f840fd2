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

	"github.com/heraldhq/herald/relay/event"
	"github.com/heraldhq/herald/relay/httpapi"
	"github.com/heraldhq/herald/relay/shardmap"
)

// publishBatch splits a batch of CloudEvents by the shard of each event's key and sends each
// shard's part, in its order, to that shard's relays at the same time. Every event is checked
// here first, so a bad one stores nothing. The app gets the relays' results merged back into the
// batch's order: 202 when every event was stored, else the problem the relay would answer
// (WriteBatchProblem) with each event's fate.
func (s *Sidecar) publishBatch(w http.ResponseWriter, r *http.Request, ch *channel, m *shardmap.Map, maxBytes int64) {
	limit := httpapi.BatchLimit(maxBytes)
	body, ok := httpapi.ReadBody(w, r, limit, "batch is over "+strconv.FormatInt(limit, 10)+" bytes; send smaller batches")
	if !ok {
		return
	}
	raws, err := event.SplitBatch(body)
	if err != nil {
		httpapi.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	queryKey := r.URL.Query().Get("key")
	if queryKey != "" {
		if err := event.ValidateField("key", queryKey, event.MaxKeyBytes); err != nil {
			httpapi.WriteError(w, http.StatusBadRequest, "query parameter key: "+err.Error())
			return
		}
	}
	parts := map[int][]int{} // shard -> indices of its events, in order
	withoutID := make([]bool, len(raws))
	anyWithoutID := false
	for i, raw := range raws {
		at := "event " + strconv.Itoa(i) + ": "
		ev, err := event.ParseBatchEvent(r.Header, raw)
		if err != nil {
			httpapi.WriteError(w, http.StatusBadRequest, at+err.Error())
			return
		}
		if int64(len(ev.Data)) > maxBytes {
			httpapi.WriteError(w, http.StatusRequestEntityTooLarge, at+"data of "+strconv.Itoa(len(ev.Data))+" bytes is over this channel's maxMessageBytes ("+strconv.FormatInt(maxBytes, 10)+")")
			return
		}
		key, problem := httpapi.BatchEventKey(ev.Subject, queryKey)
		if problem != "" {
			httpapi.WriteError(w, http.StatusBadRequest, at+problem)
			return
		}
		shard := m.ShardFor(key)
		parts[shard] = append(parts[shard], i)
		withoutID[i] = ev.Attrs.StringValue("id") == ""
		anyWithoutID = anyWithoutID || withoutID[i]
	}
	hdr := http.Header{}
	for h, v := range r.Header {
		if forwarded(h) {
			hdr[h] = v
		}
	}
	// Events with an id are deduplicated by it; the others by a key and their index, which must
	// be the app's or one of the sidecar's own for its retries.
	idem, own := r.Header.Get("Idempotency-Key"), false
	if idem != "" || len(r.Header.Values("Idempotency-Key")) > 0 {
		if err := httpapi.ValidIdempotencyKey(idem); err != nil {
			httpapi.WriteError(w, http.StatusBadRequest, "Idempotency-Key header: "+err.Error())
			return
		}
	} else if anyWithoutID {
		idem, own = newIdempotencyKey(), true
	}
	if idem != "" {
		w.Header().Set("Idempotency-Key", idem)
	}

	ctx, cancel := context.WithTimeout(r.Context(), s.opt.PublishTimeout)
	defer cancel()
	results := make([]json.RawMessage, len(raws))
	var passThrough *relayAnswer // a shard's answer that is not about events: given as it is when it is the only one
	var mu sync.Mutex
	var wg sync.WaitGroup
	for shard, idx := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			part := bytes.NewBuffer(make([]byte, 0, len(body)/len(raws)*len(idx)+2))
			part.WriteByte('[')
			for n, i := range idx {
				if n > 0 {
					part.WriteByte(',')
				}
				part.Write(raws[i])
			}
			part.WriteByte(']')
			h := hdr.Clone()
			if idem != "" {
				h.Set("Idempotency-Key", shardPartKey(idem, shard))
			}
			if own {
				h.Set(httpapi.RetryKeyHeader, "1")
			}
			ans, lastErr := s.forward(ctx, ch, shard, r.URL.RawQuery, part.Bytes(), h)
			if ans == nil {
				fail := httpapi.AppendFailure(nil, http.StatusServiceUnavailable, "no relay of shard "+strconv.Itoa(shard)+" took it (last: "+lastErr+")")
				for _, i := range idx {
					results[i] = fail
				}
				return
			}
			var got struct {
				Events []json.RawMessage `json:"events"`
				Detail string            `json:"detail"`
			}
			if json.Unmarshal(ans.body, &got) == nil && len(got.Events) == len(idx) {
				for n, i := range idx {
					results[i] = got.Events[n]
					if own && ans.retried && withoutID[i] {
						results[i] = bytes.TrimSuffix(withoutDuplicate(got.Events[n]), []byte("\n")) // our own retry is not the app's duplicate
					}
				}
				return
			}
			mu.Lock()
			if len(parts) == 1 {
				passThrough = ans
			}
			mu.Unlock()
			status := ans.status
			if got.Detail == "" || status < 400 {
				got.Detail = "shard " + strconv.Itoa(shard) + "'s relay answered " + strconv.Itoa(ans.status) + ": " + clip(ans.body)
			}
			if status < 400 { // an answer that is not about these events: their fate is unknown
				status = http.StatusServiceUnavailable
			}
			fail := httpapi.AppendFailure(nil, status, got.Detail)
			for _, i := range idx {
				results[i] = fail
			}
		}()
	}
	wg.Wait()
	if passThrough != nil {
		ans := passThrough
		ans.writeTo(w)
		return
	}
	stored, status, conflicts := 0, 0, 0
	for _, res := range results {
		var r struct {
			Status int `json:"status"`
		}
		_ = json.Unmarshal(res, &r)
		switch {
		case r.Status == 0:
			stored++
			continue
		case r.Status == http.StatusConflict:
			conflicts++
		}
		switch {
		case r.Status >= 500:
			status = http.StatusServiceUnavailable
		case status == 0:
			status = r.Status
		}
	}
	s.met.Published.Add(float64(stored))
	if stored < len(results) {
		httpapi.WriteBatchProblem(w, status, stored, conflicts, results)
		return
	}
	out, _ := json.Marshal(struct {
		Events []json.RawMessage `json:"events"`
	}{results})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(out)+1))
	w.WriteHeader(http.StatusAccepted)
	_, _ = w.Write(append(out, '\n'))
}

// shardPartKey is the Idempotency-Key of one shard's part of a batch sent with key: the same for
// the same batch while the shard map stays, so the app's retry through the sidecar stores nothing
// twice.
func shardPartKey(key string, shard int) string {
	sum := sha256.Sum256([]byte(key + "\x00shard " + strconv.Itoa(shard)))
	return "s-" + hex.EncodeToString(sum[:16])
}
