package relay_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/heraldhq/herald/relay"
	"github.com/heraldhq/herald/relay/httpapi"
	"github.com/heraldhq/herald/internal/relaytest"
)

// TestBrowserStreamsResumeWithoutLoss runs testdata/browser.html in a real browser (headless
// Chromium): a page of another origin opens an EventSource and a WebSocket to a relay (CORS,
// WebSocket origins), publishes, has its connections cut, publishes more while they are down,
// and reports what each stream got. Both must get every message once, in order.
func TestBrowserStreamsResumeWithoutLoss(t *testing.T) {
	browser := findBrowser(t)
	const total = 60

	type result struct {
		Error      string `json:"error"`
		SSE        []int  `json:"sse"`
		WS         []int  `json:"ws"`
		SSEOpens   int    `json:"sseOpens"`
		WSOpens    int    `json:"wsOpens"`
		WSProtocol string `json:"wsProtocol"`
	}
	results := make(chan result, 1)
	var proxy *relaytest.Proxy
	cut := make(chan int, 1)
	mux := http.NewServeMux()
	mux.Handle("/", http.FileServer(http.Dir("testdata")))
	mux.HandleFunc("/report/{what}", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		switch r.PathValue("what") {
		case "cut":
			cut <- proxy.Cut()
		default:
			var res result
			if err := json.Unmarshal(b, &res); err != nil {
				res.Error = "bad report: " + string(b)
			}
			select {
			case results <- res:
			default:
			}
		}
		w.WriteHeader(http.StatusNoContent)
	})
	page := httptest.NewServer(mux)
	defer page.Close()

	r := relaytest.StartRelay(t, relaytest.Options{Modify: func(o *relay.ShardOptions) {
		o.Browser = httpapi.Browser{CORSOrigins: []string{page.URL}}
	}})
	proxy = relaytest.StartProxy(t, r.URL)
	channel := proxy.URL + "/v1/channels/" + r.Map.Channel
	pageURL := page.URL + "/browser.html?" + url.Values{"relay": {channel}, "n": {strconv.Itoa(total)}}.Encode()

	var out bytes.Buffer
	cmd := exec.Command(browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--no-first-run", "--no-default-browser-check", "--user-data-dir="+t.TempDir(), pageURL)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its helper processes end with it
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	}()

	var res result
	select {
	case res = <-results:
	case <-time.After(90 * time.Second):
		t.Fatalf("the page reported nothing in 90 s; browser output:\n%s", out.String())
	}
	if res.Error != "" {
		t.Fatalf("the page failed: %s\nreport: %+v\nbrowser output:\n%s", res.Error, res, out.String())
	}
	if n := <-cut; n < 2 {
		t.Fatalf("the cut closed %d connections, want both streams", n)
	}
	want := make([]int, total)
	for i := range want {
		want[i] = i
	}
	if !slices.Equal(res.SSE, want) || !slices.Equal(res.WS, want) {
		t.Fatalf("EventSource got %v\nWebSocket got %v\nwant 0..%d once each, in order", res.SSE, res.WS, total-1)
	}
	if res.SSEOpens < 2 || res.WSOpens < 2 {
		t.Fatalf("streams opened %d (EventSource) and %d (WebSocket) times: neither resumed", res.SSEOpens, res.WSOpens)
	}
	if res.WSProtocol != httpapi.CloudEventsSubprotocol {
		t.Fatalf("WebSocket subprotocol %q, want %s", res.WSProtocol, httpapi.CloudEventsSubprotocol)
	}
}

// findBrowser returns the headless browser the test drives: Debian's chromium package.
func findBrowser(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no chromium on PATH: the browser test needs a real browser (apt-get install chromium)")
	return ""
}
