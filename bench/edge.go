package bench

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// (i) the edge: end users' streams on one edge process, each with a token of its own and
// following 3 of edgeKeys keys; idle ones (their keys get nothing) and active ones (the load goes
// to their keys), published straight into Redis. Beside it, in the same run: the same active
// streams straight on a shard relay (3 keys each, no token): the baseline of CPU per delivery.
const (
	edgeKeys   = 100_000
	edgeActive = 2_000
	edgeRate   = 1000.0
)

// edgeKey is key k of the key space.
func edgeKey(k uint64) string { return "e" + strconv.FormatUint(k, 10) }

// Active stream i follows keys 3i..3i+2; idle stream j follows keys from 3*edgeActive on, which
// get no messages. Message seq goes to key seq % (3*edgeActive).
func activeKeys(i int) [3]uint64 {
	return [3]uint64{uint64(3 * i), uint64(3*i + 1), uint64(3*i + 2)}
}

func idleKeys(j int) [3]uint64 {
	k := uint64(3*edgeActive + 3*j)
	return [3]uint64{k % edgeKeys, (k + 1) % edgeKeys, (k + 2) % edgeKeys}
}

func edgeKeyOf(seq uint64) string { return edgeKey(seq % (3 * edgeActive)) }

func (r *Runner) scenarioEdge(ctx context.Context) error {
	idle := r.cfg.EdgeIdle
	if limit := int(r.cfg.FileLimit); limit > 0 && idle+edgeActive+2000 > limit {
		// Every stream is a descriptor here and one at the edge: fit what the limit allows.
		idle = max(limit-edgeActive-2000, 100)
		r.rep.Scaled = append(r.rep.Scaled, fmt.Sprintf("(i) %d idle edge streams, not %d: the open-files limit is %d", idle, r.cfg.EdgeIdle, limit))
	}
	secret := []byte("the-app-signs-its-users-tokens!!")
	keyFile := filepath.Join(r.cfg.WorkDir, "edge-hmac")
	if err := os.WriteFile(keyFile, secret, 0o600); err != nil {
		return err
	}
	// A relay of its own, without the interest budgets a shared relay keeps per caller: the
	// edge is one caller following every key its users do.
	relay, err := r.startRelay(ctx, "relay-edge", r.cfg.HeraldBin, r.cfg.PortBase+30, nil,
		"--interest-change-rate-per-caller=0", "--max-interest-keys-per-caller=0", "--max-interest-keys-per-namespace=0", "--max-interest-keys=0")
	if err != nil {
		return err
	}
	defer relay.Stop()
	epFile, err := r.writeEndpoints(relay)
	if err != nil {
		return err
	}
	addr := "127.0.0.1:" + strconv.Itoa(r.cfg.PortBase+31)
	bin, env, profiling := r.cfg.HeraldBin, []string(nil), r.cfg.CPUProfile != "" && r.cfg.ProfileOf == "i"
	if profiling {
		bin, env = r.cfg.PprofBin, []string{"HERALD_PPROF_ADDR=" + r.pprofAddr()}
	}
	edge, err := StartProc("edge", bin, []string{"relay", "--role=edge", "--listen=" + addr,
		"--metrics-listen=127.0.0.1:" + strconv.Itoa(r.cfg.PortBase+32),
		"--channels=" + channel, "--namespace=" + channel, "--endpoints-file=" + epFile, "--log-level=warn",
		"--user-token-hmac-key-file=" + keyFile, "--max-streams-per-address=1000000", "--max-keys-per-stream=3",
		"--queue-bytes=4194304"}, env, filepath.Join(r.cfg.WorkDir, "edge.log"), "http://"+addr)
	if err != nil {
		return err
	}
	r.track(edge)
	defer edge.Stop()
	if err := edge.WaitReady(ctx, 30*time.Second); err != nil {
		return err
	}

	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: secret}, nil)
	if err != nil {
		return err
	}
	events := edge.URL + "/v1/channels/" + channel + "/events"
	urlOf := func(user string, keys [3]uint64) string {
		names := []string{edgeKey(keys[0]), edgeKey(keys[1]), edgeKey(keys[2])}
		tok, err := jwt.Signed(signer).Claims(map[string]any{"aud": channel + "/" + channel, "sub": user,
			"exp": time.Now().Add(time.Hour).Unix(), "herald": map[string]any{"follow": names}}).Serialize()
		if err != nil {
			panic(err) // HS256 with a fixed key: cannot fail
		}
		q := url.Values{"token": {tok}, "key": names}
		return events + "?" + q.Encode()
	}

	// Idle streams: what each costs the edge in memory, and how many the edge admits (the token
	// checked, the keys followed upstream) per CPU second.
	warm, err := OpenSSEEach(func(j int) string { return urlOf("warm-"+strconv.Itoa(j), idleKeys(idle+j)) }, 20, 20, 0)
	if err != nil {
		return fmt.Errorf("(i) warm-up: %w", err)
	}
	defer warm.Close()
	time.Sleep(time.Second)
	before, _ := ReadProc(edge.PID())
	cpu0 := CPUOf(edge.PID())
	t0 := time.Now()
	idleSet, err := OpenSSEEach(func(j int) string { return urlOf("idle-"+strconv.Itoa(j), idleKeys(j)) }, idle, 64, 0)
	if err != nil {
		return fmt.Errorf("(i) idle streams: %w", err)
	}
	defer idleSet.Close()
	admit, admitWall := CPUOf(edge.PID())-cpu0, time.Since(t0)
	time.Sleep(2 * time.Second)
	after, _ := ReadProc(edge.PID())
	r.rep.Rows = append(r.rep.Rows, Row{Scenario: "(i) edge idle", Path: "edge", Subscribers: idle, RedisSubs: -1,
		RSSPerSub: float64(after.RSS-before.RSS) / float64(idle) / 1024,
		Achieved:  float64(idle) / admitWall.Seconds(), Unit: "streams opened/s",
		Note: fmt.Sprintf("edge RSS %.1f -> %.1f MiB (target <= 6 KiB per idle stream, its token checked); %.0f streams admitted per edge CPU second (token check, 3 keys followed upstream, the stream's start)",
			float64(before.RSS)/(1<<20), float64(after.RSS)/(1<<20), float64(idle)/admit.Seconds())})
	r.cfg.Logf("(i) %d idle edge streams: %.2f KiB each, %.0f admitted per CPU second", idle, float64(after.RSS-before.RSS)/float64(idle)/1024, float64(idle)/admit.Seconds())

	// Active streams at edgeRate, through the edge and, beside it, straight on the relay.
	wants := func(i int, seq uint64) bool { return seq%(3*edgeActive)/3 == uint64(i) }
	send := KeyedDirectSender(r.pub, edgeKeyOf, 0)
	var prof chan error
	if profiling {
		prof = make(chan error, 1)
		go func() { prof <- r.profile(r.cfg.Duration) }()
	}
	through, err := r.edgeRun(ctx, send, "edge, idle streams beside", []int{edge.PID(), relay.PID()}, wants, func(i int) string {
		return urlOf("user-"+strconv.Itoa(i), activeKeys(i))
	})
	if err != nil {
		return err
	}
	if prof != nil {
		if err := <-prof; err != nil {
			r.cfg.Logf("CPU profile of the edge: %v", err)
		}
	}
	direct, err := r.edgeRun(ctx, send, "shard relay straight (baseline)", []int{relay.PID()}, wants, func(i int) string {
		k := activeKeys(i)
		return relay.URL + "/v1/channels/" + channel + "/events?" + url.Values{"key": {edgeKey(k[0]), edgeKey(k[1]), edgeKey(k[2])}}.Encode()
	})
	if err != nil {
		return err
	}
	edgeCPU := through.cpu[0].Seconds() / float64(max(through.row.Achieved*through.wall.Seconds(), 1)) * 1e6
	relayCPU := through.cpu[1].Seconds() / float64(max(through.row.Achieved*through.wall.Seconds(), 1)) * 1e6
	through.row.Note = fmt.Sprintf("CPU per delivery: edge %.1f µs + relay %.1f µs (relay egress: the followed keys only); %d idle streams held beside; ratio vs the baseline row's CPU per delivery",
		edgeCPU, relayCPU, idle)
	r.addPair("(i) edge", through.row, direct.row)
	r.cfg.Logf("(i) edge: %.1f + %.1f µs per delivery, p99 %.1f ms; straight on the relay %.1f µs, p99 %.1f ms",
		edgeCPU, relayCPU, through.row.P99, direct.row.CPUPerM, direct.row.P99)
	return nil
}

type edgeMeasured struct {
	row  Row
	cpu  []time.Duration // per pid
	wall time.Duration
}

// edgeRun opens edgeActive streams at urlOf, publishes at edgeRate for the configured duration
// and measures CPU of pids (their sum is the row's) and delivery.
func (r *Runner) edgeRun(ctx context.Context, send Sender, path string, pids []int, wants func(int, uint64) bool, urlOf func(int) string) (edgeMeasured, error) {
	base := r.nextBase(0)
	set, err := OpenSSEEach(urlOf, edgeActive, 64, base)
	if err != nil {
		return edgeMeasured{}, fmt.Errorf("(i) %s: %w", path, err)
	}
	defer set.Close()
	set.Wants = wants
	cpu0 := make([]time.Duration, len(pids))
	for i, p := range pids {
		cpu0[i] = CPUOf(p)
	}
	self0 := CPUOf(os.Getpid())
	t0 := time.Now()
	acked, next := Paced(ctx, send, base, edgeRate, r.cfg.Duration, 8)
	r.seq = next
	waitTotal(set, int64(len(acked)), 10*time.Second) // each message goes to one active stream
	wall := time.Since(t0)
	m := edgeMeasured{wall: wall, cpu: make([]time.Duration, len(pids))}
	var cpu time.Duration
	for i, p := range pids {
		m.cpu[i] = CPUOf(p) - cpu0[i]
		cpu += m.cpu[i]
	}
	self := CPUOf(os.Getpid()) - self0
	set.Close()
	res := set.Collect(acked)
	m.row = Row{Scenario: "(i) edge", Path: path, Subscribers: edgeActive, Offered: edgeRate,
		Achieved: float64(res.Delivered) / wall.Seconds(), Unit: "deliveries/s", ServerCPU: cpu.Seconds(),
		P50: res.Lat.Quantile(0.5), P90: res.Lat.Quantile(0.9), P99: res.Lat.Quantile(0.99), Max: res.Lat.Quantile(1),
		Lost: res.Lost, Dup: res.Dup, OOO: res.OOO, Slow: res.Slow, Gaps: res.Gaps, RedisSubs: -1,
		LoadgenCPU: 100 * self.Seconds() / wall.Seconds()}
	if res.Delivered > 0 && cpu > 0 {
		m.row.CPUPerM = cpu.Seconds() / float64(res.Delivered) * 1e6
		m.row.PerCore = float64(res.Delivered) / cpu.Seconds()
	}
	return m, nil
}
