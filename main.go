// Command herald is Herald's one binary:
//
//	herald [manager] [flags]   the operator: NotificationChannel controller (the default)
//	herald relay [flags]       the relay, as a per-shard Deployment or an injected sidecar
//	herald probe URL           exit 0 when URL answers 2xx (exec probes of the loopback-only sidecar)
//	herald plan [flags]        what a load needs: shards, relay pods, Redis masters (docs/capacity.md)
//	herald version             print the version
package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	goruntime "runtime"
	"syscall"
	"time"

	"github.com/heraldhq/herald/capacity"
	"github.com/heraldhq/herald/internal/cli"
	"github.com/heraldhq/herald/internal/version"
	"github.com/heraldhq/herald/relay"
)

func main() {
	args := os.Args[1:]
	cmd := "manager"
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch cmd {
	case "manager":
		err = runManager(ctx, args, os.Stderr, os.Getenv)
	case "probe":
		err = probe(args)
	case "plan":
		err = capacity.Main(args, os.Stdout, os.Stderr, os.Getenv)
	case "version":
		fmt.Printf("herald %s (%s, %s/%s)\n", version.Version, goruntime.Version(), goruntime.GOOS, goruntime.GOARCH)
	case "relay":
		err = relay.Main(ctx, args)
	default:
		err = fmt.Errorf("unknown command %q: want \"manager\", \"relay\", \"probe\", \"plan\" or \"version\"", cmd)
	}
	if err != nil && !cli.IsHelp(err) {
		fmt.Fprintln(os.Stderr, "herald:", err)
		stop()
		os.Exit(1)
	}
}

// probe is an exec probe: the sidecar listens on loopback only, which the kubelet cannot reach.
func probe(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: herald probe URL")
	}
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(args[0])
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s", args[0], resp.Status)
	}
	return nil
}
