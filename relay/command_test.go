package relay_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/testing/relaytest"
	"github.com/heraldhq/herald/relay"
	"github.com/heraldhq/herald/relay/shardmap"
)

func TestMainRejectsBadInvocations(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "map.json")
	m := shardmap.New("ns", "ch", shardmap.DeliveryDurable, []string{shardmap.HashTag("ns", "ch", 0, 0)})
	b, _ := json.Marshal(m)
	if err := os.WriteFile(good, b, 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.json")
	_ = os.WriteFile(bad, []byte("{"), 0o600)
	tests := map[string]struct {
		args    []string
		mention string
	}{
		"sidecar no channels":           {[]string{"--role=sidecar"}, "--channels is required"},
		"sidecar not loopback":          {[]string{"--role=sidecar", "--channels=a", "--namespace=ns", "--listen=0.0.0.0:7070"}, "loopback only"},
		"sidecar no namespace":          {[]string{"--role=sidecar", "--channels=a"}, "has no namespace"},
		"sidecar same name twice":       {[]string{"--role=sidecar", "--channels=a,other/a", "--namespace=ns"}, "both named"},
		"unknown auth":                  {[]string{"--shardmap", good, "--shard=0", "--redis-addresses=127.0.0.1:1", "--auth=maybe"}, "--auth must be"},
		"tokenreview outside a cluster": {[]string{"--shardmap", good, "--shard=0", "--redis-addresses=127.0.0.1:1"}, "--auth=none is for local tests only"},
		"unknown role":                  {[]string{"--role=x"}, "--role must be"},
		"edge two channels":             {[]string{"--role=edge", "--channels=a,b", "--namespace=ns", "--user-token-hmac-key-file=x"}, "an edge serves one channel"},
		"edge no keys":                  {[]string{"--role=edge", "--channels=a", "--namespace=ns"}, "needs the keys of its users' tokens"},
		"edge missing key file":         {[]string{"--role=edge", "--channels=a", "--namespace=ns", "--user-token-hmac-key-file", filepath.Join(dir, "nope")}, "reading the HMAC key"},
		"no shard map":                  {[]string{"--shard=0"}, "--shardmap is required"},
		"missing map file":              {[]string{"--shardmap", filepath.Join(dir, "nope"), "--shard=0"}, "reading the shard map"},
		"map not JSON":                  {[]string{"--shardmap", bad, "--shard=0"}, "not valid JSON"},
		"no shard":                      {[]string{"--shardmap", good}, "--shard is required"},
		"no redis":                      {[]string{"--shardmap", good, "--shard=0"}, "--redis-addresses is required"},
		"bad redis address":             {[]string{"--shardmap", good, "--shard=0", "--redis-addresses=nohost"}, "not host:port"},
		"shard out of range":            {[]string{"--shardmap", good, "--shard=3", "--redis-addresses=127.0.0.1:1", "--auth=none"}, "shard 3 does not exist"},
		"probe timeout":                 {[]string{"--shardmap", good, "--shard=0", "--redis-addresses=127.0.0.1:1", "--probe-timeout=1s", "--probe-interval=2s"}, "--probe-timeout must be longer"},
		"missing Redis CA":              {[]string{"--shardmap", good, "--shard=0", "--redis-addresses=127.0.0.1:1", "--auth=none", "--redis-tls", "--redis-tls-ca-file", filepath.Join(dir, "nope")}, "--redis-tls-ca-file"},
		"Redis CA not PEM":              {[]string{"--shardmap", good, "--shard=0", "--redis-addresses=127.0.0.1:1", "--auth=none", "--redis-tls", "--redis-tls-ca-file", bad}, "holds no PEM certificate"},
		"client cert without key":       {[]string{"--shardmap", good, "--shard=0", "--redis-addresses=127.0.0.1:1", "--auth=none", "--redis-tls", "--redis-tls-cert-file", bad}, "go together"},
		"client cert not PEM":           {[]string{"--shardmap", good, "--shard=0", "--redis-addresses=127.0.0.1:1", "--auth=none", "--redis-tls", "--redis-tls-cert-file", bad, "--redis-tls-key-file", bad}, "Redis client certificate"},
		"stray argument":                {[]string{"extra"}, "unexpected arguments"},
		"unknown flag":                  {[]string{"--nope"}, "unknown flag: --nope"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := relay.Main(context.Background(), tc.args)
			if err == nil || !strings.Contains(err.Error(), tc.mention) {
				t.Fatalf("Main(%q) = %v, want an error mentioning %q", tc.args, err, tc.mention)
			}
		})
	}
	if err := relay.Main(context.Background(), []string{"--help"}); err != nil {
		t.Fatalf("--help: %v", err)
	}
}

// TestMainServesAShardFromEnvironment runs the real entry point configured through the
// environment, publishes through it and stops it by cancelling its context.
func TestMainServesAShardFromEnvironment(t *testing.T) {
	channel := relaytest.UniqueName(t)
	m := shardmap.New("test", channel, shardmap.DeliveryDurable, []string{shardmap.HashTag("test", channel, 0, 0)})
	path := filepath.Join(t.TempDir(), "shardmap.json")
	b, _ := json.Marshal(m)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	t.Setenv("HERALD_SHARDMAP", path)
	t.Setenv("HERALD_SHARD", "0")
	t.Setenv("HERALD_REDIS_ADDRESSES", strings.Join(relaytest.RedisAddrs(), ","))
	t.Setenv("HERALD_LOG_LEVEL", "warn")
	t.Setenv("HERALD_AUTH", "none")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- relay.Main(ctx, []string{"--listen", addr}) }()
	base := "http://" + addr
	relaytest.Eventually(t, 20*time.Second, "relay ready", func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	resp, err := http.Post(base+"/v1/channels/"+channel+"/messages?key=k", "text/plain", strings.NewReader("hi"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("publish: %d", resp.StatusCode)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Main returned %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Main did not return after its context ended")
	}
	r := relaytest.StartRelay(t, relaytest.Options{Channel: channel}) // reuses the channel only to clean its stream up
	if n := r.Redis.XLen(context.Background(), m.Shards[0].Stream).Val(); n != 1 {
		t.Fatalf("stream holds %d entries, want 1", n)
	}
}

// A sidecar serves its metrics on --metrics-listen too (Prometheus cannot reach loopback), and
// only its metrics there: the API stays on --listen.
func TestSidecarServesMetricsOnTheirOwnListener(t *testing.T) {
	api, metrics := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- relay.Main(ctx, []string{"--role=sidecar", "--channels=orders", "--namespace=shop", "--log-level=error",
			"--listen", api, "--metrics-listen", metrics})
	}()
	body := metricsOf(t, metrics)
	if !strings.Contains(string(body), "herald_relay_sidecar_upstream_streams") {
		t.Fatalf("the metrics listener does not serve the sidecar's metrics:\n%s", body)
	}
	if resp, err := http.Get("http://" + metrics + "/v1/channels/orders/shards"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("the API must not be served on the metrics listener: %v %v", resp, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Main returned %v", err)
	}
}

// An edge serves end users on --listen and its metrics only on --metrics-listen: /metrics on the
// users' listener is 404.
func TestEdgeServesUsersAndMetricsApart(t *testing.T) {
	key := filepath.Join(t.TempDir(), "hmac")
	if err := os.WriteFile(key, []byte(strings.Repeat("k", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	api, metrics := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- relay.Main(ctx, []string{"--role=edge", "--channels=orders", "--namespace=shop", "--log-level=error",
			"--user-token-hmac-key-file", key, "--listen", api, "--metrics-listen", metrics})
	}()
	body := metricsOf(t, metrics)
	if !strings.Contains(string(body), `herald_build_info{`) || !strings.Contains(string(body), `role="edge"`) {
		t.Fatalf("the metrics listener does not serve the edge's metrics:\n%.500s", body)
	}
	resp, err := http.Get("http://" + api + "/metrics")
	if err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("the users' listener answers /metrics with %v %v, want 404", resp, err)
	}
	resp.Body.Close()
	resp, err = http.Get("http://" + api + "/v1/channels/orders/events")
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the users' listener answers a stream without a token with %v %v, want 401", resp, err)
	}
	resp.Body.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Main returned %v", err)
	}
}

// Kubernetes sets <SERVICE>_PORT, <SERVICE>_SERVICE_HOST and <SERVICE>_SERVICE_PORT for each
// Service of a pod's namespace; an app's Service named herald-<x> gives HERALD_<X>_PORT. No relay
// flag may end so, or an injected sidecar (whose pod's service links are the app's) would take
// its value from a Service.
func TestNoFlagLooksLikeAServiceLink(t *testing.T) {
	r, w, _ := os.Pipe()
	stderr := os.Stderr
	os.Stderr = w
	err := relay.Main(context.Background(), []string{"--help"})
	os.Stderr = stderr
	w.Close()
	out, _ := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	flags := 0
	for _, line := range strings.Split(string(out), "\n") {
		name, ok := strings.CutPrefix(line, "  --")
		if !ok {
			continue
		}
		name, _, _ = strings.Cut(name, " ")
		flags++
		for _, suffix := range []string{"-port", "-service-host", "-service-port", "-addr", "-proto"} {
			if strings.HasSuffix(name, suffix) {
				t.Errorf("--%s would be set by a Service's %s variable", name, strings.ToUpper(strings.ReplaceAll(suffix, "-", "_")))
			}
		}
	}
	if flags < 20 {
		t.Fatalf("--help listed %d flags:\n%s", flags, out)
	}
}

// freeAddr is a loopback address nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// metricsOf waits until addr serves /metrics and returns what it serves.
func metricsOf(t *testing.T, addr string) []byte {
	t.Helper()
	var body []byte
	relaytest.Eventually(t, 10*time.Second, "metrics served", func() bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ = io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusOK
	})
	return body
}
