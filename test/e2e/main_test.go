//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/heraldhq/herald/hack/localcluster"
	"github.com/heraldhq/herald/internal/testing/rediscluster"
)

var (
	// node is the local cluster with a real node, Herald installed by its chart.
	node *localcluster.Cluster
	// The chart and helm binary the suite installs Herald with (TestRedisOverMutualTLS upgrades
	// the release): a release (make release) pushed to the node's registry, installed from it.
	heraldChart localcluster.Chart
	helmBin     string
	// release is that release's directory (hack/release.sh's DIST: DIGESTS, herald.yaml).
	release string
	// repoRoot is the repository's root (TestUpgradeAndRollbackUnderLoad builds an earlier
	// commit of it).
	repoRoot string
)

// The version of the release the suite builds and installs.
const releaseVersion = "0.0.0-e2e"

// The images hack/images wrote (make images), besides Herald's, with their tag: the node pulls
// them from its registry as the mirror of ghcr.io.
const (
	imageTag       = "dev"
	forwarderImage = "ghcr.io/heraldhq/e2e-forwarder:" + imageTag
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
	nodes := 3
	if v := os.Getenv("HERALD_E2E_NODES"); v != "" {
		var err error
		if nodes, err = strconv.Atoi(v); err != nil {
			fmt.Fprintln(os.Stderr, "HERALD_E2E_NODES:", err)
			return 1
		}
	}
	root, err := rediscluster.ModuleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	repoRoot = root
	bin := func(p ...string) string { return filepath.Join(append([]string{root, "bin"}, p...)...) }
	for _, f := range []string{bin("helm"), bin("images", "e2e-forwarder.tar")} {
		if _, err := os.Stat(f); err != nil {
			fmt.Fprintf(os.Stderr, "%s is missing: run `make test-e2e` (it builds it)\n", f)
			return 1
		}
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
	helmBin = bin("helm")
	ctx := context.Background()
	var archives []string
	for _, name := range []string{"pause", "orders-app", "e2e-forwarder"} {
		archives = append(archives, bin("images", name+".tar"))
	}
	node, err = localcluster.Start(ctx, localcluster.Options{
		Root: root, Dir: filepath.Join(dir, "node"), Images: archives,
		PauseImage: "ghcr.io/heraldhq/pause:" + imageTag, RedisBasePort: base, Nodes: nodes, Logf: logf,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the local cluster:", err, "(logs in", filepath.Join(dir, "node", "logs")+")")
		os.RemoveAll(dir)
		return 1
	}
	defer func() {
		if code != 0 {
			logf("herald-system:%s", node.PodsReport(ctx, localcluster.HeraldNamespace, ""))
		}
		if err := node.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the local cluster:", err)
			code = 1
		}
		if code == 0 {
			os.RemoveAll(dir)
		} else {
			fmt.Fprintln(os.Stderr, "e2e: logs kept in", dir)
		}
	}()
	logf("%d node(s) Ready; make release VERSION=%s REGISTRY=%s/heraldhq", len(node.Nodes), releaseVersion, node.Registry)
	release = filepath.Join(dir, "release")
	cmd := exec.Command("bash", filepath.Join(root, "hack", "release.sh"))
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "VERSION="+releaseVersion, "REGISTRY="+node.Registry+"/heraldhq", "DIST="+release, "HELM="+helmBin)
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "make release: %v\n%s", err, out)
		return 1
	}
	heraldChart = localcluster.Chart{Ref: "oci://" + node.Registry + "/heraldhq/charts/herald", Version: releaseVersion}
	logf("installing Herald from %s --version %s", heraldChart.Ref, heraldChart.Version)
	if err := node.InstallHerald(ctx, helmBin, heraldChart); err != nil {
		fmt.Fprintln(os.Stderr, "installing Herald:", err)
		return 1
	}
	logf("Herald installed: kubeconfig %s", node.Kubeconfig)
	return m.Run()
}
