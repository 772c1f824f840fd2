package failover

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/testing/relaytest"
	"github.com/heraldhq/herald/relay"
	"github.com/heraldhq/herald/relay/cursor"
	"github.com/heraldhq/herald/relay/shardmap"
	"github.com/heraldhq/herald/relay/upstream"
)

// TestRollbackIsReportedWhenRedisLosesAcknowledgedWrites makes Redis lose acknowledged,
// already delivered entries on purpose: the replica of the shard's master is stopped while
// about 9 MB of messages are published (more than the kernel buffers of the replication link
// hold, so the tail stays in the master's memory), then the master is killed and the replica
// continued and promoted. The relay must report the loss (metric, status, gap event with reason
// "rollback") and deliver what is written afterwards; a subscriber resuming from a lost cursor
// must get the rollback gap and then the new entries.
func TestRollbackIsReportedWhenRedisLosesAcknowledgedWrites(t *testing.T) {
	if err := cluster.WaitHealthy(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	r := relaytest.StartRelay(t, relaytest.Options{
		Addrs: cluster.Addrs(),
		Modify: func(o *relay.ShardOptions) {
			o.Upstream = upstream.Options{ProbeInterval: 200 * time.Millisecond, ProbeTimeout: time.Second}
			o.QueueBytes = 64 << 20
		},
	})
	ctx := context.Background()
	slot := shardmap.Slot(r.Map.Shards[0].Stream)
	master, err := cluster.MasterOf(ctx, slot)
	if err != nil {
		t.Fatal(err)
	}
	replica := replicaOf(t, master)
	sub := relaytest.OpenSSE(t, r.ChannelURL("/events"), relaytest.SSEOptions{})
	relaytest.Eventually(t, 5*time.Second, "subscriber registered", func() bool { return r.Hub().Subscribers() == 1 })

	// A replicated baseline.
	code, base := r.Publish(t, "k", `{"phase":"base"}`)
	if code != http.StatusAccepted {
		t.Fatalf("baseline publish %d", code)
	}
	req, _ := http.NewRequest(http.MethodPost, r.ChannelURL("/messages?key=k&ack=replicated"), strings.NewReader(`{"phase":"base2"}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var base2 relaytest.PublishResponse
	_ = json.NewDecoder(resp.Body).Decode(&base2)
	resp.Body.Close()
	if base2.Replicated == nil || !*base2.Replicated {
		t.Fatalf("baseline not replicated: %+v", base2)
	}

	// Stop the replica, publish more than the replication link's buffers hold.
	stop(t, replica)
	pad := strings.Repeat("x", 60<<10-64)
	var acked []string
	for i := range 150 {
		code, pr := r.Publish(t, "k", fmt.Sprintf(`{"phase":"doomed","i":%d,"pad":%q}`, i, pad))
		if code != http.StatusAccepted {
			t.Fatalf("publish %d: %d %s", i, code, pr.Error)
		}
		acked = append(acked, pr.ID)
	}
	want := append([]string{base.ID, base2.ID}, acked...)
	for i, ev := range sub.Messages(t, len(want), 30*time.Second) {
		if ev.ID != want[i] {
			t.Fatalf("delivery %d is %s, want %s", i, ev.ID, want[i])
		}
	}
	if err := cluster.Signal(master, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := cluster.Signal(replica, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cluster.Restart(master)
		if err := cluster.WaitHealthy(60 * time.Second); err != nil {
			t.Error(err)
		}
	}()
	relaytest.Eventually(t, 40*time.Second, "the relay reports a rollback", func() bool {
		return r.Metric(t, "herald_relay_rollbacks_total") >= 1
	})
	r.WaitReady(t, 30*time.Second)

	// What survived: the baseline and a prefix of the acknowledged messages.
	xs, err := r.Redis.XRange(ctx, r.Map.Shards[0].Stream, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	survived := len(xs) - 2
	if survived < 0 || survived >= len(acked) || xs[len(xs)-1].ID != want[len(xs)-1] {
		t.Fatalf("stream after failover holds %d entries (last %s); want the baseline plus a strict prefix of the %d acknowledged", len(xs), xs[len(xs)-1].ID, len(acked))
	}
	survivor := xs[len(xs)-1].ID
	st := r.Status()
	if len(st.Rollbacks) != 1 || st.Rollbacks[0].LastDelivered.String() != acked[len(acked)-1] || st.Rollbacks[0].Survivor.String() != survivor {
		t.Fatalf("status rollbacks %+v; want one from %s back to %s", st.Rollbacks, acked[len(acked)-1], survivor)
	}
	gap, err := sub.Next(10 * time.Second)
	if err != nil || gap.Event != "gap" || gap.ID != survivor || !strings.Contains(gap.Data, `"reason":"rollback"`) {
		t.Fatalf("want a rollback gap resuming at %s, got %+v %v", survivor, gap, err)
	}
	// Entries written after the failover are delivered.
	after := []string{r.MustPublish(t, "k", `{"phase":"after","i":0}`), r.MustPublish(t, "k", `{"phase":"after","i":1}`)}
	for i, ev := range sub.Messages(t, len(after), 10*time.Second) {
		if ev.ID != after[i] {
			t.Fatalf("after the rollback got %s, want %s", ev.ID, after[i])
		}
	}
	// A subscriber resuming from a lost cursor hears about the rollback, then gets what followed it.
	resumed := relaytest.OpenSSE(t, r.ChannelURL("/events"), relaytest.SSEOptions{LastEventID: acked[len(acked)-1]})
	gap, err = resumed.Next(10 * time.Second)
	if err != nil || gap.Event != "gap" || gap.ID != survivor || !strings.Contains(gap.Data, `"reason":"rollback"`) {
		t.Fatalf("resume from a lost cursor: want a rollback gap at %s, got %+v %v", survivor, gap, err)
	}
	for i, ev := range resumed.Messages(t, len(after), 10*time.Second) {
		if ev.ID != after[i] {
			t.Fatalf("resumed after the rollback got %s, want %s", ev.ID, after[i])
		}
	}
	lastLost, _ := cursor.Parse(acked[len(acked)-1])
	t.Logf("Redis lost %d of %d acknowledged messages (last lost %v); survivor %s; rollback reported after %d sessions",
		len(acked)-survived, len(acked), lastLost, survivor, st.Sessions)
}

// replicaOf returns the port of the replica of the master on port.
func replicaOf(t *testing.T, master int) int {
	t.Helper()
	for _, p := range cluster.Ports() {
		v, err := cluster.Do(context.Background(), p, "INFO", "replication")
		if err != nil {
			continue
		}
		info, _ := v.(string)
		if strings.Contains(info, "role:slave") && strings.Contains(info, "master_port:"+strconv.Itoa(master)+"\r") {
			return p
		}
	}
	t.Fatalf("no replica of %d", master)
	return 0
}

// A retry of an ?ack=replicated publish (the same Idempotency-Key) reports the replication of
// the original entry: while the shard master's only replica is paused neither the first
// attempt nor its retry says replicated, and once it runs again the retry does.
func TestDuplicateAckReplicatedWaitsForTheOriginal(t *testing.T) {
	if err := cluster.WaitHealthy(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	r := relaytest.StartRelay(t, relaytest.Options{
		Addrs:  cluster.Addrs(),
		Modify: func(o *relay.ShardOptions) { o.WaitTimeout = 300 * time.Millisecond },
	})
	master, err := cluster.MasterOf(context.Background(), shardmap.Slot(r.Map.Shards[0].Stream))
	if err != nil {
		t.Fatal(err)
	}
	replica := replicaOf(t, master)
	post := func() relaytest.PublishResponse {
		t.Helper()
		code, pr := r.Publish(t, "k&ack=replicated", `{"once":true}`, "Idempotency-Key", "once")
		if code != http.StatusAccepted || pr.Replicated == nil {
			t.Fatalf("publish with ack=replicated: %d %+v", code, pr)
		}
		return pr
	}
	stop(t, replica)
	if first := post(); *first.Replicated {
		t.Fatalf("replicated with the only replica paused: %+v", first)
	}
	if retry := post(); !retry.Duplicate || *retry.Replicated {
		t.Fatalf("the retry said duplicate=%v replicated=%v with the replica still paused; want a duplicate, not replicated", retry.Duplicate, *retry.Replicated)
	}
	if err := cluster.Signal(replica, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	relaytest.Eventually(t, 10*time.Second, "a retry replicated once the replica runs", func() bool {
		pr := post()
		return pr.Duplicate && *pr.Replicated
	})
}
