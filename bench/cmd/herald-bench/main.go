// Command herald-bench is `make bench`: it starts a Redis Cluster, shard relays and a sidecar as
// real processes, runs Herald's benchmark scenarios beside a raw-Redis baseline, prints one
// Markdown table and writes the same figures as JSON. See docs/performance.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/bench"
)

// quietRedis drops go-redis's internal log lines.
type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

func main() {
	var (
		cfg   bench.Config
		sizes string
		out   string
	)
	flag.StringVar(&cfg.HeraldBin, "herald", "bin/herald", "the herald binary to run relays and the sidecar with")
	flag.StringVar(&cfg.WorkDir, "workdir", "bin/bench", "directory for logs, the shard map and Redis data")
	flag.IntVar(&cfg.RedisBase, "redis-base-port", 7201, "first of the six ports of the benchmark's own Redis Cluster")
	flag.IntVar(&cfg.PortBase, "port-base", 7210, "relays listen on this port and the next ones, the sidecar on +20, pprof on +90")
	flag.StringVar(&sizes, "fanout", "1000@1000,1000@100+c,5000@20", "scenario (a) cases, subscribers@msgs/s; +c: (c) repeats it behind the sidecar; the first case's subscriber count is used by (b). "+
		"Only the first is the issue's full size; on 2 cores shared with the clients 1,000 x 1,000 saturates the machine, so the others are scaled down (and marked so) for latency below that limit")
	flag.Float64Var(&cfg.Rate, "rate", 1000, "messages per second in (e)")
	flag.DurationVar(&cfg.Duration, "duration", 8*time.Second, "publishing time of one fan-out measurement ((b) and (f) steps take half)")
	flag.IntVar(&cfg.IdleSubs, "idle-subscribers", 5000, "idle subscribers in (d)")
	flag.IntVar(&cfg.EdgeIdle, "edge-idle", 20000, "idle end users' streams on the edge in (i), beside its 2,000 active ones")
	flag.IntVar(&cfg.FailoverSub, "failover-subscribers", 100, "subscribers per path in (e)")
	flag.StringVar(&cfg.Only, "only", "", "run only these scenarios, e.g. \"ae\" (default all: abcdefghi)")
	flag.StringVar(&out, "json", "bin/bench/results.json", "where to write the figures as JSON")
	flag.StringVar(&cfg.CPUProfile, "cpuprofile", "", "write a CPU profile of the shard relay during the first (a) measurement (runs the relay from -pprof-relay)")
	flag.StringVar(&cfg.ProfileOf, "profile-scenario", "a", "the scenario -cpuprofile covers: a (its first measurement), f (the relay's publishes, ack=leader), fb (the same, batched), fs (the same, through a sidecar), g (the relay reading from Redis with no subscriber) or i (the edge, its active streams)")
	flag.StringVar(&cfg.PprofBin, "pprof-relay", "bin/herald-relay-pprof", "go build -o bin/herald-relay-pprof ./bench/cmd/herald-relay-pprof: the relay with a pprof listener")
	var selfProfile, relayArgs string
	flag.StringVar(&relayArgs, "relay-args", "", "more flags for the shard relays, space-separated (e.g. \"--write-interval=0\")")
	flag.StringVar(&selfProfile, "loadgen-cpuprofile", "", "write a CPU profile of this load generator (its clients and publishers) for the whole run")
	flag.Parse()
	if selfProfile != "" {
		f, err := os.Create(selfProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "-loadgen-cpuprofile:", err)
			os.Exit(2)
		}
		defer pprof.StopCPUProfile()
	}
	cfg.RelayArgs = strings.Fields(relayArgs)
	for i, s := range strings.Split(sizes, ",") {
		s = strings.TrimSpace(s)
		c := bench.Case{Scaled: i > 0}
		s, c.TwoTier = strings.CutSuffix(s, "+c")
		subs, rate, _ := strings.Cut(s, "@")
		var err1, err2 error
		c.Subs, err1 = strconv.Atoi(subs)
		c.Rate, err2 = strconv.ParseFloat(rate, 64)
		if err1 != nil || err2 != nil || c.Subs <= 0 || c.Rate <= 0 {
			fmt.Fprintf(os.Stderr, "-fanout: %q is not subscribers@rate\n", s)
			os.Exit(2)
		}
		cfg.Fanout = append(cfg.Fanout, c)
	}
	root, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cfg.Root = root
	for _, p := range []*string{&cfg.HeraldBin, &cfg.WorkDir, &cfg.PprofBin, &out} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(root, *p)
		}
	}
	if cfg.CPUProfile != "" && !filepath.IsAbs(cfg.CPUProfile) {
		cfg.CPUProfile = filepath.Join(root, cfg.CPUProfile)
	}
	cfg.Logf = bench.Logger()
	redis.SetLogger(quietRedis{}) // raw subscribers' reconnect attempts after a failover are expected
	cfg.FileLimit = raiseFileLimit(cfg.Logf)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := bench.Run(ctx, cfg)
	if rep != nil && len(rep.Rows) > 0 {
		fmt.Printf("\nHerald benchmark, %s, %d cores, %v (figures beside a raw-Redis baseline measured in the same run)\n\n",
			rep.Started.Format(time.RFC3339), rep.Cores, rep.Duration.Round(time.Second))
		rep.WriteMarkdown(os.Stdout)
		if werr := rep.WriteJSON(out); werr != nil {
			fmt.Fprintln(os.Stderr, werr)
		} else {
			fmt.Printf("\nJSON: %s\n", out)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// raiseFileLimit lifts the open-files limit as far as it goes: thousands of connections on both
// ends live in this process and the relays it starts (they inherit it). Root may raise the hard
// limit too (to wantFiles); others get the soft one up to the hard one. It returns the limit.
func raiseFileLimit(logf func(string, ...any)) uint64 {
	const wantFiles = 100_000
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0
	}
	if l.Max < wantFiles {
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: wantFiles, Max: wantFiles}); err == nil {
			l = syscall.Rlimit{Cur: wantFiles, Max: wantFiles}
		}
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
	if l.Cur < 30000 {
		logf("open-files limit is %d; 5,000-subscriber scenarios need about 3 per subscriber", l.Cur)
	}
	return l.Cur
}
