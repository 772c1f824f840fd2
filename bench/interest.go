package bench

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"time"
)

// (g) interest routing: sidecar-like upstreams (interest streams of the shard relay) each
// following one of many keys, at a rate spread evenly over the keys, published straight into
// Redis so that the relay's CPU is its fan-out side only. Beside it, in the same run: the same
// upstreams following every key (what a sidecar's upstream did before interest streams), and
// the relay with no subscriber at all (its floor: reading every message from Redis).
const (
	interestKeys    = 10_000
	interestStreams = 500
	interestRate    = 1000.0
)

// interestKey is the key of message seq: the keys take turns, so each gets rate/keys per second.
func interestKey(seq uint64) string { return "u" + strconv.FormatUint(seq%interestKeys, 10) }

// followed is the key upstream i follows: spread over the key space.
func followed(i int) uint64 { return uint64(i * (interestKeys / interestStreams)) }

func (r *Runner) scenarioInterest(ctx context.Context) error {
	send := KeyedDirectSender(r.pub, interestKey, 0)
	events := r.relay.URL + "/v1/channels/" + channel + "/events"

	// The floor: the relay reads every message and has nobody to send it to.
	base := r.nextBase(0)
	var prof chan error
	if r.cfg.CPUProfile != "" && r.cfg.ProfileOf == "g" {
		prof = make(chan error, 1)
		go func() { prof <- r.profile(r.cfg.Duration) }()
	}
	cpu0 := CPUOf(r.relay.PID())
	t0 := time.Now()
	acked, next := Paced(ctx, send, base, interestRate, r.cfg.Duration, 8)
	r.seq = next
	floor := CPUOf(r.relay.PID()) - cpu0
	if prof != nil {
		if err := <-prof; err != nil {
			r.cfg.Logf("CPU profile: %v", err)
		}
	}
	floorWall := time.Since(t0)
	r.rep.Rows = append(r.rep.Rows, Row{Scenario: "(g) interest", Path: pathHerald + ", no subscriber", Offered: interestRate,
		Achieved: float64(len(acked)) / floorWall.Seconds(), Unit: "msgs/s read from Redis", ServerCPU: floor.Seconds(), RedisSubs: -1,
		Note: fmt.Sprintf("the relay's floor: %.1f µs of CPU per message read from Redis", floor.Seconds()/float64(max(len(acked), 1))*1e6)})

	interest, err := r.interestRun(ctx, send, "interest streams, 1 key each", func(i int) string {
		return events + "?interest=keys&key=" + url.QueryEscape(interestKey(followed(i)))
	}, func(i int, seq uint64) bool { return seq%interestKeys == followed(i) })
	if err != nil {
		return err
	}
	whole, err := r.interestRun(ctx, send, "whole-shard streams (before)", func(int) string { return events + "?interest=all" }, nil)
	if err != nil {
		return err
	}
	// Per interested delivery: the relay's CPU, and its CPU above the floor (what routing and
	// writing cost), against the relay-only fan-out of (a).
	above := interest.row.ServerCPU - floor.Seconds()*interest.wall.Seconds()/floorWall.Seconds()
	cores := func(m interestMeasured) float64 { return m.row.ServerCPU / m.wall.Seconds() }
	interest.row.Note = fmt.Sprintf("egress %.2fx the interested deliveries' bytes (target <= 2x); relay %.3f cores (floor %.3f, whole-shard streams %.3f); %.1f µs CPU per interested delivery, %.1f µs above the floor",
		interest.egress, cores(interest), floor.Seconds()/floorWall.Seconds(), cores(whole), interest.row.CPUPerM, above/float64(max(interest.res.Delivered, 1))*1e6)
	if a, ok := r.fanoutRow(); ok && a.CPUPerM > 0 {
		interest.row.Ratio = a.CPUPerM / interest.row.CPUPerM
		interest.row.Note += fmt.Sprintf(" (vs %.2f µs per delivery in (a) %s: ratio column is (a)'s CPU per delivery over this one's)", a.CPUPerM, count(float64(a.Subscribers)))
	}
	whole.row.Note = fmt.Sprintf("egress %.0fx the bytes its subscribers' own keys needed; deliveries are every message to every stream", whole.egressWanted)
	r.rep.Rows = append(r.rep.Rows, interest.row, whole.row)
	r.cfg.Logf("(g) interest: egress %.2fx interested, %.2f µs CPU per interested delivery; whole-shard egress %.0fx", interest.egress, interest.row.CPUPerM, whole.egressWanted)
	return nil
}

type interestMeasured struct {
	row          Row
	res          Result
	wall         time.Duration
	egress       float64 // bytes read / bytes of the messages delivered
	egressWanted float64 // bytes read / bytes of the messages each stream's own key needed
}

// interestRun opens interestStreams streams at urlOf, primes each with one message of the key
// it follows, publishes for the configured duration and measures egress and relay CPU.
func (r *Runner) interestRun(ctx context.Context, send Sender, path string, urlOf func(int) string, wants func(int, uint64) bool) (interestMeasured, error) {
	prime := r.nextBase(2 * interestKeys)
	base := r.nextBase(0)
	set, err := OpenSSEEach(urlOf, interestStreams, 64, base)
	if err != nil {
		return interestMeasured{}, fmt.Errorf("(g) %s: %w", path, err)
	}
	defer set.Close()
	set.Wants = wants
	// Prime each stream with a message of its key (seqs below base, not counted).
	aligned := prime + (interestKeys-prime%interestKeys)%interestKeys
	for i := range interestStreams {
		send(ctx, aligned+followed(i), time.Now().UnixNano())
	}
	if !set.waitPrimed(10 * time.Second) {
		return interestMeasured{}, fmt.Errorf("(g) %s: not every stream received its priming message", path)
	}
	read0, _ := set.Bytes()
	cpu0, self0 := CPUOf(r.relay.PID()), CPUOf(os.Getpid())
	t0 := time.Now()
	acked, next := Paced(ctx, send, base, interestRate, r.cfg.Duration, 8)
	r.seq = next
	interested := int64(0) // (message, stream) pairs where the stream follows the message's key
	for _, seq := range acked {
		if k := seq % interestKeys; k%(interestKeys/interestStreams) == 0 {
			interested++
		}
	}
	want := interested
	if wants == nil {
		want = int64(len(acked)) * interestStreams
	}
	waitTotal(set, want, 10*time.Second)
	wall := time.Since(t0)
	cpu, self := CPUOf(r.relay.PID())-cpu0, CPUOf(os.Getpid())-self0
	read1, msgBytes := set.Bytes()
	set.Close()
	res := set.Collect(acked)
	row := Row{Scenario: "(g) interest", Path: pathHerald + ", " + path, Subscribers: interestStreams, Offered: interestRate,
		Achieved: float64(res.Delivered) / wall.Seconds(), Unit: "deliveries/s", ServerCPU: cpu.Seconds(),
		P50: res.Lat.Quantile(0.5), P90: res.Lat.Quantile(0.9), P99: res.Lat.Quantile(0.99), Max: res.Lat.Quantile(1),
		Lost: res.Lost, Dup: res.Dup, OOO: res.OOO, Slow: res.Slow, Gaps: res.Gaps, RedisSubs: r.shardSubs(ctx),
		LoadgenCPU: 100 * self.Seconds() / wall.Seconds()}
	if res.Delivered > 0 && cpu > 0 {
		row.CPUPerM = cpu.Seconds() / float64(res.Delivered) * 1e6
		row.PerCore = float64(res.Delivered) / cpu.Seconds()
	}
	m := interestMeasured{row: row, res: res, wall: wall}
	if msgBytes > 0 {
		m.egress = float64(read1-read0) / float64(msgBytes)
		// What the streams' own keys needed, at the average message size.
		m.egressWanted = float64(read1-read0) / (float64(msgBytes) / float64(res.Delivered) * float64(max(interested, 1)))
	}
	return m, nil
}

// waitTotal waits until the set's subscribers have want messages in all (or within passes).
func waitTotal(set *SubSet, want int64, within time.Duration) {
	deadline := time.Now().Add(within)
	for set.Delivered() < want && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
}

// fanoutRow is the first relay-only (a) row of this run, if (a) ran.
func (r *Runner) fanoutRow() (Row, bool) {
	for _, row := range r.rep.Rows {
		if row.Scenario == "(a) fan-out" && row.Path == pathHerald {
			return row, true
		}
	}
	return Row{}, false
}
