package relaytest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Pages serves a directory of web pages on loopback and runs them in headless Chromium. A page
// reports by POSTing JSON: /report/done (its result), /report/error (a failure), and
// /report/cut (the test's OnCut runs and the answer comes when it is done).
type Pages struct {
	URL     string            // the pages' origin, http://127.0.0.1:<port>
	OnCut   func()            // what /report/cut does (e.g. cut the connections of a Proxy)
	Files   map[string][]byte // more files to serve, by path (e.g. "/herald.js")
	mux     *http.ServeMux
	reports chan report

	// mu orders the test's goroutine and the handlers, which the race detector cannot see
	// through the browser: Run takes it before the page starts and after it reported, the
	// handlers while they read Files or run OnCut.
	mu sync.Mutex
}

type report struct {
	failed bool
	body   []byte
}

// ServePages serves dir until the test ends.
func ServePages(t testing.TB, dir string) *Pages {
	t.Helper()
	p := &Pages{reports: make(chan report, 1), Files: map[string][]byte{}}
	files := http.FileServer(http.Dir(dir))
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		b, ok := p.Files[r.URL.Path]
		p.mu.Unlock()
		if ok {
			w.Header().Set("Content-Type", "text/javascript")
			_, _ = w.Write(b)
			return
		}
		files.ServeHTTP(w, r)
	})
	mux.HandleFunc("POST /report/{what}", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		switch r.PathValue("what") {
		case "cut":
			p.mu.Lock()
			if p.OnCut != nil {
				p.OnCut()
			}
			p.mu.Unlock()
		default:
			select {
			case p.reports <- report{failed: r.PathValue("what") != "done", body: b}:
			default:
			}
		}
		w.WriteHeader(http.StatusNoContent)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	p.URL, p.mux = srv.URL, mux
	return p
}

// HandleFunc serves more of the pages' origin, as the app behind a page would (e.g. GET /token).
func (p *Pages) HandleFunc(pattern string, h http.HandlerFunc) { p.mux.HandleFunc(pattern, h) }

// Run opens path (with its query) in headless Chromium and returns what the page reported to
// /report/done; a report to /report/error, or none within the timeout, fails the test.
func (p *Pages) Run(t testing.TB, path string, within time.Duration) []byte {
	t.Helper()
	browser := Browser(t)
	p.sync()
	defer p.sync()
	var out bytes.Buffer
	cmd := exec.Command(browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--no-first-run", "--no-default-browser-check", "--user-data-dir="+t.TempDir(), p.URL+path)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its helper processes end with it
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	}()
	select {
	case r := <-p.reports:
		if r.failed {
			t.Fatalf("the page failed: %s\nbrowser output:\n%s", r.body, out.String())
		}
		return r.body
	case <-time.After(within):
		t.Fatalf("the page reported nothing in %v; browser output:\n%s", within, out.String())
	}
	return nil
}

// sync orders what the test did before it with what the handlers do after it, and back.
func (p *Pages) sync() {
	p.mu.Lock()
	p.mu.Unlock() //nolint:staticcheck // an empty critical section is the point
}

// Browser returns the headless browser tests drive: Debian's chromium package.
func Browser(t testing.TB) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no chromium on PATH: the browser tests need a real browser (apt-get install chromium; hack/test-deps.sh does)")
	return ""
}

// Tab is a page open in headless Chromium, driven over the DevTools protocol (chromedp): for
// pages the test cannot add a report to, such as the sample app's, it reads the page's state.
type Tab struct {
	ctx context.Context
}

// OpenTab opens url in a new headless Chromium, closed when the test ends.
func OpenTab(t testing.TB, url string) *Tab {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(Browser(t)), chromedp.NoSandbox,
		chromedp.UserDataDir(t.TempDir()), chromedp.Flag("disable-dev-shm-usage", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if _, err := chromedp.Run(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("opening %s in Chromium: %v", url, err)
	}
	return &Tab{ctx: ctx}
}

// Eval evaluates a JavaScript expression in the page and decodes its value (JSON) into out.
func (tab *Tab) Eval(expr string, out any) error {
	ctx, cancel := context.WithTimeout(tab.ctx, 10*time.Second)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](expr))
	if err != nil {
		return err
	}
	return json.Unmarshal(raw, out)
}
