// Package examples_test runs the client examples against a real relay: the TypeScript one
// (compiled with tsc) in headless Chromium, the Python one with python3. Both follow a channel
// through a connection cut and must get every message once, in order.
package examples_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/internal/testing/relaytest"
	"github.com/heraldhq/herald/relay"
	"github.com/heraldhq/herald/relay/httpapi"
)

const total = 40

func sequence(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

func tool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not on PATH: apt-get install %s (hack/test-deps.sh does)", name, pkg)
	}
	return p
}

func TestTypeScriptClientInABrowser(t *testing.T) {
	js := compileTypeScript(t)
	pages := relaytest.ServePages(t, "testdata")
	pages.Files["/herald.js"] = js
	r := relaytest.StartRelay(t, relaytest.Options{Modify: func(o *relay.ShardOptions) {
		o.Browser = httpapi.Browser{CORSOrigins: []string{pages.URL}}
	}})
	proxy := relaytest.StartProxy(t, r.URL)
	cut := 0
	pages.OnCut = func() { cut = proxy.Cut() }
	start := r.MustPublish(t, "start", `{"n":-1}`) // the page follows from here, whenever it connects
	channel := proxy.URL + "/v1/channels/" + r.Map.Channel
	report := pages.Run(t, "/typescript.html?"+url.Values{"relay": {channel}, "n": {strconv.Itoa(total)}, "after": {start}}.Encode(), 90*time.Second)

	var res struct {
		Got    []int `json:"got"`
		Breaks int   `json:"breaks"`
	}
	if err := json.Unmarshal(report, &res); err != nil {
		t.Fatalf("report %s: %v", report, err)
	}
	if cut < 1 || res.Breaks < 1 {
		t.Fatalf("cut %d connections, the page saw %d breaks: the stream was never broken", cut, res.Breaks)
	}
	if !slices.Equal(res.Got, sequence(total)) {
		t.Fatalf("the page got %v, want 0..%d once each, in order", res.Got, total-1)
	}
}

func TestPythonClient(t *testing.T) {
	python := tool(t, "python3", "python3")
	r := relaytest.StartRelay(t, relaytest.Options{})
	proxy := relaytest.StartProxy(t, r.URL)
	channel := proxy.URL + "/v1/channels/" + r.Map.Channel
	start := r.MustPublish(t, "start", `{"n":-1}`)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	follow := exec.CommandContext(ctx, python, "python/herald.py", "follow", channel, "--after", start, "--count", strconv.Itoa(total))
	stdout, err := follow.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	follow.Stderr = &stderr
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	var got []int
	var ids []string
	read := func(n int) {
		t.Helper()
		for len(got) < n {
			line, ok := <-lines
			if !ok {
				t.Fatalf("the Python client ended after %d messages: %s", len(got), stderr.String())
			}
			var ev struct {
				ID   string `json:"id"`
				Type string `json:"type"`
				Data struct{ N int }
			}
			if err := json.Unmarshal([]byte(line), &ev); err != nil || ev.Type == "dev.herald.gap" {
				t.Fatalf("the Python client printed %q (%v)", line, err)
			}
			got, ids = append(got, ev.Data.N), append(ids, ev.ID)
		}
	}

	// The first half is published with the Python client too; the rest while its stream is cut.
	for n := range total / 2 {
		b, err := exec.Command(python, "python/herald.py", "publish", channel, fmt.Sprintf("k%d", n%5), fmt.Sprintf(`{"n":%d}`, n)).CombinedOutput()
		var p client.Published
		if err != nil || json.Unmarshal(b, &p) != nil || p.EventID != "0:"+p.ID {
			t.Fatalf("python publish %d: %v: %s", n, err, b)
		}
	}
	read(total / 2)
	if proxy.Cut() < 1 {
		t.Fatal("nothing to cut: the Python client holds no stream")
	}
	c := client.New(r.URL)
	for n := total / 2; n < total; n++ {
		if _, err := c.Publish(ctx, r.Map.Channel, client.Message{Key: fmt.Sprintf("k%d", n%5), Data: []byte(fmt.Sprintf(`{"n":%d}`, n))}); err != nil {
			t.Fatal(err)
		}
	}
	read(total)
	if err := follow.Wait(); err != nil {
		t.Fatalf("the Python client: %v: %s", err, stderr.String())
	}
	if !slices.Equal(got, sequence(total)) || slices.Contains(ids, "") {
		t.Fatalf("the Python client got %v, want 0..%d once each, in order", got, total-1)
	}
}
