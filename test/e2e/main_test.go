//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/heraldhq/herald/hack/localstack"
	"github.com/heraldhq/herald/internal/rediscluster"
)

var (
	stack *localstack.Stack
	// What a test that needs a stack of its own starts it with; its Redis Cluster takes the six
	// ports after the shared stack's (base+10 ..).
	stackOptions localstack.StackOptions
)

// quietRedis drops go-redis's own log lines ("failed to dial ..."), hundreds when a node is
// killed; the test counts what matters.
type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

func TestMain(m *testing.M) { os.Exit(runSuite(m)) }

func runSuite(m *testing.M) (code int) {
	redis.SetLogger(quietRedis{})
	// envtest logs through controller-runtime's global logger, which otherwise complains with a
	// stack trace that it was never set.
	ctrllog.SetLogger(zap.New(zap.WriteTo(io.Discard)))
	base := 7901
	if v := os.Getenv("HERALD_E2E_REDIS_BASE_PORT"); v != "" {
		var err error
		if base, err = strconv.Atoi(v); err != nil {
			fmt.Fprintln(os.Stderr, "HERALD_E2E_REDIS_BASE_PORT:", err)
			return 1
		}
	}
	root, err := rediscluster.ModuleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	herald := filepath.Join(root, "bin", "herald")
	if _, err := os.Stat(herald); err != nil {
		fmt.Fprintln(os.Stderr, "bin/herald is missing: run `make test-e2e` (it builds it) or `make build` first")
		return 1
	}
	dir, err := os.MkdirTemp("", "herald-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	began := time.Now()
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "e2e [%5.1fs] %s\n", time.Since(began).Seconds(), fmt.Sprintf(format, args...))
	}
	stackOptions = localstack.StackOptions{Root: root, Herald: herald, Dir: dir, RedisBasePort: base, Logf: logf}
	stack, err = localstack.StartStack(stackOptions)
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the local stack:", err, "(logs in", dir+")")
		return 1
	}
	logf("local stack up: kubeconfig %s", stack.Kubeconfig)
	defer func() {
		if err := stack.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the local stack:", err)
			code = 1
		}
		if code == 0 {
			os.RemoveAll(dir)
		} else {
			fmt.Fprintln(os.Stderr, "e2e: logs kept in", dir)
		}
	}()
	return m.Run()
}
