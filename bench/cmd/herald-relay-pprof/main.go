// Command herald-relay-pprof is `herald relay` plus a net/http/pprof listener on
// $HERALD_PPROF_ADDR (required, loopback): the same relay code (relay.Main), so a
// CPU profile taken from it during a benchmark shows where a production relay spends its time.
// Only the load generator's -cpuprofile uses it; see docs/performance.md.
package main

import (
	"context"
	"fmt"
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof on http.DefaultServeMux
	"os"
	"os/signal"
	"syscall"

	"github.com/heraldhq/herald/relay"
)

func main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "relay" {
		args = args[1:]
	}
	addr := os.Getenv("HERALD_PPROF_ADDR")
	if addr == "" {
		fmt.Fprintln(os.Stderr, "HERALD_PPROF_ADDR must name a loopback address for the pprof listener")
		os.Exit(2)
	}
	go func() { _ = http.ListenAndServe(addr, nil) }()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := relay.Main(ctx, args)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
