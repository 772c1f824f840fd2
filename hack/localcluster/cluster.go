package localcluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/heraldhq/herald/internal/testing/rediscluster"
)

// The cluster's network. The first node's pods get addresses from PodCIDR on Bridge, whose own
// address NodeIP is the node's: the API server, its kubelet, CoreDNS and Redis listen there.
// Node i (from 0) has 10.244.<i>.0/24 on bridge herald<i>, all within ClusterCIDR. Services get
// addresses from ServiceCIDR.
const (
	Bridge        = "herald0"
	NodeIP        = "10.244.0.1"
	PodCIDR       = "10.244.0.0/24"
	ClusterCIDR   = "10.244.0.0/16"
	ServiceCIDR   = "10.96.0.0/24"
	APIServiceIP  = "10.96.0.1" // the `kubernetes` Service
	ClusterDomain = "cluster.local"
	NodeName      = "herald-node" // the first node's; the others' are herald-node-2, herald-node-3, ...
	APIServerPort = 6443
	MaxNodes      = 9
)

// Options configure Start.
type Options struct {
	Root          string                           // repository root (hack/ scripts). Defaults to the module root above the working directory.
	Dir           string                           // state: kubeconfig, logs, pid files, containerd, kubelet, Redis; required
	Nodes         int                              // how many nodes, 1 to MaxNodes; 1 by default
	Images        []string                         // OCI image archives (hack/images) to push to the nodes' registry
	PauseImage    string                           // the pod sandbox image, one of Images; required
	RegistryAddr  string                           // where the nodes' registry listens; 127.0.0.1:0 (any port) by default
	RedisBasePort int                              // first of the six Redis Cluster ports; required
	Logf          func(format string, args ...any) // progress; none by default
}

// Cluster is a running local cluster.
type Cluster struct {
	Dir        string
	Kubeconfig string       // an admin (system:masters) kubeconfig of the API server
	Config     *rest.Config // the same admin credentials
	Client     client.Client
	Redis      *rediscluster.Cluster // listening on NodeIP
	Assets     string                // the directory of the Kubernetes binaries
	Registry   string                // host:port of the registry the nodes pull from (loopback, plain HTTP)
	Nodes      []*Node               // in order; the first carries the control plane's address

	opt      Options
	env      *envtest.Environment
	procs    []*Process // in start order
	network  *network
	registry *http.Server
}

// Start brings the whole cluster up and returns once the node is Ready. On error it stops
// what it had started.
func Start(ctx context.Context, opt Options) (_ *Cluster, err error) {
	if opt.Dir == "" || opt.RedisBasePort == 0 || opt.PauseImage == "" {
		return nil, errors.New("localcluster: Options need Dir, RedisBasePort and PauseImage")
	}
	if opt.Logf == nil {
		opt.Logf = func(string, ...any) {}
	}
	if opt.Nodes == 0 {
		opt.Nodes = 1
	}
	if opt.Nodes < 1 || opt.Nodes > MaxNodes {
		return nil, fmt.Errorf("localcluster: %d nodes asked; 1 to %d run here", opt.Nodes, MaxNodes)
	}
	if opt.Root == "" {
		if opt.Root, err = rediscluster.ModuleRoot(); err != nil {
			return nil, err
		}
	}
	if opt.Dir, err = filepath.Abs(opt.Dir); err != nil {
		return nil, err
	}
	if err := Preflight(opt.Dir, opt.RedisBasePort); err != nil {
		return nil, err
	}
	c := &Cluster{Dir: opt.Dir, opt: opt}
	for i := 0; i < opt.Nodes; i++ {
		c.Nodes = append(c.Nodes, newNode(c, i))
	}
	// A previous run's state (certificates, pods, images) must not leak into this one.
	if err := os.RemoveAll(opt.Dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opt.Dir, 0o755); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			if serr := c.Stop(); serr != nil {
				opt.Logf("stopping after a failed start: %v", serr)
			}
		}
	}()

	opt.Logf("building (once, cached) and finding the Kubernetes binaries")
	if _, err := c.script("setup-envtest.sh"); err != nil {
		return nil, fmt.Errorf("building the control plane: %w", err)
	}
	assets, err := c.script("setup-node.sh")
	if err != nil {
		return nil, fmt.Errorf("building the node components: %w", err)
	}
	c.Assets = strings.TrimSpace(string(assets))

	opt.Logf("creating the nodes' bridges (%s with %s, ...) and the routes of %s and %s", Bridge, NodeIP, ClusterCIDR, ServiceCIDR)
	if c.network, err = setUpNetwork(c.Nodes); err != nil {
		return nil, err
	}

	opt.Logf("starting the Redis Cluster on %s:%d-%d", NodeIP, opt.RedisBasePort, opt.RedisBasePort+5)
	c.Redis = rediscluster.At(opt.RedisBasePort, filepath.Join(opt.Dir, "redis"))
	c.Redis.Host = NodeIP
	// Every pod reaches the nodes: the default user has a password, as a real Redis would, and
	// the operator is given it (InstallHerald) as its administrative user's.
	pw := make([]byte, 24)
	if _, err := rand.Read(pw); err != nil {
		return nil, err
	}
	c.Redis.Password = hex.EncodeToString(pw)
	if err := c.Redis.Up(); err != nil {
		return nil, err
	}

	opt.Logf("starting the control plane (etcd, kube-apiserver on %s)", NodeIP)
	if err := c.startControlPlane(); err != nil {
		return nil, err
	}
	if err := c.startRegistry(); err != nil {
		return nil, err
	}
	opt.Logf("pushing %d images to the nodes' registry %s, starting containerd on %s", len(opt.Images), c.Registry, countNodes(len(c.Nodes)))
	for _, archive := range opt.Images {
		if _, err := c.PushArchive(archive); err != nil {
			return nil, err
		}
	}
	for _, n := range c.Nodes {
		if err := n.startContainerd(); err != nil {
			return nil, err
		}
	}
	opt.Logf("starting kube-controller-manager, kube-scheduler, a kubelet per node, kube-proxy and CoreDNS")
	if err := c.startNodeComponents(); err != nil {
		return nil, err
	}
	opt.Logf("waiting for %s to be Ready", countNodes(len(c.Nodes)))
	if err := c.awaitNodesReady(ctx, c.Nodes, 2*time.Minute); err != nil {
		return nil, err
	}
	return c, nil
}

// LogPath is where the component name writes its log.
func (c *Cluster) LogPath(name string) string { return filepath.Join(c.Dir, "logs", name+".log") }

// Stop stops what Start started, in reverse order, and removes the node's network and mounts.
func (c *Cluster) Stop() error {
	var errs []error
	for i := len(c.procs) - 1; i >= 0; i-- {
		p := c.procs[i]
		if strings.HasPrefix(p.Name, "containerd") {
			// Containers first: their shims outlive containerd.
			errs = append(errs, killCgroup(containerCgroup))
		}
		c.opt.Logf("stopping %s", p.Name)
		p.Stop(10 * time.Second)
	}
	c.procs = nil
	if c.env != nil {
		c.opt.Logf("stopping the control plane")
		errs = append(errs, c.env.Stop())
		c.env = nil
	}
	if c.Redis != nil {
		c.opt.Logf("stopping the Redis Cluster")
		errs = append(errs, c.Redis.Down())
		c.Redis = nil
	}
	if c.registry != nil {
		errs = append(errs, c.registry.Close())
		c.registry = nil
	}
	c.opt.Logf("removing what the node left: containers, mounts, iptables chains, the bridge")
	errs = append(errs, Down(c.Dir))
	if c.network != nil {
		c.network.restore()
	}
	return errors.Join(errs...)
}

// script runs hack/<name> and returns its stdout; its stderr goes to <Dir>/logs/setup.log.
func (c *Cluster) script(name string, args ...string) ([]byte, error) {
	cmd := exec.Command("bash", append([]string{filepath.Join(c.opt.Root, "hack", name)}, args...)...)
	cmd.Dir = c.opt.Root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("hack/%s: %w\n%s", name, err, stderr.String())
	}
	_ = os.MkdirAll(filepath.Join(c.Dir, "logs"), 0o755)
	_ = os.WriteFile(filepath.Join(c.Dir, "logs", "setup.log"), stderr.Bytes(), 0o644)
	return out, nil
}

// start runs one of the Kubernetes binaries as the process name.
func (c *Cluster) start(name, binary string, args []string) (*Process, error) {
	p, err := StartProcess(c.Dir, name, filepath.Join(c.Assets, binary), args, nil)
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	c.procs = append(c.procs, p)
	return p, nil
}

// forget drops a process that was killed on purpose from those Stop stops and whose exit
// fails a wait.
func (c *Cluster) forget(p *Process) {
	c.procs = slices.DeleteFunc(c.procs, func(q *Process) bool { return q == p })
}

func itoa(i int) string { return strconv.Itoa(i) }

// countNodes says "1 node" or "3 nodes".
func countNodes(n int) string {
	if n == 1 {
		return "1 node"
	}
	return itoa(n) + " nodes"
}
