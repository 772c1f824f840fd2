// Command orders-app is the sample app of config/samples. It talks to its Herald sidecar at
// $HERALD_URL (set by the injector) as any app would: it publishes an order to the `orders`
// channel every $PUBLISH_INTERVAL (5s by default; 0 publishes nothing), keyed order-<n>, and
// follows the whole channel over SSE (unless $FOLLOW is false), printing each event; after a
// disconnect it resumes with Last-Event-ID, so it misses nothing the channel still retains.
//
// When $EDGE_KEY_FILE names the channel's edge key (spec.edge.auth.hmacSecretRef) it also
// serves, on $LISTEN_ADDR (:8080), a live order tracker for people in browsers: the page (GET /)
// asks the app for a session (GET /session?user=<id>: a token signed with that key and the
// edge's URL, $EDGE_URL) and follows its user's keys (user-<id> and those under user-<id>/, such
// as user-42/order-7) through the channel's edge.
package main

import (
	"bufio"
	"context"
	"errors"
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
	channel := envOr("CHANNEL", "orders")
	every, err := time.ParseDuration(envOr("PUBLISH_INTERVAL", "5s"))
	if err != nil {
		log.Fatalf("PUBLISH_INTERVAL: %v", err)
	}
	follows := envOr("FOLLOW", "true") != "false"
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	done := make(chan struct{})
	if keyFile := os.Getenv("EDGE_KEY_FILE"); keyFile != "" {
		tr, err := newTracker(keyFile, os.Getenv("EDGE_URL"), channel, envOr("EDGE_AUDIENCE", os.Getenv("POD_NAMESPACE")+"/"+channel))
		if err != nil {
			log.Fatal(err)
		}
		srv := &http.Server{Addr: envOr("LISTEN_ADDR", ":8080"), Handler: tr.handler(), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			<-ctx.Done()
			_ = srv.Shutdown(context.Background())
		}()
		go func() {
			defer close(done)
			log.Printf("serving the order tracker on %s", srv.Addr)
			if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
				log.Fatal(err)
			}
		}()
	} else {
		close(done)
	}

	if every > 0 || follows {
		base := os.Getenv("HERALD_URL")
		if base == "" {
			log.Fatal("HERALD_URL is not set: it is set by the Herald sidecar injector; is the pod labelled notifications.herald.dev/inject=true?")
		}
		if every > 0 {
			go publish(ctx, base, channel, every)
		}
		if follows {
			go follow(ctx, base, channel)
		}
	}
	<-ctx.Done()
	<-done
}

// publish posts order n with key order-n every interval.
func publish(ctx context.Context, base, channel string, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for n := 1; ; n++ {
		key := fmt.Sprintf("order-%d", n)
		url := fmt.Sprintf("%s/v1/channels/%s/messages?key=%s", base, channel, key)
		body := fmt.Sprintf(`{"order": %d, "status": "paid"}`, n)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if resp, err := http.DefaultClient.Do(req); err != nil {
			log.Printf("publish %s: %v", key, err)
		} else {
			answer, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			log.Printf("published %s: %s %s", key, resp.Status, strings.TrimSpace(string(answer)))
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
