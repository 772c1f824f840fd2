package bench

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald/relay/event"
	"github.com/heraldhq/herald/relay/upstream"
)

// Sender publishes one stamped message and reports whether it was acknowledged.
type Sender func(ctx context.Context, seq uint64, ts int64) bool

var pubTransport = &http.Transport{
	DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	MaxIdleConnsPerHost: 256,
	DisableCompression:  true,
}

var pubClient = &http.Client{Transport: pubTransport, Timeout: 10 * time.Second}

// HTTPSender POSTs to a relay or sidecar (url ends in /messages?key=...). With retry, a failed
// publish is repeated with the same Idempotency-Key until it is acknowledged or retry passes.
func HTTPSender(url string, retry time.Duration) Sender {
	return func(ctx context.Context, seq uint64, ts int64) bool {
		body := Payload(seq, ts)
		deadline := time.Now().Add(retry)
		for {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			if retry > 0 {
				req.Header.Set("Idempotency-Key", "bench-"+strconv.FormatUint(seq, 10))
			}
			resp, err := pubClient.Do(req)
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusAccepted {
					return true
				}
			}
			if retry <= 0 || time.Now().After(deadline) || ctx.Err() != nil {
				return false
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// DirectSender runs the relay's own publish script through go-redis (no relay, no HTTP): the
// raw-Redis baseline of publishing. waitReplicas > 0 adds WAIT on the same connection.
func DirectSender(p *upstream.Publisher, waitReplicas int) Sender {
	return KeyedDirectSender(p, func(uint64) string { return "k" }, waitReplicas)
}

// KeyedDirectSender is DirectSender with the key of each message from keyOf.
func KeyedDirectSender(p *upstream.Publisher, keyOf func(seq uint64) string, waitReplicas int) Sender {
	return func(ctx context.Context, seq uint64, ts int64) bool {
		_, err := p.Publish(ctx, upstream.PublishRequest{
			Key: keyOf(seq), Type: event.DefaultType, ContentType: "application/json", Data: Payload(seq, ts),
			WaitReplicas: waitReplicas, WaitTimeout: time.Second,
		})
		return err == nil
	}
}

// Paced publishes seqs base, base+1, ... at rate per second for dur with workers concurrent
// senders; each payload carries its scheduled send time. It returns the acknowledged seqs and
// the next free seq.
func Paced(ctx context.Context, send Sender, base uint64, rate float64, dur time.Duration, workers int) (acked []uint64, next uint64) {
	type job struct {
		seq uint64
		ts  int64
	}
	jobs := make(chan job, 1<<16)
	total := uint64(rate * dur.Seconds())
	go func() {
		defer close(jobs)
		start := time.Now()
		var i uint64
		for i < total {
			due := uint64(time.Since(start).Seconds()*rate) + 1
			for ; i < due && i < total; i++ {
				sched := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
				select {
				case jobs <- job{base + i, sched.UnixNano()}:
				case <-ctx.Done():
					return
				}
			}
			time.Sleep(time.Millisecond)
		}
	}()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []uint64
			for j := range jobs {
				if send(ctx, j.seq, j.ts) {
					mine = append(mine, j.seq)
				}
			}
			mu.Lock()
			acked = append(acked, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return acked, base + total
}

// ClosedLoop runs workers senders back to back for dur and returns acknowledged publishes and
// the merged acknowledgement latency.
func ClosedLoop(ctx context.Context, send Sender, base uint64, dur time.Duration, workers int) (acked int64, lat Merged, next uint64) {
	return ClosedLoopBatches(ctx, OneAtATime(send), 1, base, dur, workers)
}

// OneAtATime is send as a BatchSender of batches of one.
func OneAtATime(send Sender) BatchSender {
	return func(ctx context.Context, first uint64, _ int, ts int64) bool { return send(ctx, first, ts) }
}

// BatchSender publishes the n stamped messages first, first+1, ... in one call and reports
// whether all were acknowledged.
type BatchSender func(ctx context.Context, first uint64, n int, ts int64) bool

// ClosedLoopBatches is ClosedLoop for senders of size messages per call; acked counts messages,
// the latency is per call.
func ClosedLoopBatches(ctx context.Context, send BatchSender, size int, base uint64, dur time.Duration, workers int) (acked int64, lat Merged, next uint64) {
	var seq atomic.Uint64
	seq.Store(base)
	var mu sync.Mutex
	var wg sync.WaitGroup
	end := time.Now().Add(dur)
	var n atomic.Int64
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var h Hist
			for time.Now().Before(end) {
				first := seq.Add(uint64(size)) - uint64(size)
				t0 := time.Now()
				if send(ctx, first, size, t0.UnixNano()) {
					h.Record(time.Since(t0))
					n.Add(int64(size))
				}
			}
			mu.Lock()
			lat.Add(&h)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return n.Load(), lat, seq.Load()
}

// HTTPBatchSender POSTs n messages as one CloudEvents batch (application/cloudevents-batch+json)
// to a relay or sidecar (url ends in /messages?key=...).
func HTTPBatchSender(url string) BatchSender {
	return func(ctx context.Context, first uint64, n int, ts int64) bool {
		body := make([]byte, 0, n*(MessageBytes+16)+2)
		body = append(body, '[')
		for i := range n {
			if i > 0 {
				body = append(body, ',')
			}
			body = append(body, `{"data":`...)
			body = append(body, Payload(first+uint64(i), ts)...)
			body = append(body, '}')
		}
		body = append(body, ']')
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		req.Header.Set("Content-Type", event.BatchMediaType)
		resp, err := pubClient.Do(req)
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusAccepted
	}
}
