package main

import (
	"io"
	"os"
	"strings"
	"testing"
)

// `herald manager --help` lists every flag with its environment variable and default.
func TestManagerHelpListsEveryFlag(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := os.Stderr
	os.Stderr = w
	err = runManager([]string{"--help"})
	os.Stderr = stderr
	w.Close()
	out, _ := io.ReadAll(r)
	if err == nil || !strings.Contains(err.Error(), "help requested") {
		t.Fatalf("--help: %v", err)
	}
	for _, want := range []string{`--redis-addresses (default "") [HERALD_REDIS_ADDRESSES]`, `--log-level (default "info") [HERALD_LOG_LEVEL]`,
		`--resync-period (default "1m0s") [HERALD_RESYNC_PERIOD]`, `--metrics-secure (default "true") [HERALD_METRICS_SECURE]`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("herald manager --help lacks %q:\n%s", want, out)
		}
	}
}
