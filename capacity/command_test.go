package capacity

import (
	"bytes"
	"strings"
	"testing"
)

func TestPlanCommand(t *testing.T) {
	var out, errOut bytes.Buffer
	env := func(string) string { return "" }
	if err := Main([]string{"--subscribers=1000000", "--rate=10000"}, &out, &errOut, env); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"10k deliveries/s", "shards:        13", "8 per shard (spec.relay.replicas), 104 relay pods", "Redis masters: 1"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("herald plan printed\n%s\nwithout %q", out.String(), want)
		}
	}
	if err := Main([]string{"--subscribers=10", "--fanout=20"}, &out, &errOut, env); err == nil || !strings.Contains(err.Error(), "more than the 10 subscribers") {
		t.Fatalf("an impossible fan-out: %v", err)
	}
}
