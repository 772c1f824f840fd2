package localcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ZoneLabel is the well-known label each node carries with its zone.
const ZoneLabel = "topology.kubernetes.io/zone"

// Node is one node of the cluster: a containerd and a kubelet of its own, with its own state
// directory, and its pods on its own bridge and pod CIDR. The first node's address, NodeIP, is also where the control plane, CoreDNS and Redis
// listen (as a kind cluster's control-plane node): tests take other nodes down, never it.
type Node struct {
	Index   int
	Name    string // herald-node, herald-node-2, herald-node-3, ...
	IP      string // the bridge's address: 10.244.<Index>.1
	PodCIDR string // 10.244.<Index>.0/24
	Bridge  string // herald<Index>
	Zone    string // zone-a, zone-b, ...

	c          *Cluster
	containerd *Process
	kubelet    *Process
}

func newNode(c *Cluster, i int) *Node {
	n := &Node{Index: i, Name: NodeName, c: c,
		IP:      fmt.Sprintf("10.244.%d.1", i),
		PodCIDR: fmt.Sprintf("10.244.%d.0/24", i),
		Bridge:  fmt.Sprintf("herald%d", i),
		Zone:    "zone-" + string(rune('a'+i)),
	}
	if i > 0 {
		n.Name = fmt.Sprintf("%s-%d", NodeName, i+1)
	}
	return n
}

// dir holds the node's state: containerd's root and state, the kubelet's root, CNI settings.
func (n *Node) dir() string { return filepath.Join(n.c.Dir, "nodes", n.Name) }

// proc names the node's process of binary (its log and pid file): the first node's are named as
// the binary, a later node's carry its number (kubelet-2).
func (n *Node) proc(binary string) string {
	if n.Index == 0 {
		return binary
	}
	return fmt.Sprintf("%s-%d", binary, n.Index+1)
}

// start brings the node's containerd and kubelet up (again, after Kill: same state).
func (n *Node) start() error {
	if err := n.startContainerd(); err != nil {
		return err
	}
	return n.startKubelet()
}

func (n *Node) startKubelet() error {
	kubeletDir := filepath.Join(n.dir(), "kubelet")
	if err := os.MkdirAll(kubeletDir, 0o755); err != nil {
		return err
	}
	config := filepath.Join(kubeletDir, "config.yaml")
	if err := os.WriteFile(config, []byte(n.kubeletConfig()), 0o644); err != nil {
		return err
	}
	p, err := n.c.start(n.proc("kubelet"), "kubelet", []string{"--kubeconfig=" + n.c.Kubeconfig, "--config=" + config,
		"--hostname-override=" + n.Name, "--node-ip=" + n.IP,
		"--node-labels=" + ZoneLabel + "=" + n.Zone,
		"--root-dir=" + kubeletDir, "--cert-dir=" + filepath.Join(kubeletDir, "pki"),
	})
	n.kubelet = p
	return err
}

// Kill takes the node down the way a machine dies: its bridge goes down, so packets to and from
// its pods are dropped (the cluster's blackhole route), not refused, then its kubelet, its
// containerd and every one of its containers get SIGKILL. Its state stays, for Restart.
func (n *Node) Kill() error {
	if n.Index == 0 {
		return errors.New("the first node carries the control plane's address: take another node down")
	}
	// The bridge first: the kernel closes a killed process's connections with a FIN or RST,
	// which a dead machine never sends; with the bridge down they are dropped.
	if out, err := exec.Command("ip", "link", "set", n.Bridge, "down").CombinedOutput(); err != nil {
		return fmt.Errorf("ip link set %s down: %v: %s", n.Bridge, err, out)
	}
	for _, p := range []*Process{n.kubelet, n.containerd} {
		if p != nil {
			p.Kill()
			n.c.forget(p)
		}
	}
	n.kubelet, n.containerd = nil, nil
	return n.killContainers()
}

// Restart brings a killed node back: its bridge up, containerd and kubelet started on the state
// they left, and returns once the node is Ready again.
func (n *Node) Restart(ctx context.Context) error {
	if out, err := exec.Command("ip", "link", "set", n.Bridge, "up").CombinedOutput(); err != nil {
		return fmt.Errorf("ip link set %s up: %v: %s", n.Bridge, err, out)
	}
	if err := n.start(); err != nil {
		return err
	}
	return n.c.awaitNodesReady(ctx, []*Node{n}, 2*time.Minute)
}

// killContainers kills the node's containers and their shims, as a dead machine has none. Its
// containerd keeps a bundle directory per task it runs, named by the container's id (which
// names the container's cgroup) and holding its first process's pid: every process of the
// cgroup and that one get SIGKILL, and Kill returns once the first processes are gone.
func (n *Node) killContainers() error {
	bundles := filepath.Join(n.containerdDir(), "state", "io.containerd.runtime.v2.task", "k8s.io")
	tasks, _ := os.ReadDir(bundles)
	killMatching(func(_ int, cmdline string) bool {
		return strings.Contains(cmdline, "containerd-shim") && strings.Contains(cmdline, n.containerdDir())
	})
	var errs []error
	var inits []int
	for _, t := range tasks {
		if b, err := os.ReadFile(filepath.Join(bundles, t.Name(), "init.pid")); err == nil {
			if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid > 0 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				inits = append(inits, pid)
			}
		}
		errs = append(errs, killCgroup(containerCgroup+"/"+t.Name()))
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range inits {
		for processName(pid) != "" && syscall.Kill(pid, 0) == nil && !zombie(pid) {
			if time.Now().After(deadline) {
				errs = append(errs, fmt.Errorf("node %s: container process %d outlived SIGKILL", n.Name, pid))
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return errors.Join(errs...)
}

// zombie reports whether pid has exited and waits for its parent to reap it.
func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	// pid (comm) state ...: the comm may hold spaces and parentheses, the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z'
}

// Node returns the node named name, or nil.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// awaitNodesReady polls the nodes' Ready condition, and fails early when a component exits.
func (c *Cluster) awaitNodesReady(ctx context.Context, nodes []*Node, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for {
		pending := slices.Clone(nodes)
		pending = slices.DeleteFunc(pending, func(n *Node) bool {
			var node corev1.Node
			return c.Client.Get(ctx, client.ObjectKey{Name: n.Name}, &node) == nil && NodeReady(&node)
		})
		if len(pending) == 0 {
			return nil
		}
		for _, p := range c.procs {
			select {
			case err := <-p.Exited():
				return fmt.Errorf("%s exited (%v): see %s", p.Name, err, c.LogPath(p.Name))
			default:
			}
		}
		select {
		case <-ctx.Done():
			var names []string
			for _, n := range pending {
				names = append(names, n.Name)
			}
			return fmt.Errorf("node %s is not Ready after %s: see %s", strings.Join(names, ", "), within, c.LogPath(pending[0].proc("kubelet")))
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// NodeReady reports whether node's Ready condition is True.
func NodeReady(node *corev1.Node) bool {
	for _, cond := range node.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}
