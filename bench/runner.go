package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/capacity"
	"github.com/heraldhq/herald/internal/testing/rediscluster"
	"github.com/heraldhq/herald/relay/shardmap"
	"github.com/heraldhq/herald/relay/upstream"
)

// Config is what `make bench` passes (see cmd/herald-bench for the flags and defaults).
type Config struct {
	Root        string        // module root (hack/redis-cluster.sh lives there)
	HeraldBin   string        // bin/herald
	WorkDir     string        // logs, shard map, Redis data
	RedisBase   int           // first of six Redis ports
	PortBase    int           // relays listen on PortBase.., the sidecar on PortBase+20
	Fanout      []Case        // scenario (a) measurements; (c) repeats the one with TwoTier set
	Rate        float64       // scenario (e) messages per second
	Duration    time.Duration // publishing time of one fan-out measurement
	IdleSubs    int           // scenario (d)
	EdgeIdle    int           // idle end users' streams on the edge in (i)
	FileLimit   uint64        // this process's open-files limit (0: unknown)
	FailoverSub int           // scenario (e) subscribers per path
	Only        string        // comma-separated scenario letters; "" = all
	CPUProfile  string        // write a CPU profile of the relay during ProfileOf; needs PprofBin
	ProfileOf   string        // the scenario profiled: "a" (its first measurement), "f" (ack=leader), "fb" (its batched row), "fs" (its row through a sidecar) or "g" (reading from Redis with no subscriber)
	PprofBin    string        // bench/cmd/herald-relay-pprof binary
	RelayArgs   []string      // more flags for the shard relays (e.g. --write-interval=0)
	Logf        func(format string, args ...any)
}

const channel = "bench"

// Case is one fan-out size: subscribers at messages per second.
type Case struct {
	Subs    int
	Rate    float64
	TwoTier bool // (c) measures this case behind the sidecar too
	Scaled  bool // smaller than the issue asks, for a latency figure below the machine's limit
}

// Runner runs the scenarios against processes it starts.
type Runner struct {
	cfg      Config
	cluster  *rediscluster.Cluster
	rc       *redis.ClusterClient
	m        *shardmap.Map
	mapFile  string
	relay    *Proc
	eager    *Proc // a shard relay with --write-interval=0, for (h)
	sidecar  *Proc
	seq      uint64
	rep      Report
	fanoutTT map[string]Row // the (a) row (c) compares with, by path
	pub      *upstream.Publisher
	procs    []*Proc
	mu       sync.Mutex
}

// Run starts everything, runs the scenarios, stops everything it started and returns the report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	r := &Runner{cfg: cfg, fanoutTT: map[string]Row{}}
	r.rep.Started = time.Now()
	r.rep.Cores = runtime.NumCPU()
	defer r.stopAll()
	if err := r.setUp(ctx); err != nil {
		return &r.rep, err
	}
	steps := []struct {
		letter string
		run    func(context.Context) error
	}{
		{"a", r.scenarioFanout}, {"b", r.scenarioSaturation}, {"c", r.scenarioTwoTier},
		{"d", r.scenarioIdle}, {"f", r.scenarioPublish}, {"g", r.scenarioInterest}, {"h", r.scenarioLowRate}, {"i", r.scenarioEdge}, {"e", r.scenarioFailover},
	}
	for _, s := range steps {
		if cfg.Only != "" && !strings.Contains(cfg.Only, s.letter) {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		t0 := time.Now()
		if err := s.run(ctx); err != nil {
			r.cfg.Logf("scenario (%s) failed: %v", s.letter, err)
			r.rep.Rows = append(r.rep.Rows, Row{Scenario: "(" + s.letter + ")", Path: "error", RedisSubs: -1, Note: err.Error()})
		}
		r.cfg.Logf("scenario (%s) done in %v", s.letter, time.Since(t0).Round(time.Second))
	}
	r.rep.Duration = time.Since(r.rep.Started)
	return &r.rep, nil
}

func (r *Runner) setUp(ctx context.Context) error {
	if err := os.MkdirAll(r.cfg.WorkDir, 0o755); err != nil {
		return err
	}
	r.cfg.Logf("starting Redis Cluster on 127.0.0.1:%d-%d", r.cfg.RedisBase, r.cfg.RedisBase+5)
	var err error
	if r.cluster, err = rediscluster.Start(r.cfg.RedisBase, filepath.Join(r.cfg.WorkDir, "redis")); err != nil {
		return err
	}
	r.rc = redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{r.cluster.Addr()}, PoolSize: 64})
	r.m = shardmap.New(channel, channel, shardmap.DeliveryDurable, []string{shardmap.HashTag(channel, channel, 0, 0)})
	r.m.MaxMessageBytes = 64 << 10
	r.m.Retention = shardmap.Retention{MaxLength: 200000}
	r.mapFile = filepath.Join(r.cfg.WorkDir, "shardmap.json")
	b, _ := json.Marshal(r.m)
	if err := os.WriteFile(r.mapFile, b, 0o644); err != nil {
		return err
	}
	r.pub = upstream.NewPublisher(r.rc, r.m, 0, time.Hour)
	bin := r.cfg.HeraldBin
	var env []string
	if r.cfg.CPUProfile != "" && r.cfg.ProfileOf != "i" { // (i) profiles its edge instead
		bin, env = r.cfg.PprofBin, []string{"HERALD_PPROF_ADDR=" + r.pprofAddr()}
	}
	if r.relay, err = r.startRelay(ctx, "relay", bin, r.cfg.PortBase, env); err != nil {
		return err
	}
	return nil
}

func (r *Runner) pprofAddr() string { return "127.0.0.1:" + strconv.Itoa(r.cfg.PortBase+90) }

func (r *Runner) startRelay(ctx context.Context, name, bin string, port int, env []string, extra ...string) (*Proc, error) {
	addr := "127.0.0.1:" + strconv.Itoa(port)
	args := append([]string{"relay", "--role=shard", "--shardmap=" + r.mapFile, "--shard=0",
		"--listen=" + addr, "--redis-addresses=" + r.cluster.Addr(), "--auth=none", "--log-level=warn",
		"--queue-bytes=4194304",
		// The bench measures capacity with one anonymous caller: no per-relay or per-caller caps.
		"--max-subscribers=0", "--max-subscribers-per-caller=0", "--max-replays-per-caller=0", "--replay-rate-per-caller=0"},
		slices.Concat(r.cfg.RelayArgs, extra)...)
	p, err := StartProc(name, bin, args, env, filepath.Join(r.cfg.WorkDir, name+".log"), "http://"+addr)
	if err != nil {
		return nil, err
	}
	r.track(p)
	return p, p.WaitReady(ctx, 30*time.Second)
}

func (r *Runner) startSidecar(ctx context.Context) (*Proc, error) {
	return r.startSidecarAt(ctx, "sidecar", r.cfg.PortBase+20)
}

// startSidecarAt starts a sidecar in front of the shard relay, listening on port.
func (r *Runner) startSidecarAt(ctx context.Context, name string, port int) (*Proc, error) {
	epFile, err := r.writeEndpoints(r.relay)
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	p, err := StartProc(name, r.cfg.HeraldBin, []string{"relay", "--role=sidecar", "--listen=" + addr,
		"--channels=" + channel, "--namespace=" + channel, "--endpoints-file=" + epFile, "--log-level=warn",
		"--queue-bytes=4194304"}, nil, filepath.Join(r.cfg.WorkDir, name+".log"), "http://"+addr)
	if err != nil {
		return nil, err
	}
	r.track(p)
	return p, p.WaitReady(ctx, 30*time.Second)
}

// writeEndpoints writes the endpoints file that sends a sidecar or an edge to relay (the
// stand-in for cluster DNS) and returns its path.
func (r *Runner) writeEndpoints(relay *Proc) (string, error) {
	eps := shardmap.Endpoints{}
	u := strings.TrimPrefix(r.m.Shards[0].Endpoint, "http://")
	host := u[:strings.IndexByte(u, ':')]
	relayAddr := strings.TrimPrefix(relay.URL, "http://")
	eps[host] = []string{relayAddr}
	eps[shardmap.ChannelServiceName(channel)+"."+channel+".svc"] = []string{relayAddr}
	epFile := filepath.Join(r.cfg.WorkDir, "endpoints-"+relay.Name+".json")
	b, _ := json.Marshal(eps)
	return epFile, os.WriteFile(epFile, b, 0o644)
}

func (r *Runner) track(p *Proc) {
	r.mu.Lock()
	r.procs = append(r.procs, p)
	r.mu.Unlock()
}

func (r *Runner) stopAll() {
	r.mu.Lock()
	procs := r.procs
	r.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].Stop()
	}
	if r.rc != nil {
		_ = r.rc.Close()
	}
	if r.cluster != nil {
		if err := r.cluster.Down(); err != nil {
			r.cfg.Logf("stopping the Redis Cluster: %v", err)
		}
	}
}

// master returns the shard's current master client and its PID.
func (r *Runner) master(ctx context.Context) (*redis.Client, int, error) {
	for range 3 {
		c, err := r.rc.MasterForKey(ctx, r.m.Shards[0].Stream)
		if err == nil {
			_, port, _ := strings.Cut(c.Options().Addr, ":")
			p, _ := strconv.Atoi(port)
			pid, err := r.cluster.PID(p)
			return c, pid, err
		}
		r.rc.ReloadState(ctx)
		time.Sleep(200 * time.Millisecond)
	}
	return nil, 0, fmt.Errorf("no master for the shard")
}

// shardSubs is PUBSUB SHARDNUMSUB of the shard's live channel on its master.
func (r *Runner) shardSubs(ctx context.Context) int64 {
	c, _, err := r.master(ctx)
	if err != nil {
		return -1
	}
	v, err := c.Do(ctx, "PUBSUB", "SHARDNUMSUB", r.m.Shards[0].LiveChannel).Slice()
	if err != nil || len(v) != 2 {
		return -1
	}
	n, _ := v[1].(int64)
	return n
}

func (r *Runner) nextBase(reserve uint64) uint64 {
	b := r.seq
	r.seq += reserve
	return b
}

// --- fan-out measurement shared by (a), (b), (c) ---

const (
	pathHerald  = "herald"
	pathEager   = "herald, --write-interval=0"
	pathSidecar = "sidecar"
	pathRaw     = "raw redis"
)

type measured struct {
	row   Row
	res   Result
	acked int
}

// fanout connects n subscribers on path, publishes at rate for dur and counts what arrived.
func (r *Runner) fanout(ctx context.Context, path string, n int, rate float64, dur time.Duration) (measured, error) {
	prime := r.nextBase(1000)
	base := r.nextBase(0)
	var (
		set    *SubSet
		err    error
		send   Sender
		server []int
	)
	_, masterPID, err := r.master(ctx)
	if err != nil {
		return measured{}, err
	}
	switch path {
	case pathHerald:
		set, err = OpenSSE(r.relay.URL+"/v1/channels/"+channel+"/events", n, 64, base)
		send, server = HTTPSender(r.relay.URL+"/v1/channels/"+channel+"/messages?key=k", 0), []int{r.relay.PID()}
	case pathEager:
		set, err = OpenSSE(r.eager.URL+"/v1/channels/"+channel+"/events", n, 64, base)
		send, server = HTTPSender(r.eager.URL+"/v1/channels/"+channel+"/messages?key=k", 0), []int{r.eager.PID()}
	case pathSidecar:
		set, err = OpenSSE(r.sidecar.URL+"/v1/channels/"+channel+"/events", n, 64, base)
		send, server = HTTPSender(r.sidecar.URL+"/v1/channels/"+channel+"/messages?key=k", 0), []int{r.sidecar.PID(), r.relay.PID()}
	case pathRaw:
		set, err = OpenRaw(r.rc, r.m.Shards[0].LiveChannel, n, 64, base)
		send, server = DirectSender(r.pub, 0), []int{masterPID}
	}
	if err != nil {
		return measured{}, fmt.Errorf("connecting %d %s subscribers: %w", n, path, err)
	}
	defer set.Close()
	// Prime: publish (seqs below base, not counted) until every subscriber got one.
	primed := false
	for i := uint64(0); i < 200 && !primed; i++ {
		send(ctx, prime+i, time.Now().UnixNano())
		primed = set.waitPrimed(250 * time.Millisecond)
	}
	if !primed {
		return measured{}, fmt.Errorf("%s: not every subscriber received the priming messages", path)
	}
	subs := r.shardSubs(ctx)
	cpu0, redis0, self0 := CPUOf(server...), CPUOf(masterPID), CPUOf(os.Getpid())
	t0 := time.Now()
	workers := max(8, int(rate/250))
	acked, next := Paced(ctx, send, base, rate, dur, workers)
	r.seq = next
	set.WaitDelivered(int64(len(acked)), 10*time.Second)
	wall := time.Since(t0)
	cpu, redisCPU, self := CPUOf(server...)-cpu0, CPUOf(masterPID)-redis0, CPUOf(os.Getpid())-self0
	set.Close()
	res := set.Collect(acked)
	row := Row{
		Path: path, Subscribers: n, Offered: rate, Achieved: float64(res.Delivered) / wall.Seconds(), Unit: "deliveries/s",
		ServerCPU: cpu.Seconds(), RedisCPU: redisCPU.Seconds(),
		P50: res.Lat.Quantile(0.5), P90: res.Lat.Quantile(0.9), P99: res.Lat.Quantile(0.99), Max: res.Lat.Quantile(1),
		Lost: res.Lost, Dup: res.Dup, OOO: res.OOO, Slow: res.Slow, Gaps: res.Gaps, RedisSubs: subs,
		LoadgenCPU: 100 * self.Seconds() / wall.Seconds(),
	}
	if res.Delivered > 0 && cpu > 0 {
		row.CPUPerM = cpu.Seconds() / float64(res.Delivered) * 1e6
		row.PerCore = float64(res.Delivered) / cpu.Seconds()
	}
	if len(acked) < int(rate*dur.Seconds()) {
		row.Note = fmt.Sprintf("%d of %d publishes acknowledged", len(acked), int(rate*dur.Seconds()))
	}
	return measured{row: row, res: res, acked: len(acked)}, nil
}

// waitPrimed reports whether every subscriber received something within d.
func (s *SubSet) waitPrimed(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		all := true
		for _, sub := range s.Subs {
			if !sub.primed.Load() {
				all = false
				break
			}
		}
		if all || time.Now().After(deadline) {
			return all
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// (a) fan-out: herald vs raw at each size.
func (r *Runner) scenarioFanout(ctx context.Context) error {
	for i, c := range r.cfg.Fanout {
		var prof chan error
		if i == 0 && r.cfg.CPUProfile != "" && r.cfg.ProfileOf == "a" {
			prof = make(chan error, 1)
			go func() { prof <- r.profile(r.cfg.Duration) }()
		}
		h, err := r.fanout(ctx, pathHerald, c.Subs, c.Rate, r.cfg.Duration)
		if prof != nil {
			if perr := <-prof; perr != nil {
				r.cfg.Logf("CPU profile: %v", perr)
			}
		}
		if err != nil {
			return err
		}
		raw, err := r.fanout(ctx, pathRaw, c.Subs, c.Rate, r.cfg.Duration)
		if err != nil {
			return err
		}
		h.row.Note = strings.TrimPrefix(h.row.Note+"; "+modelNote(h.row, c), "; ")
		if c.Scaled {
			h.row.Note = strings.TrimPrefix(h.row.Note+"; scaled down (the first row is the full size)", "; ")
			raw.row.Note = strings.TrimPrefix(raw.row.Note+"; scaled down", "; ")
		} else if h.row.Achieved < 0.9*float64(c.Subs)*c.Rate {
			h.row.Note = strings.TrimPrefix(h.row.Note+fmt.Sprintf("; full size: %s deliveries/s offered, not all delivered: the machine (clients included) is saturated and latency is queueing", count(float64(c.Subs)*c.Rate)), "; ")
		}
		r.addPair("(a) fan-out", h.row, raw.row)
		if c.TwoTier {
			r.fanoutTT[pathHerald] = r.rep.Rows[len(r.rep.Rows)-2]
		}
		r.cfg.Logf("(a) %d subscribers at %.0f/s: herald %.0f/s p99 %.1f ms, raw %.0f/s p99 %.1f ms", c.Subs, c.Rate, h.row.Achieved, h.row.P99, raw.row.Achieved, raw.row.P99)
	}
	return r.fanoutPinned(ctx, r.cfg.Fanout[0])
}

// modelNote compares the relay CPU of a row with capacity.Reference's model of it
// (docs/capacity.md): the check of the model at each (a) size.
func modelNote(row Row, c Case) string {
	f := capacity.Reference
	model := f.RelayCPU(row.Achieved, f.Writes(c.Subs, row.Achieved/float64(c.Subs)), c.Rate)
	measured := row.CPUPerM * row.Achieved / 1e6
	return fmt.Sprintf("capacity model %.2f relay cores, measured %.2f", model, measured)
}

// fanoutPinned repeats the full-size (a) case with the servers and the clients on cores of
// their own: its latency is then the relay's, not queueing behind the load generator.
func (r *Runner) fanoutPinned(ctx context.Context, c Case) (err error) {
	p := pinned()
	if err := r.pin(p); err != nil {
		return err
	}
	defer func() {
		if uerr := r.pin(Pinning{}); err == nil {
			err = uerr
		}
	}()
	h, err := r.fanout(ctx, pathHerald, c.Subs, c.Rate, r.cfg.Duration)
	if err != nil {
		return err
	}
	raw, err := r.fanout(ctx, pathRaw, c.Subs, c.Rate, r.cfg.Duration)
	if err != nil {
		return err
	}
	h.row.Note = strings.TrimSuffix(p.String()+"; "+h.row.Note, "; ")
	raw.row.Note = strings.TrimSuffix(p.String()+"; "+raw.row.Note, "; ")
	r.addPair("(a) fan-out", h.row, raw.row)
	r.cfg.Logf("(a) %d subscribers at %.0f/s, %s: herald p99 %.1f ms, raw p99 %.1f ms", c.Subs, c.Rate, p, h.row.P99, raw.row.P99)
	return nil
}

// addPair appends a herald row and its raw baseline, with the ratio of deliveries per CPU second.
func (r *Runner) addPair(scenario string, h, raw Row) {
	h.Scenario, raw.Scenario = scenario, scenario
	if raw.PerCore > 0 {
		h.Ratio = h.PerCore / raw.PerCore
	}
	raw.Ratio = 1
	r.rep.Rows = append(r.rep.Rows, h, raw)
}

func (r *Runner) profile(d time.Duration) error {
	time.Sleep(time.Second) // skip connection set-up
	resp, err := http.Get("http://" + r.pprofAddr() + "/debug/pprof/profile?seconds=" + strconv.Itoa(max(1, int(d.Seconds())-1)))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	f, err := os.Create(r.cfg.CPUProfile)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(f, resp.Body)
	return err
}

// (b) saturation: raise the rate until loss or p99 > 100 ms.
func (r *Runner) scenarioSaturation(ctx context.Context) error {
	for _, p := range []Pinning{{}, pinned()} {
		if err := r.pin(p); err != nil {
			return err
		}
		err := r.saturation(ctx, p)
		if uerr := r.pin(Pinning{}); err == nil {
			err = uerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// saturation raises the rate step by step until a step fails, on each path, and reports the
// last passing step: the knee.
func (r *Runner) saturation(ctx context.Context, pin Pinning) error {
	n := r.cfg.Fanout[0].Subs
	rates := []float64{25, 50, 100, 150, 225, 340, 500, 750, 1000, 1500, 2250, 3400}
	dur := r.cfg.Duration / 2
	for _, path := range []string{pathHerald, pathRaw} {
		var knee *measured
		why := "every step passed"
		for _, rate := range rates {
			m, err := r.fanout(ctx, path, n, rate, dur)
			if err != nil {
				return err
			}
			r.cfg.Logf("(b) %s %d subscribers at %.0f/s%s: %.0f deliveries/s, p99 %.1f ms, lost %d, slow %d", path, n, rate, strings.TrimPrefix(" ("+pin.String()+")", " ()"), m.row.Achieved, m.row.P99, m.row.Lost, m.row.Slow)
			if m.row.Lost > 0 || m.row.Slow > 0 || m.row.P99 > 100 || m.acked < int(rate*dur.Seconds()*0.99) {
				why = fmt.Sprintf("at %.0f msgs/s: p99 %.0f ms, lost %d, slow-closed %d, %d of %d published", rate, m.row.P99, m.row.Lost, m.row.Slow, m.acked, int(rate*dur.Seconds()))
				break
			}
			knee = &m
		}
		row := Row{Path: path, Subscribers: n, RedisSubs: -1, Note: "no passing step; " + why}
		if knee != nil {
			row = knee.row
			row.Note = "knee (last passing step); next " + why
		}
		row.Scenario = "(b) saturation"
		if pin.String() != "" {
			row.Note = pin.String() + "; " + row.Note
		}
		if path == pathRaw {
			row.Ratio = 1
			if h := r.rep.Rows[len(r.rep.Rows)-1]; h.PerCore > 0 && row.PerCore > 0 {
				r.rep.Rows[len(r.rep.Rows)-1].Ratio = h.PerCore / row.PerCore
			}
		}
		r.rep.Rows = append(r.rep.Rows, row)
	}
	return nil
}

// scenarioLowRate (h): a modest stream, where coalescing writes saves nothing. The shard relay
// as configured is measured beside one that never coalesces (--write-interval=0) and raw
// Redis: its latency should be the eager relay's, not up to a write interval more.
func (r *Runner) scenarioLowRate(ctx context.Context) error {
	if r.eager == nil {
		var err error
		if r.eager, err = r.startRelay(ctx, "relay-eager", r.cfg.HeraldBin, r.cfg.PortBase+1, nil, "--write-interval=0"); err != nil {
			return err
		}
	}
	const subs, rate = 100, 100
	h, err := r.fanout(ctx, pathHerald, subs, rate, r.cfg.Duration)
	if err != nil {
		return err
	}
	eager, err := r.fanout(ctx, pathEager, subs, rate, r.cfg.Duration)
	if err != nil {
		return err
	}
	raw, err := r.fanout(ctx, pathRaw, subs, rate, r.cfg.Duration)
	if err != nil {
		return err
	}
	h.row.Note = fmt.Sprintf("p99 %+.1f ms vs --write-interval=0 (the next row)", h.row.P99-eager.row.P99)
	r.addPair("(h) low rate", h.row, raw.row)
	eager.row.Scenario = "(h) low rate"
	if raw.row.PerCore > 0 {
		eager.row.Ratio = eager.row.PerCore / raw.row.PerCore
	}
	r.rep.Rows = append(r.rep.Rows[:len(r.rep.Rows)-1], eager.row, r.rep.Rows[len(r.rep.Rows)-1])
	r.cfg.Logf("(h) %d subscribers at %d/s: p99 %.1f ms, --write-interval=0 %.1f ms, raw %.1f ms", subs, rate, h.row.P99, eager.row.P99, raw.row.P99)
	return nil
}

// (c) two-tier: the same subscribers behind one sidecar (publishing through it too).
func (r *Runner) scenarioTwoTier(ctx context.Context) error {
	if r.sidecar == nil {
		var err error
		if r.sidecar, err = r.startSidecar(ctx); err != nil {
			return err
		}
	}
	c := r.cfg.Fanout[0]
	for _, fc := range r.cfg.Fanout {
		if fc.TwoTier {
			c = fc
		}
	}
	s, err := r.fanout(ctx, pathSidecar, c.Subs, c.Rate, r.cfg.Duration)
	if err != nil {
		return err
	}
	direct, ok := r.fanoutTT[pathHerald]
	if !ok {
		d, err := r.fanout(ctx, pathHerald, c.Subs, c.Rate, r.cfg.Duration)
		if err != nil {
			return err
		}
		direct = d.row
	}
	row := s.row
	row.Scenario = "(c) two-tier"
	row.Note = strings.TrimPrefix(row.Note+"; CPU = sidecar + shard relay; ratio vs straight on the shard relay ((a) row)", "; ")
	if direct.PerCore > 0 {
		row.Ratio = row.PerCore / direct.PerCore
	}
	r.rep.Rows = append(r.rep.Rows, row)
	return nil
}

// (d) idle: RSS per idle SSE / WebSocket subscriber on a fresh relay; Redis per idle SSUBSCRIBE.
func (r *Runner) scenarioIdle(ctx context.Context) error {
	n := r.cfg.IdleSubs
	for i, c := range []struct{ kind, path string }{{"SSE", pathHerald}, {"WebSocket", pathHerald}, {"SSE", pathSidecar}, {"WebSocket", pathSidecar}} {
		kind := c.kind
		var p *Proc
		var err error
		if c.path == pathSidecar {
			p, err = r.startSidecarAt(ctx, "sidecar-idle-"+strings.ToLower(kind), r.cfg.PortBase+21+i)
		} else {
			p, err = r.startRelay(ctx, "relay-idle-"+strings.ToLower(kind), r.cfg.HeraldBin, r.cfg.PortBase+1+i, nil)
		}
		if err != nil {
			return err
		}
		path := "/events"
		open := func(url string, n int) (*SubSet, error) { return OpenSSE(url, n, 64, 0) }
		if kind == "WebSocket" {
			path = "/ws"
			open = func(url string, n int) (*SubSet, error) {
				return OpenIdleWS(strings.Replace(url, "http://", "ws://", 1), n, 64)
			}
		}
		url := p.URL + "/v1/channels/" + channel + path
		warm, err := open(url, 20) // first connections pay for buffers and pools every later one shares
		if err != nil {
			p.Stop()
			return err
		}
		time.Sleep(time.Second)
		before, _ := ReadProc(p.PID())
		g0 := goroutinesOf(p.URL)
		set, err := open(url, n)
		if err != nil {
			warm.Close()
			p.Stop()
			return err
		}
		time.Sleep(2 * time.Second)
		after, _ := ReadProc(p.PID())
		g1 := goroutinesOf(p.URL)
		set.Close()
		warm.Close()
		p.Stop()
		r.rep.Rows = append(r.rep.Rows, Row{Scenario: "(d) idle " + kind, Path: c.path, Subscribers: n, RedisSubs: -1,
			RSSPerSub: float64(after.RSS-before.RSS) / float64(n) / 1024,
			Note: fmt.Sprintf("%s RSS %.1f -> %.1f MiB, goroutines %d -> %d", map[string]string{pathHerald: "relay", pathSidecar: "sidecar"}[c.path],
				float64(before.RSS)/(1<<20), float64(after.RSS)/(1<<20), g0, g1)})
	}
	_, pid, err := r.master(ctx)
	if err != nil {
		return err
	}
	before, _ := ReadProc(pid)
	set, err := OpenRaw(r.rc, r.m.Shards[0].LiveChannel, n, 64, 0)
	if err != nil {
		return err
	}
	time.Sleep(time.Second)
	after, _ := ReadProc(pid)
	subs := r.shardSubs(ctx)
	set.Close()
	r.rep.Rows = append(r.rep.Rows, Row{Scenario: "(d) idle SSUBSCRIBE", Path: pathRaw, Subscribers: n, RedisSubs: subs,
		RSSPerSub: float64(after.RSS-before.RSS) / float64(n) / 1024,
		Note:      fmt.Sprintf("Redis master RSS %.1f -> %.1f MiB", float64(before.RSS)/(1<<20), float64(after.RSS)/(1<<20))})
	return nil
}

// goroutinesOf reads go_goroutines from a relay's or sidecar's /metrics (-1 if it cannot).
func goroutinesOf(base string) int { return int(metricOf(base, "go_goroutines")) }

// metricOf reads an unlabelled metric from a relay's or sidecar's /metrics (-1 if it cannot).
func metricOf(base, name string) float64 {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return n
		}
	}
	return -1
}

// PublishBatchSize is the events per request of (f)'s batched row.
const PublishBatchSize = 16

// (f) publish: acknowledged publishes per relay CPU second, with and without ack=replicated:
// one event per request, the raw baseline, batches of PublishBatchSize events per request, and
// one event per request to a sidecar (which coalesces them into batches to the relay).
func (r *Runner) scenarioPublish(ctx context.Context) error {
	const workers = 32
	dur := r.cfg.Duration / 2
	_, masterPID, err := r.master(ctx)
	if err != nil {
		return err
	}
	if r.sidecar == nil {
		if r.sidecar, err = r.startSidecar(ctx); err != nil {
			return err
		}
	}
	for _, ack := range []string{"leader", "replicated"} {
		query := "/v1/channels/" + channel + "/messages?key=k"
		waitReplicas := 0
		if ack == "replicated" {
			query += "&ack=replicated"
			waitReplicas = 1
		}
		url := r.relay.URL + query
		type run struct {
			path    string
			send    BatchSender
			size    int
			server  int
			profile string // its -profile-scenario
			note    string
		}
		runs := []run{
			{pathHerald, OneAtATime(HTTPSender(url, 0)), 1, r.relay.PID(), "f", ""},
			{pathRaw, OneAtATime(DirectSender(r.pub, waitReplicas)), 1, masterPID, "", ""},
			{pathHerald + ", batched", HTTPBatchSender(url), PublishBatchSize, r.relay.PID(), "fb",
				fmt.Sprintf("; %d events per request (application/cloudevents-batch+json), latency per request; ratio vs the raw row above", PublishBatchSize)},
			{pathSidecar + " -> relay", OneAtATime(HTTPSender(r.sidecar.URL+query, 0)), 1, r.relay.PID(), "fs", ""},
		}
		var rows []Row
		for _, run := range runs {
			var prof chan error
			if run.profile != "" && ack == "leader" && r.cfg.CPUProfile != "" && r.cfg.ProfileOf == run.profile {
				prof = make(chan error, 1)
				go func() { prof <- r.profile(dur) }()
			}
			throughSidecar := run.path == pathSidecar+" -> relay"
			var side0 time.Duration
			var batches0 float64
			if throughSidecar {
				side0, batches0 = CPUOf(r.sidecar.PID()), metricOf(r.sidecar.URL, "herald_relay_sidecar_publish_batches_total")
			}
			cpu0, redis0, self0 := CPUOf(run.server), CPUOf(masterPID), CPUOf(os.Getpid())
			t0 := time.Now()
			n, lat, next := ClosedLoopBatches(ctx, run.send, run.size, r.nextBase(0), dur, workers)
			if prof != nil {
				if err := <-prof; err != nil {
					r.cfg.Logf("CPU profile: %v", err)
				}
			}
			r.seq = next
			wall := time.Since(t0)
			cpu, redisCPU, self := CPUOf(run.server)-cpu0, CPUOf(masterPID)-redis0, CPUOf(os.Getpid())-self0
			if throughSidecar && n > 0 {
				side := CPUOf(r.sidecar.PID()) - side0
				batches := metricOf(r.sidecar.URL, "herald_relay_sidecar_publish_batches_total") - batches0
				run.note = fmt.Sprintf("; one event per request to a sidecar, which sends concurrent ones to the relay as batches (%.0f batches, %.0f publishes per batch request); CPU = the shard relay's (the sidecar's: %.1f µs per publish); ratio vs the raw row above",
					batches, float64(n)/max(batches, 1), side.Seconds()/float64(n)*1e6)
			}
			row := Row{Path: run.path, Offered: workers, Achieved: float64(n) / wall.Seconds(), Unit: "publishes/s",
				ServerCPU: cpu.Seconds(), RedisCPU: redisCPU.Seconds(), RedisSubs: -1,
				P50: lat.Quantile(0.5), P90: lat.Quantile(0.9), P99: lat.Quantile(0.99), Max: lat.Quantile(1),
				LoadgenCPU: 100 * self.Seconds() / wall.Seconds(),
				Note:       fmt.Sprintf("ack=%s, %d closed-loop publishers; latency = acknowledgement; Redis master CPU %.2f s%s", ack, workers, redisCPU.Seconds(), run.note)}
			if n > 0 && cpu > 0 {
				row.CPUPerM = cpu.Seconds() / float64(n) * 1e6
				row.PerCore = float64(n) / cpu.Seconds()
			}
			rows = append(rows, row)
		}
		r.addPair("(f) publish", rows[0], rows[1])
		for _, more := range rows[2:] {
			more.Scenario = "(f) publish"
			if rows[1].PerCore > 0 {
				more.Ratio = more.PerCore / rows[1].PerCore
			}
			r.rep.Rows = append(r.rep.Rows, more)
		}
	}
	return nil
}

// (e) failover: kill -9 of the shard's master under 1,000 msgs/s of Durable publishes.
func (r *Runner) scenarioFailover(ctx context.Context) error {
	if r.sidecar == nil {
		var err error
		if r.sidecar, err = r.startSidecar(ctx); err != nil {
			return err
		}
	}
	n := r.cfg.FailoverSub
	base := r.nextBase(0)
	sets := map[string]*SubSet{}
	var err error
	if sets[pathHerald], err = OpenSSE(r.relay.URL+"/v1/channels/"+channel+"/events", n, 64, base); err != nil {
		return err
	}
	if sets[pathSidecar], err = OpenSSE(r.sidecar.URL+"/v1/channels/"+channel+"/events", n, 64, base); err != nil {
		return err
	}
	if sets[pathRaw], err = OpenRaw(r.rc, r.m.Shards[0].LiveChannel, n, 64, base); err != nil {
		return err
	}
	for _, s := range sets {
		defer s.Close()
	}
	master, pid, err := r.master(ctx)
	if err != nil {
		return err
	}
	// REDIS-NOTES: wait for the replica to be in sync before killing its master.
	for deadline := time.Now().Add(20 * time.Second); ; {
		info, _ := master.Info(ctx, "replication").Result()
		if strings.Contains(info, "state=online") || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	replicaPort := 0
	if info, err := master.Info(ctx, "replication").Result(); err == nil {
		if i := strings.Index(info, "slave0:ip=127.0.0.1,port="); i >= 0 {
			rest := info[i+len("slave0:ip=127.0.0.1,port="):]
			replicaPort, _ = strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
		}
	}
	promoted := make(chan time.Duration, 1)
	dur := 12 * time.Second
	killAfter := 3 * time.Second
	go func() {
		select {
		case <-time.After(killAfter):
		case <-ctx.Done():
			return
		}
		now := time.Now().UnixNano()
		for _, s := range sets {
			s.KillAt.Store(now)
		}
		r.cfg.Logf("(e) kill -9 of the shard's master (pid %d, %s)", pid, master.Options().Addr)
		_ = syscall.Kill(pid, syscall.SIGKILL)
		promoted <- waitPromoted(ctx, replicaPort, 30*time.Second)
	}()
	send := HTTPSender(r.relay.URL+"/v1/channels/"+channel+"/messages?key=k", 20*time.Second)
	acked, next := Paced(ctx, send, base, r.cfg.Rate, dur, 64)
	r.seq = next
	total := int(r.cfg.Rate * dur.Seconds())
	for _, path := range []string{pathHerald, pathSidecar, pathRaw} {
		s := sets[path]
		within := 20 * time.Second
		if path == pathRaw {
			within = 3 * time.Second
		}
		s.WaitDelivered(int64(len(acked)), within)
	}
	subs := r.shardSubs(ctx)
	promotion := <-promoted
	for _, path := range []string{pathHerald, pathSidecar, pathRaw} {
		s := sets[path]
		s.Close()
		res := s.Collect(acked)
		row := Row{Scenario: "(e) failover", Path: path, Subscribers: n, Offered: r.cfg.Rate, Unit: "acked msgs",
			Achieved: float64(len(acked)), RedisSubs: -1,
			P50: res.Lat.Quantile(0.5), P90: res.Lat.Quantile(0.9), P99: res.Lat.Quantile(0.99), Max: res.Lat.Quantile(1),
			Lost: res.Lost, Dup: res.Dup, OOO: res.OOO, Slow: res.Slow, Gaps: res.Gaps, Recovery: res.RecoveryMax.Seconds(),
			Note: fmt.Sprintf("%d of %d publishes acknowledged (Idempotency-Key retries); replica promoted %.2f s after the kill; median subscriber resumed %.2f s after it; target node-timeout 2 s + 2 s",
				len(acked), total, promotion.Seconds(), res.RecoveryMedian.Seconds())}
		if res.RecoveryMax < 0 {
			row.Recovery = -1
			row.Note = fmt.Sprintf("%d of %d publishes acknowledged; replica promoted %.2f s after the kill; go-redis SSUBSCRIBE did not resume within the window (no topology refresh on pub/sub errors, REDIS-NOTES.md); lost = missed (message, subscriber) pairs",
				len(acked), total, promotion.Seconds())
		}
		if path == pathHerald {
			row.RedisSubs = subs
		}
		r.rep.Rows = append(r.rep.Rows, row)
	}
	return nil
}

// Logger is the default Logf: timestamps on stderr.
func Logger() func(string, ...any) {
	l := log.New(os.Stderr, "bench: ", log.Ltime)
	return l.Printf
}

// waitPromoted polls ROLE on the replica of a killed master until it reports master; it returns
// how long that took (or -1).
func waitPromoted(ctx context.Context, port int, within time.Duration) time.Duration {
	if port == 0 {
		return -1
	}
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(port), MaxRetries: -1})
	defer c.Close()
	start := time.Now()
	for time.Since(start) < within && ctx.Err() == nil {
		if v, err := c.Do(ctx, "ROLE").Slice(); err == nil && len(v) > 0 && v[0] == "master" {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return -1
}
