package main

import (
	"context"
	"os/exec"
	"strings"
	"testing"
)

// `herald manager --help` lists every flag with its environment variable and default.
func TestManagerHelpListsEveryFlag(t *testing.T) {
	var out strings.Builder
	err := runManager(context.Background(), []string{"--help"}, &out, func(string) string { return "" })
	if err == nil || !strings.Contains(err.Error(), "help requested") {
		t.Fatalf("--help: %v", err)
	}
	for _, want := range []string{`--redis-addresses (default "") [HERALD_REDIS_ADDRESSES]`, `--log-level (default "info") [HERALD_LOG_LEVEL]`,
		`--resync-period (default "1m0s") [HERALD_RESYNC_PERIOD]`, `--metrics-secure (default "true") [HERALD_METRICS_SECURE]`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("herald manager --help lacks %q:\n%s", want, out.String())
		}
	}
}

// A setting the manager cannot use is refused before it touches the cluster, naming its flag.
func TestManagerRefusesBadSettingsNamingTheFlag(t *testing.T) {
	tests := map[string]struct {
		args []string
		env  map[string]string
		says string
	}{
		"relay resources":   {args: []string{"--relay-resources={"}, says: "--relay-resources"},
		"sidecar resources": {env: map[string]string{"HERALD_SIDECAR_RESOURCES": "[]"}, says: "--sidecar-resources"},
		"scraper selector":  {args: []string{"--relay-metrics-namespace-selector=a in (b"}, says: "--relay-metrics-namespace-selector"},
		"pull policy":       {args: []string{"--relay-image-pull-policy=Sometimes"}, says: "--relay-image-pull-policy"},
		"webhook certs":     {args: []string{"--webhook-cert-mode=manual"}, says: "--webhook-cert-mode"},
		"limit ceilings":    {args: []string{`--relay-limit-ceilings={"maxSubscriber":1}`}, says: "--relay-limit-ceilings"},
		"library pruning":   {args: []string{"--prune-function-libraries-after=20s"}, says: "--prune-function-libraries-after"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var out strings.Builder
			err := runManager(context.Background(), tc.args, &out, func(k string) string { return tc.env[k] })
			if err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("runManager(%q) = %v, want an error naming %s", tc.args, err, tc.says)
			}
		})
	}
}

// The herald binary carries no test helper: nothing it builds from imports internal/testing/...
// (test helpers live apart from shipped code, so a reader tells from the path what ships).
func TestShippedCodeImportsNoTestHelpers(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.Contains(pkg, "/internal/testing/") || strings.HasSuffix(pkg, "/internal/testing") {
			t.Errorf("the herald binary imports the test helper %s", pkg)
		}
	}
	if !strings.Contains(string(out), "github.com/heraldhq/herald/relay/stream") {
		t.Fatalf("go list -deps . lists no relay/stream: the check reads the wrong list:\n%s", out)
	}
}
