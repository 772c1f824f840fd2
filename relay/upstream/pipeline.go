package upstream

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/relay/shardmap"
)

// pipeline coalesces concurrent publishes into one Redis pipeline (auto-pipelining): while one
// pipeline is in flight, the publishes that arrive wait, and the next pipeline carries them
// all, so the relay and Redis make one write and one read per batch instead of per publish.
// A publish that finds nothing in flight goes out at once. Publishes with ?ack=replicated do not
// come here: their WAIT must follow their own write on their own connection.
type pipeline struct {
	p      *Publisher
	reqs   chan *pendingCall
	stop   <-chan struct{} // closed when the pipeline stops taking calls
	rounds atomic.Int64    // round trips made (tests: fewer than calls under concurrency)
}

type pendingCall struct {
	keys  []string
	args  []any
	reply any
	err   error
	done  chan struct{}
}

// maxBatch bounds one pipeline; pipelineTimeout one round trip of it (a caller that stops
// waiting earlier gets its context's error; its publish may still be stored, as with any call
// whose answer is lost, and its Idempotency-Key makes the retry safe).
const (
	maxBatch        = 128
	pipelineTimeout = 10 * time.Second
)

// AutoPipeline makes Publish coalesce concurrent acknowledged-by-the-leader publishes into
// pipelines, until ctx ends. Without it every publish is its own round trip.
func (p *Publisher) AutoPipeline(ctx context.Context) {
	pl := &pipeline{p: p, reqs: make(chan *pendingCall, maxBatch), stop: ctx.Done()}
	p.pipe = pl
	go pl.run(ctx)
}

// call queues one FCALL and waits for its reply.
func (pl *pipeline) call(ctx context.Context, keys []string, args []any) (any, error) {
	c := &pendingCall{keys: keys, args: args, done: make(chan struct{})}
	select {
	case pl.reqs <- c:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-pl.stop:
		return nil, errPipelineStopped
	}
	select {
	case <-c.done:
		return c.reply, c.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-pl.stop:
		return nil, errPipelineStopped
	}
}

var errPipelineStopped = errors.New("the relay is shutting down")

func (pl *pipeline) run(ctx context.Context) {
	batch := make([]*pendingCall, 0, maxBatch)
	for {
		select {
		case <-ctx.Done():
			return
		case first := <-pl.reqs:
			batch = append(batch[:0], first)
		}
	more:
		for len(batch) < maxBatch {
			select {
			case c := <-pl.reqs:
				batch = append(batch, c)
			default:
				break more
			}
		}
		pl.flush(ctx, batch)
		clear(batch)
	}
}

func (pl *pipeline) flush(ctx context.Context, batch []*pendingCall) {
	ctx, cancel := context.WithTimeout(ctx, pipelineTimeout)
	defer cancel()
	pl.rounds.Add(1)
	if len(batch) == 1 {
		c := batch[0]
		c.reply, c.err = pl.p.fcall(ctx, pl.p.cluster, c.keys, c.args)
		close(c.done)
		return
	}
	pl.p.pipelined(ctx, pl.p.cluster, batch)
	for _, c := range batch {
		close(c.done)
	}
}

// pipelined sends calls in one pipeline through c (the cluster client or a connection to the
// slot's master) and sets each one's reply.
func (p *Publisher) pipelined(ctx context.Context, c redis.Cmdable, calls []*pendingCall) {
	cmds := make([]*redis.Cmd, len(calls))
	_, _ = c.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, call := range calls {
			cmds[i] = pipe.FCall(ctx, shardmap.PublishFunction, call.keys, call.args...)
		}
		return nil
	})
	for i, call := range calls {
		call.reply, call.err = cmds[i].Result()
		if call.err != nil && strings.Contains(call.err.Error(), "Function not found") {
			call.reply, call.err = p.fcall(ctx, c, call.keys, call.args) // loads it where it may
		}
	}
}
