package relay_test

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/testing/relaytest"
	"github.com/heraldhq/herald/relay"
)

// BenchmarkSSEFanOut publishes 256-byte messages through a real shard relay (HTTP -> Redis
// script -> SSUBSCRIBE -> hub -> SSE) to N connected SSE subscribers and waits until every
// subscriber has every message. Clients and relay share this process and its 2 cores, so the
// numbers are a floor for the relay alone. Reported: deliveries/s and ns per delivery.
func BenchmarkSSEFanOut(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprint("subscribers=", n), func(b *testing.B) {
			r := relaytest.StartRelay(b, relaytest.Options{Modify: func(o *relay.ShardOptions) { o.QueueBytes = 8 << 20 }})
			var delivered atomic.Int64
			var wg sync.WaitGroup
			for range n {
				resp, err := http.Get(r.ChannelURL("/events"))
				if err != nil {
					b.Fatal(err)
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer resp.Body.Close()
					sc := bufio.NewScanner(resp.Body)
					sc.Buffer(make([]byte, 4096), 1<<20)
					for sc.Scan() {
						if bytes.HasPrefix(sc.Bytes(), []byte("event: message")) {
							delivered.Add(1)
						}
					}
				}()
			}
			relaytest.Eventually(b, 30*time.Second, "subscribers registered", func() bool { return r.Hub().Subscribers() == int64(n) })
			body := `{"pad":"` + strings.Repeat("x", 246) + `"}`
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				r.MustPublish(b, "k", body)
			}
			want := int64(b.N) * int64(n)
			deadline := time.Now().Add(60 * time.Second)
			for delivered.Load() < want && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			b.StopTimer()
			if got := delivered.Load(); got < want {
				b.Fatalf("%d of %d deliveries", got, want)
			}
			b.ReportMetric(float64(want)/b.Elapsed().Seconds(), "deliveries/s")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(want), "ns/delivery")
			r.Server.CloseClientConnections()
			wg.Wait()
		})
	}
}

// BenchmarkPublish posts 256-byte messages to a real shard relay from 32 concurrent publishers
// (HTTP -> JSON check -> Redis script), each waiting for its 202. Run it with -cpuprofile to see
// where the relay's time per publish goes; the client side shares the profile.
// BenchmarkPublish: 32 concurrent publishers of one key, through the relay's HTTP API and the
// publish function; "history=10" also keeps the key's per-key history index (three more
// commands in the same call), beside the "plain" baseline of the same run.
func BenchmarkPublish(b *testing.B) {
	for _, depth := range []int{0, 10} {
		name := "plain"
		if depth > 0 {
			name = "history=" + strconv.Itoa(depth)
		}
		b.Run(name, func(b *testing.B) {
			r := relaytest.StartRelay(b, relaytest.Options{Modify: func(o *relay.ShardOptions) { o.Map.HistoryPerKey = depth }})
			body := `{"pad":"` + strings.Repeat("x", 246) + `"}`
			b.SetParallelism(16) // 2 cores x 16 = 32 publishers
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					r.MustPublish(b, "k", body)
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "publishes/s")
		})
	}
}
