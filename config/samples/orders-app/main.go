// Command orders-app is the sample app of config/samples: it talks to its Herald sidecar at
// $HERALD_URL (set by the injector) as any app would. It publishes an order to the `orders`
// channel every $PUBLISH_INTERVAL (5s by default) and follows the whole channel over SSE,
// printing each event; after a disconnect it resumes with Last-Event-ID, so it misses nothing
// the channel still retains.
package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	base := os.Getenv("HERALD_URL")
	if base == "" {
		log.Fatal("HERALD_URL is not set: it is set by the Herald sidecar injector; is the pod labelled notifications.herald.dev/inject=true?")
	}
	channel := envOr("CHANNEL", "orders")
	every, err := time.ParseDuration(envOr("PUBLISH_INTERVAL", "5s"))
	if err != nil {
		log.Fatalf("PUBLISH_INTERVAL: %v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go publish(ctx, base, channel, every)
	follow(ctx, base, channel)
}

// publish posts order n with key order-n every interval.
func publish(ctx context.Context, base, channel string, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for n := 1; ; n++ {
		url := fmt.Sprintf("%s/v1/channels/%s/messages?key=order-%d", base, channel, n)
		body := fmt.Sprintf(`{"order": %d, "status": "paid"}`, n)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if resp, err := http.DefaultClient.Do(req); err != nil {
			log.Printf("publish order-%d: %v", n, err)
		} else {
			answer, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			log.Printf("published order-%d: %s %s", n, resp.Status, strings.TrimSpace(string(answer)))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// follow reads the channel's SSE stream until ctx ends, resuming after the last id it saw.
func follow(ctx context.Context, base, channel string) {
	var last string
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/channels/"+channel+"/events", nil)
		if last != "" {
			req.Header.Set("Last-Event-ID", last)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			log.Printf("subscribe: %v", err)
		} else if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			log.Printf("subscribe: %s %s", resp.Status, strings.TrimSpace(string(b)))
		} else {
			var event string
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 64<<10), 1<<20)
			for sc.Scan() {
				line := sc.Text()
				switch {
				case strings.HasPrefix(line, "id:"):
					last = strings.TrimSpace(line[3:])
				case strings.HasPrefix(line, "event:"):
					event = strings.TrimSpace(line[6:])
				case strings.HasPrefix(line, "data:"):
					log.Printf("received %s: %s", event, strings.TrimSpace(line[5:]))
				}
			}
			resp.Body.Close()
			log.Printf("stream ended (%v); resuming after %q", sc.Err(), last)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
