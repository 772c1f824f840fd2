package failover

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/internal/testing/relaytest"
	"github.com/heraldhq/herald/relay"
	"github.com/heraldhq/herald/relay/cursor"
	"github.com/heraldhq/herald/relay/shardmap"
	"github.com/heraldhq/herald/relay/upstream"
)

var cluster *relaytest.Cluster

// quietRedis drops go-redis's own log lines ("failed to dial ...") that a killed node causes
// by the hundred; the relay's log says what matters.
type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

func TestMain(m *testing.M) {
	redis.SetLogger(quietRedis{})
	base := 7301
	if v := os.Getenv("HERALD_FAILOVER_BASE_PORT"); v != "" {
		base, _ = strconv.Atoi(v)
	}
	dir, err := os.MkdirTemp("", "herald-failover-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cluster, err = relaytest.StartCluster(base, dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if v := os.Getenv("HERALD_FAILOVER_LOAD"); v != "" {
		if publishFor, err = time.ParseDuration(v); err != nil || publishFor < 2*disruptAfter {
			fmt.Fprintf(os.Stderr, "HERALD_FAILOVER_LOAD=%q: want a duration of at least %v\n", v, 2*disruptAfter)
			os.Exit(2)
		}
	}
	code := m.Run()
	if err := cluster.Down(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	if code != 0 {
		fmt.Fprintln(os.Stderr, "Redis Cluster data and node logs kept in", dir)
	} else {
		os.RemoveAll(dir)
	}
	os.Exit(code)
}

// Load parameters: about 1,000 messages per second for publishFor, disruption after 2 s.
const (
	workers      = 4
	perWorkerGap = 4 * time.Millisecond // 4 workers x 250/s
	disruptAfter = 2 * time.Second
)

// publishFor is how long each scenario publishes: HERALD_FAILOVER_LOAD (a Go duration) or 20 s.
var publishFor = 20 * time.Second

type received struct {
	id    cursor.ID
	seq   int
	gap   string // reason, for gap events
	at    time.Time
	isGap bool
	rawID string
}

type subscriber struct {
	mu   sync.Mutex
	got  []received
	sse  *relaytest.SSE
	done chan struct{}
}

func subscribe(t *testing.T, r *relaytest.Relay) *subscriber {
	s := &subscriber{sse: relaytest.OpenSSE(t, r.ChannelURL("/events"), relaytest.SSEOptions{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for ev := range s.sse.Events {
			rec := received{at: time.Now(), rawID: ev.ID}
			switch ev.Event {
			case "message":
				var ce struct {
					Data struct {
						Seq int `json:"seq"`
					} `json:"data"`
				}
				_ = json.Unmarshal([]byte(ev.Data), &ce)
				rec.seq = ce.Data.Seq
				rec.id, _ = cursor.Parse(ev.ID)
			case "gap":
				var ce struct {
					Data struct{ Reason string } `json:"data"`
				}
				_ = json.Unmarshal([]byte(ev.Data), &ce)
				rec.isGap, rec.gap = true, ce.Data.Reason
			default:
				continue
			}
			s.mu.Lock()
			s.got = append(s.got, rec)
			s.mu.Unlock()
		}
	}()
	return s
}

func (s *subscriber) snapshot() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]received(nil), s.got...)
}

type publishLog struct {
	mu       sync.Mutex
	acked    map[int]cursor.ID // seq -> id from the 202
	attempts int
	failures int // non-202 answers and transport errors (retried)
	lastErr  string
}

// publish runs the load: workers publishing {"seq":n} with Idempotency-Key n, retrying until
// a 202 (or the retry deadline), for publishFor.
func publish(t *testing.T, r *relaytest.Relay, stop time.Time) *publishLog {
	pl := &publishLog{acked: map[int]cursor.ID{}}
	client := &http.Client{Timeout: 3 * time.Second}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(perWorkerGap)
			defer tick.Stop()
			for n := 0; time.Now().Before(stop); n++ {
				seq := n*workers + w
				retryUntil := time.Now().Add(15 * time.Second)
				for time.Now().Before(retryUntil) {
					req, _ := http.NewRequest(http.MethodPost, r.ChannelURL("/messages?key=k"), strings.NewReader(fmt.Sprintf(`{"seq":%d}`, seq)))
					req.Header.Set("Content-Type", "application/json")
					req.Header.Set("Idempotency-Key", "seq-"+strconv.Itoa(seq))
					resp, err := client.Do(req)
					pl.mu.Lock()
					pl.attempts++
					pl.mu.Unlock()
					if err == nil {
						var pr relaytest.PublishResponse
						_ = json.NewDecoder(resp.Body).Decode(&pr)
						resp.Body.Close()
						if resp.StatusCode == http.StatusAccepted {
							id, _ := cursor.Parse(pr.ID)
							pl.mu.Lock()
							pl.acked[seq] = id
							pl.mu.Unlock()
							break
						}
						err = fmt.Errorf("%d %s", resp.StatusCode, pr.Error)
					}
					pl.mu.Lock()
					pl.failures++
					pl.lastErr = err.Error()
					pl.mu.Unlock()
					time.Sleep(50 * time.Millisecond)
				}
				<-tick.C
			}
		}()
	}
	wg.Wait()
	return pl
}

// scenario runs the load, applies disrupt to the master of the shard's slot, heals the
// cluster and checks every subscriber's count.
func scenario(t *testing.T, disrupt func(t *testing.T, slot, master int), heal func(t *testing.T, slot, master int)) {
	if err := cluster.WaitHealthy(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	r := relaytest.StartRelay(t, relaytest.Options{
		Addrs: cluster.Addrs(),
		Modify: func(o *relay.ShardOptions) {
			o.Upstream = upstream.Options{ProbeInterval: 200 * time.Millisecond, ProbeTimeout: time.Second}
		},
	})
	stream := r.Map.Shards[0].Stream
	slot := shardmap.Slot(stream)
	ctx := context.Background()
	master, err := cluster.MasterOf(ctx, slot)
	if err != nil {
		t.Fatal(err)
	}
	subs := []*subscriber{subscribe(t, r), subscribe(t, r)}
	relaytest.Eventually(t, 5*time.Second, "subscribers registered", func() bool { return r.Hub().Subscribers() == int64(len(subs)) })

	start := time.Now()
	var pl *publishLog
	loadDone := make(chan struct{})
	go func() { defer close(loadDone); pl = publish(t, r, start.Add(publishFor)) }()
	time.Sleep(disruptAfter) // the load runs on its own clock; this only places the disruption inside it
	disruptedAt := time.Now()
	t.Logf("disrupting the master of slot %d, node %d", slot, master)
	disrupt(t, slot, master)
	<-loadDone
	if heal != nil {
		heal(t, slot, master)
	}
	if err := cluster.WaitHealthy(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	r.WaitReady(t, 30*time.Second)

	xs, err := r.Redis.XRange(ctx, stream, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	inStream := map[cursor.ID]int{} // id -> seq
	order := make([]cursor.ID, 0, len(xs))
	for _, x := range xs {
		id := cursor.MustParse(x.ID)
		var d struct {
			Seq int `json:"seq"`
		}
		_ = json.Unmarshal([]byte(x.Values["d"].(string)), &d)
		inStream[id] = d.Seq
		order = append(order, id)
	}
	seqInStream := map[int]cursor.ID{}
	for id, seq := range inStream {
		seqInStream[seq] = id
	}
	var lostAcked []int
	for seq := range pl.acked {
		if _, ok := seqInStream[seq]; !ok {
			lostAcked = append(lostAcked, seq)
		}
	}
	sort.Ints(lostAcked)

	// Wait until every subscriber has every entry the stream holds.
	for i, s := range subs {
		relaytest.Eventually(t, 30*time.Second, fmt.Sprintf("subscriber %d has every stream entry", i), func() bool {
			have := map[cursor.ID]bool{}
			for _, rec := range s.snapshot() {
				if !rec.isGap {
					have[rec.id] = true
				}
			}
			for _, id := range order {
				if !have[id] {
					return false
				}
			}
			return true
		})
	}
	st := r.Status()
	rollbacks := r.Metric(t, "herald_relay_rollbacks_total")
	resubs := r.Metric(t, "herald_relay_resubscribes_total")
	backfilled := r.Metric(t, "herald_relay_backfilled_total")
	stale := r.Metric(t, "herald_relay_stale_master_messages_total")
	for i, s := range subs {
		got := s.snapshot()
		var inOrder []cursor.ID
		seen := map[int]int{}
		gapRollback := false
		var deliveredLost []int
		var prev time.Time
		var maxPause time.Duration
		for _, rec := range got {
			if rec.isGap {
				if rec.gap == "rollback" {
					gapRollback = true
				}
				continue
			}
			seen[rec.seq]++
			if _, ok := inStream[rec.id]; ok && inStream[rec.id] == rec.seq {
				inOrder = append(inOrder, rec.id)
			} else {
				deliveredLost = append(deliveredLost, rec.seq)
			}
			if !prev.IsZero() && rec.at.Sub(prev) > maxPause && rec.at.After(disruptedAt) {
				maxPause = rec.at.Sub(prev)
			}
			prev = rec.at
		}
		// 1. Exactly the stream's entries, in the stream's order.
		if len(inOrder) != len(order) {
			t.Fatalf("subscriber %d: %d deliveries of stream entries, stream holds %d (duplicates)", i, len(inOrder), len(order))
		}
		for j := range order {
			if inOrder[j] != order[j] {
				t.Fatalf("subscriber %d: delivery %d is %v, stream order says %v", i, j, inOrder[j], order[j])
			}
		}
		// 2. Each acknowledged message exactly once, unless Redis lost it.
		for seq := range pl.acked {
			if _, inS := seqInStream[seq]; inS && seen[seq] != 1 {
				t.Fatalf("subscriber %d: acknowledged message %d delivered %d times", i, seq, seen[seq])
			}
		}
		// 3. Whatever Redis lost (acknowledged, or delivered and then gone) was reported.
		if (len(lostAcked) > 0 || len(deliveredLost) > 0) && (!gapRollback || rollbacks == 0 || len(st.Rollbacks) == 0) {
			t.Fatalf("subscriber %d: Redis lost %d acknowledged entries and %d delivered ones, but the relay reported no rollback (gap event %v, metric %v, status %d)",
				i, len(lostAcked), len(deliveredLost), gapRollback, rollbacks, len(st.Rollbacks))
		}
		t.Logf("subscriber %d: %d delivered, %d delivered-then-lost, rollback gap event %v, longest delivery pause after the disruption %v",
			i, len(got), len(deliveredLost), gapRollback, maxPause.Round(time.Millisecond))
	}
	if resubs < 1 {
		t.Fatalf("the disruption did not make the relay resubscribe (resubscribes_total %v)", resubs)
	}
	t.Logf("load: %d acknowledged of %d attempts (%d failed attempts, last: %s) in %v = %.0f/s; stream holds %d; acknowledged but lost by Redis: %d; rollbacks reported: %v; resubscribes: %v; backfilled: %v; stale-master messages dropped: %v; sessions %d, last error %q",
		len(pl.acked), pl.attempts, pl.failures, pl.lastErr, publishFor, float64(len(pl.acked))/publishFor.Seconds(), len(order), len(lostAcked), rollbacks, resubs, backfilled, stale, st.Sessions, st.LastError)
	if len(pl.acked) < 1000 {
		t.Fatalf("only %d messages acknowledged: the load did not run", len(pl.acked))
	}
}

func TestClientKillPubsubUnderLoad(t *testing.T) {
	scenario(t, func(t *testing.T, slot, master int) {
		if _, err := cluster.Do(context.Background(), master, "CLIENT", "KILL", "TYPE", "pubsub"); err != nil {
			t.Fatal(err)
		}
	}, nil)
}

func TestKill9OfTheShardMasterUnderLoad(t *testing.T) {
	scenario(t, func(t *testing.T, slot, master int) {
		if err := cluster.Signal(master, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}, func(t *testing.T, slot, master int) {
		if err := cluster.Restart(master); err != nil {
			t.Fatal(err)
		}
	})
}

func TestSIGSTOPPastNodeTimeoutThenSIGCONTUnderLoad(t *testing.T) {
	scenario(t, func(t *testing.T, slot, master int) {
		stop(t, master)
		// Past node-timeout (2 s) and the election: wait until another node owns the slot.
		relaytest.Eventually(t, 20*time.Second, "a replica promoted", func() bool {
			owner, err := cluster.MasterOf(context.Background(), slot)
			return err == nil && owner != master
		})
		if err := cluster.Signal(master, syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
	}, nil)
}

// stop pauses the node on port with SIGSTOP. Whatever happens to the test, the node is
// continued when it ends, so one failure does not leave a frozen node to the tests after it.
func stop(t *testing.T, port int) {
	t.Helper()
	if err := cluster.Signal(port, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cluster.Signal(port, syscall.SIGCONT) })
}

func TestSlotMigrationUnderLoad(t *testing.T) {
	scenario(t, func(t *testing.T, slot, master int) {
		ctx := context.Background()
		var dst int
		for _, p := range cluster.Masters(ctx) {
			if p != master {
				dst = p
				break
			}
		}
		if err := cluster.MigrateSlot(ctx, slot, master, dst); err != nil {
			t.Fatal(err)
		}
	}, nil)
}

// clusterFailover promotes the shard master's replica with CLUSTER FAILOVER [mode] and waits
// until it owns the slot.
func clusterFailover(mode ...any) func(t *testing.T, slot, master int) {
	return func(t *testing.T, slot, master int) {
		replica := replicaOf(t, master)
		if _, err := cluster.Do(context.Background(), replica, append([]any{"CLUSTER", "FAILOVER"}, mode...)...); err != nil {
			t.Fatal(err)
		}
		relaytest.Eventually(t, 20*time.Second, "the replica promoted", func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			owner, err := cluster.MasterOf(ctx, slot)
			return err == nil && owner == replica
		})
	}
}

func TestClusterFailoverUnderLoad(t *testing.T) { scenario(t, clusterFailover(), nil) }

func TestClusterFailoverForceUnderLoad(t *testing.T) { scenario(t, clusterFailover("FORCE"), nil) }

func TestClusterFailoverTakeoverUnderLoad(t *testing.T) {
	scenario(t, clusterFailover("TAKEOVER"), nil)
}

// A pause shorter than node-timeout: no failover, the relay must notice nothing was lost.
func TestShortPauseWithoutFailoverUnderLoad(t *testing.T) {
	scenario(t, func(t *testing.T, slot, master int) {
		stop(t, master)
		time.Sleep(time.Second) // the pause itself is what is tested: shorter than node-timeout (2 s)
		if err := cluster.Signal(master, syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
	}, nil)
}
