package sidecar

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/heraldhq/herald/relay/shardmap"
)

// fileCheckInterval bounds how often watched files (endpoints, token) are stat'ed.
const fileCheckInterval = 250 * time.Millisecond

// resolver turns a relay Service URL ("http://orders-shard-0.shop.svc:7070") into base URLs of
// its replicas: through the endpoints file when there is one (re-read when it changes), else
// through DNS (a ClusterIP Service resolves to one address, and kube-proxy picks the replica; a
// headless one to every ready replica's).
type resolver struct {
	file       watchedFile
	mu         sync.Mutex
	eps        shardmap.Endpoints
	lookupHost func(ctx context.Context, host string) ([]string, error) // nil: net.DefaultResolver's
}

// resolveShard returns the base URLs of a shard's relays: every ready replica, from the shard's
// headless Service (Shard.Replicas), so that calls choose the replica and can leave one that went
// silent. A map without it (from an older operator), a name that does not resolve (the Service
// not created yet, or no ready replica) or an endpoints file without it falls back to the shard's
// Service (Shard.Endpoint).
func (r *resolver) resolveShard(ctx context.Context, sh shardmap.Shard, fresh bool) ([]string, error) {
	if sh.Replicas != "" {
		if bases, err := r.resolve(ctx, sh.Replicas, fresh); err == nil {
			return bases, nil
		}
	}
	return r.resolve(ctx, sh.Endpoint, fresh)
}

// resolve returns the base URLs ("http://host:port") serving endpoint. fresh forces the
// endpoints file to be checked now (after a failure).
func (r *resolver) resolve(ctx context.Context, endpoint string, fresh bool) ([]string, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("relay endpoint %q is not a URL", endpoint)
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = fmt.Sprint(shardmap.RelayPort)
	}
	if r.file.path == "" {
		lookup := r.lookupHost
		if lookup == nil {
			lookup = net.DefaultResolver.LookupHost
		}
		ips, err := lookup(ctx, host)
		if err != nil {
			return nil, fmt.Errorf("resolving %s: %w", host, err)
		}
		slices.Sort(ips) // DNS shuffles them: streams rotate over a stable list
		out := make([]string, len(ips))
		for i, ip := range ips {
			out[i] = u.Scheme + "://" + net.JoinHostPort(ip, port)
		}
		return out, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if raw, changed, err := r.file.read(fresh); err != nil {
		if r.eps == nil {
			return nil, fmt.Errorf("endpoints file: %w", err)
		}
	} else if changed {
		var eps shardmap.Endpoints
		if err := json.Unmarshal(raw, &eps); err != nil {
			if r.eps == nil {
				return nil, fmt.Errorf("endpoints file %s is not a JSON object of host -> [host:port]: %w", r.file.path, err)
			}
		} else {
			r.eps = eps
		}
	}
	addrs := r.eps[net.JoinHostPort(host, port)]
	if len(addrs) == 0 {
		addrs = r.eps[host]
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%s has no ready replica in the endpoints file %s", host, r.file.path)
	}
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = u.Scheme + "://" + a
	}
	return out, nil
}

// watchedFile reads a file again only when its size or modification time changed (projected
// tokens and endpoint lists are replaced while the process runs).
type watchedFile struct {
	path    string
	checked time.Time
	mod     time.Time
	size    int64
	loaded  bool
}

// read returns the file's content and whether it changed since the last read. It stats the
// file at most every fileCheckInterval unless fresh. The caller serializes calls.
func (f *watchedFile) read(fresh bool) ([]byte, bool, error) {
	now := time.Now()
	if f.loaded && !fresh && now.Sub(f.checked) < fileCheckInterval {
		return nil, false, nil
	}
	f.checked = now
	st, err := os.Stat(f.path)
	if err != nil {
		return nil, false, err
	}
	if f.loaded && st.ModTime().Equal(f.mod) && st.Size() == f.size {
		return nil, false, nil
	}
	b, err := os.ReadFile(f.path)
	if err != nil {
		return nil, false, err
	}
	f.mod, f.size, f.loaded = st.ModTime(), st.Size(), true
	return b, true, nil
}

// tokenSource is the bearer token the sidecar presents, re-read when the file changes.
type tokenSource struct {
	mu    sync.Mutex
	file  watchedFile
	token string
	err   error
}

// get returns the current token ("" without a token file). fresh forces a re-read (after a
// 401: the kubelet may just have rotated it).
func (t *tokenSource) get(fresh bool) (string, error) {
	if t.file.path == "" {
		return "", nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	raw, changed, err := t.file.read(fresh)
	switch {
	case err != nil:
		t.err = fmt.Errorf("reading the token file: %w", err)
	case changed:
		t.token, t.err = string(trimSpace(raw)), nil
	}
	if t.token == "" && t.err != nil {
		return "", t.err
	}
	return t.token, nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}
