package examples_test

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/testing/relaytest"
)

// recipe is the nginx configuration of docs/app-guide.md's "Browsers" section, as a reader
// copies it.
func recipe(t *testing.T) string {
	t.Helper()
	guide, err := os.ReadFile("../docs/app-guide.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(guide), "## Browsers")
	_, block, found := strings.Cut(section, "```nginx\n")
	block, _, closed := strings.Cut(block, "\n```")
	if !found || !closed {
		t.Fatal("docs/app-guide.md's Browsers section has no nginx block")
	}
	return block
}

// The app guide's proxy recipe, run by a real nginx in front of a relay (standing in for the
// sidecar) and an app that signs users in: pages of the app's own origin publish as their
// user, and a cross-site request (another Origin, or none) cannot publish as the signed-in
// user, nor can a request without a session.
func TestTheProxyRecipeRefusesCrossSitePublishes(t *testing.T) {
	nginx := tool(t, "nginx", "nginx-light")
	r := relaytest.StartRelay(t, relaytest.Options{})
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if c, err := req.Cookie("session"); err == nil && c.Value == "alice-secret" {
			w.Header().Set("X-User", "alice")
			return
		}
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer app.Close()

	relayHost := strings.TrimPrefix(r.URL, "http://")
	conf := strings.NewReplacer("127.0.0.1:7070", relayHost, "127.0.0.1:8080", strings.TrimPrefix(app.URL, "http://"),
		"/v1/channels/orders/", "/v1/channels/"+r.Map.Channel+"/").Replace(recipe(t))
	port := freePort(t)
	dir := t.TempDir()
	// One process (no master and workers), so that ending it ends nginx: killed, a master
	// leaves its workers running.
	full := "daemon off;\nmaster_process off;\npid " + dir + "/nginx.pid;\nerror_log " + dir + "/error.log;\nevents {}\nhttp {\n" +
		"access_log off;\n" +
		"client_body_temp_path " + dir + "/body; proxy_temp_path " + dir + "/proxy; fastcgi_temp_path " + dir + "/fastcgi;\n" +
		"uwsgi_temp_path " + dir + "/uwsgi; scgi_temp_path " + dir + "/scgi;\n" +
		"server {\nlisten 127.0.0.1:" + port + ";\n" + conf + "\n}\n}\n"
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(full), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(nginx, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	proxy := "http://127.0.0.1:" + port
	relaytest.Eventually(t, 10*time.Second, "nginx to listen", func() bool {
		c, err := net.Dial("tcp", "127.0.0.1:"+port)
		if err == nil {
			c.Close()
		}
		return err == nil
	})

	publish := func(method, origin, cookie string) int {
		t.Helper()
		req, _ := http.NewRequest(method, proxy+"/notifications/publish", strings.NewReader(`{"from":"`+origin+`"}`))
		req.Header.Set("Content-Type", "application/json")
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		if cookie != "" {
			req.Header.Set("Cookie", "session="+cookie)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}
	for _, tc := range []struct {
		name, method, origin, cookie string
		want                         int
	}{
		{"the app's own page", http.MethodPost, "https://app.example.com", "alice-secret", http.StatusAccepted},
		{"another site's form or fetch", http.MethodPost, "https://evil.example", "alice-secret", http.StatusForbidden},
		{"no Origin at all", http.MethodPost, "", "alice-secret", http.StatusForbidden},
		{"a look-alike origin", http.MethodPost, "https://app.example.com.evil.example", "alice-secret", http.StatusForbidden},
		{"no session", http.MethodPost, "https://app.example.com", "", http.StatusUnauthorized},
		{"another method", http.MethodGet, "https://app.example.com", "alice-secret", http.StatusForbidden},
	} {
		if got := publish(tc.method, tc.origin, tc.cookie); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}

	// Exactly the allowed publish was stored, under the signed-in user's key.
	resp, err := http.Get(r.ChannelURL("/events?since=0-0&live=false"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if n := strings.Count(string(body), "event: message"); n != 1 || !strings.Contains(string(body), `"subject":"user-alice"`) ||
		!strings.Contains(string(body), "app.example.com") {
		t.Fatalf("the channel holds %d messages, want the app page's one for user-alice:\n%s", n, body)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}
