package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestFlagsComeFromTheEnvironmentAndTheCommandLine(t *testing.T) {
	env := map[string]string{"HERALD_REDIS_ADDRESSES": "r:6379", "HERALD_RESYNC_PERIOD": "2m", "HERALD_LOG_LEVEL": "debug"}
	var out bytes.Buffer
	fs := New("test", &out)
	addrs := fs.String("redis-addresses", "", "seeds")
	resync := fs.Duration("resync-period", time.Minute, "resync")
	if err := fs.Parse([]string{"--resync-period=5m"}, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if *addrs != "r:6379" || *resync != 5*time.Minute {
		t.Fatalf("addresses %q, resync %v: want the environment's, and the command line's where both are set", *addrs, *resync)
	}
	if logger, err := fs.Logger(&out); err != nil || !logger.Enabled(t.Context(), -4) {
		t.Fatalf("HERALD_LOG_LEVEL=debug: %v", err)
	}

	bad := New("test", &out)
	bad.Int("workers", 4, "workers")
	if err := bad.Parse(nil, func(k string) string { return map[string]string{"HERALD_WORKERS": "many"}[k] }); err == nil ||
		!strings.Contains(err.Error(), "HERALD_WORKERS") {
		t.Fatalf("a bad environment value must be named: %v", err)
	}

	out.Reset()
	help := New("test", &out, "Usage: herald test")
	help.Duration("resync-period", time.Minute, "how often")
	if err := help.Parse([]string{"--help"}, func(string) string { return "" }); !IsHelp(err) {
		t.Fatalf("--help: %v", err)
	}
	for _, want := range []string{"Usage: herald test", `--resync-period (default "1m0s") [HERALD_RESYNC_PERIOD]`, "[HERALD_LOG_LEVEL]"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %q:\n%s", want, out.String())
		}
	}
}
