package sidecar_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/internal/testing/relaytest"
	"github.com/heraldhq/herald/relay"
	"github.com/heraldhq/herald/relay/cursor"
	"github.com/heraldhq/herald/relay/shardmap"
	"github.com/heraldhq/herald/relay/sidecar"
)

// blackHole is a TCP proxy in front of a relay that can go silent the way a relay on a dead node
// does: from then on it passes no byte either way and closes no connection (no reset, no FIN),
// and a connection made afterwards is accepted and never answered.
type blackHole struct {
	ln     net.Listener
	target string
	silent atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn // closed when the test ends
}

func startBlackHole(t *testing.T, target string) *blackHole {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &blackHole{ln: ln, target: target}
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, c := range p.conns {
			c.Close()
		}
	})
	return p
}

func (p *blackHole) addr() string { return p.ln.Addr().String() }

func (p *blackHole) hold(c net.Conn) {
	p.mu.Lock()
	p.conns = append(p.conns, c)
	p.mu.Unlock()
}

func (p *blackHole) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.hold(c)
		if p.silent.Load() {
			continue // held open, never answered
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.hold(up)
		go p.pipe(up, c)
		go p.pipe(c, up)
	}
}

// pipe copies src to dst until either ends (then it closes both, as the relay's own close would
// reach its client), or until the proxy goes silent: then it drops what it read and reads no more.
func (p *blackHole) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if p.silent.Load() {
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			src.Close()
			dst.Close()
			return
		}
	}
}

// TestASilentReplicaIsLeftWithoutLossOrDuplicate: a shard's two relays, reached through proxies
// standing in for their pods' addresses. The one serving the sidecar's upstream stream goes
// silent while four publishers publish through the sidecar, the way a relay on a node that dies
// without a word does (packets dropped, nothing closed). The sidecar leaves it within its idle
// timeout and resumes the stream on the other replica from its cursor, so its subscriber gets
// every acknowledged message once and in order; a publish sent to the silent one is answered by
// the other within the publish timeout, and nothing is stored twice. The endpoints file knows the
// shard only by its headless Service (Shard.Replicas), as DNS would answer it.
func TestASilentReplicaIsLeftWithoutLossOrDuplicate(t *testing.T) {
	const messages = 300
	c := relaytest.StartChannel(t, relaytest.Options{Shards: 1, Modify: func(o *relay.ShardOptions) {
		o.Heartbeat = 200 * time.Millisecond
	}}, 2)
	proxies := make([]*blackHole, 2)
	addrs := make([]string, 2)
	for i, r := range c.Replicas[0] {
		proxies[i] = startBlackHole(t, strings.TrimPrefix(r.URL, "http://"))
		addrs[i] = proxies[i].addr()
	}
	pods, err := url.Parse(c.Map.Shards[0].Replicas)
	if err != nil || pods.Hostname() == "" {
		t.Fatalf("the shard map names no headless Service: %+v", c.Map.Shards[0])
	}
	eps, _ := json.Marshal(shardmap.Endpoints{
		pods.Hostname(): addrs,
		shardmap.ChannelServiceName(c.Map.Channel) + "." + c.Map.Namespace + ".svc": addrs,
	})
	epsFile := filepath.Join(t.TempDir(), "endpoints.json")
	if err := os.WriteFile(epsFile, eps, 0o600); err != nil {
		t.Fatal(err)
	}
	sc, scURL, _ := runSidecar(t, sidecar.Options{
		Channels:      []sidecar.ChannelRef{{Namespace: c.Map.Namespace, Name: c.Map.Channel}},
		EndpointsFile: epsFile, Heartbeat: time.Second, RefreshInterval: time.Second,
		IdleTimeout: time.Second, // five of the relays' heartbeats
	})
	ts := &testSidecar{Sidecar: sc, URL: scURL, channel: c.Map.Channel, endpoints: epsFile}
	relaytest.Eventually(t, 20*time.Second, "sidecar ready", func() bool { return sc.Ready() })

	sub := relaytest.OpenSSE(t, ts.channelURL("/events"), relaytest.SSEOptions{})
	relaytest.Eventually(t, 10*time.Second, "one upstream stream", func() bool { return upstreamsOf(t, c, 0, nil) == 1 })
	victim := 0 // the replica serving the stream
	if c.Replicas[0][1].Hub().Subscribers() == 1 {
		victim = 1
	}
	other := c.Replicas[0][1-victim]

	var mu sync.Mutex
	acked := map[string]bool{}
	var next atomic.Int64
	var wg sync.WaitGroup
	var silenced sync.Once
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n := int(next.Add(1)) - 1
				if n >= messages {
					return
				}
				if n == messages/3 {
					silenced.Do(func() { proxies[victim].silent.Store(true) })
				}
				code, p := ts.publish(t, fmt.Sprintf("key-%d", n%7), fmt.Sprintf(`{"n":%d}`, n))
				if code != http.StatusAccepted {
					t.Errorf("publish %d: %d %+v", n, code, p)
					return
				}
				mu.Lock()
				acked[p.ID] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if len(acked) != messages {
		t.Fatalf("%d distinct IDs acknowledged for %d messages", len(acked), messages)
	}

	var last cursor.ID
	for got := 0; got < messages; got++ {
		ev, err := sub.Next(20 * time.Second)
		if err != nil || ev.Event != "message" {
			t.Fatalf("after %d messages: %+v %v", got, ev, err)
		}
		id, err := cursor.Parse(ev.ID)
		if err != nil || !last.Less(id) || !acked[ev.ID] {
			t.Fatalf("after %s came %s (%v): a duplicate, out of order, or not acknowledged", last, ev.ID, err)
		}
		last = id
	}
	relaytest.Eventually(t, 10*time.Second, "the stream on the other replica", func() bool { return other.Hub().Subscribers() == 1 })
	rc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: relaytest.RedisAddrs()})
	defer rc.Close()
	if n, err := rc.XLen(context.Background(), c.Map.Shards[0].Stream).Result(); err != nil || n != messages {
		t.Fatalf("the shard's stream holds %d entries (%v), want each of the %d messages once", n, err, messages)
	}
	t.Logf("publish retries: %v, upstream reconnects: %v", ts.metric(t, "herald_relay_sidecar_publish_retries_total"),
		ts.metric(t, "herald_relay_sidecar_upstream_reconnects_total"))
}
