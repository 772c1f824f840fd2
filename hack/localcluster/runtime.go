package localcluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// cniBinDir is where Debian's containernetworking-plugins puts the plugins.
const cniBinDir = "/usr/lib/cni"

func (n *Node) containerdDir() string { return filepath.Join(n.dir(), "containerd") }

// ContainerdSocket is the CRI and containerd API socket of the node.
func (n *Node) ContainerdSocket() string {
	return filepath.Join(n.containerdDir(), "containerd.sock")
}

// containerdConfig is a version-2 config with its own root, state and socket (next to any
// containerd the machine runs), and the CRI settings this machine needs:
// restrict_oom_score_adj because root here cannot lower oom_score_adj (kubelet asks -998 for
// sandboxes), network namespaces under the state directory so Stop finds every mount, the pause
// image, and the registries' hosts directory (registryHosts).
func (n *Node) containerdConfig() string {
	d := n.containerdDir()
	return fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q

[grpc]
  address = %[3]q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[4]q
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[5]q
    conf_dir = %[6]q
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = %[7]q
`, filepath.Join(d, "root"), filepath.Join(d, "state"), n.ContainerdSocket(), n.c.opt.PauseImage,
		cniBinDir, filepath.Join(n.dir(), "cni", "net.d"), filepath.Join(d, "certs.d"))
}

// cniConfig is the node's pod network: its bridge with host-local addresses from its pod CIDR,
// its address as the gateway, no masquerading (nothing leaves the machine), hairpin so a pod
// reaches itself through its Service.
func (n *Node) cniConfig() ([]byte, error) {
	return json.MarshalIndent(map[string]any{
		"cniVersion": "0.4.0",
		"name":       "herald",
		"plugins": []any{
			map[string]any{
				"type": "bridge", "bridge": n.Bridge, "isGateway": true, "ipMasq": false, "hairpinMode": true,
				"ipam": map[string]any{
					"type":    "host-local",
					"ranges":  [][]map[string]string{{{"subnet": n.PodCIDR, "gateway": n.IP}}},
					"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
					"dataDir": filepath.Join(n.dir(), "cni", "ipam"),
				},
			},
		},
	}, "", "  ")
}

func (n *Node) startContainerd() error {
	cni, err := n.cniConfig()
	if err != nil {
		return err
	}
	files := map[string][]byte{
		filepath.Join(n.containerdDir(), "config.toml"):              []byte(n.containerdConfig()),
		filepath.Join(n.dir(), "cni", "net.d", "10-herald.conflist"): cni,
	}
	for path, hosts := range n.registryHosts() {
		files[path] = []byte(hosts)
	}
	for path, data := range files {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return err
		}
	}
	bin, err := exec.LookPath("containerd")
	if err != nil {
		return fmt.Errorf("containerd is not installed (apt-get install containerd runc containernetworking-plugins iptables)")
	}
	p, err := StartProcess(n.c.Dir, n.proc("containerd"), bin, []string{"--config", filepath.Join(n.containerdDir(), "config.toml")}, nil)
	if err != nil {
		return err
	}
	n.c.procs = append(n.c.procs, p)
	n.containerd = p
	deadline := time.Now().Add(30 * time.Second)
	for {
		if conn, err := net.Dial("unix", n.ContainerdSocket()); err == nil {
			conn.Close()
			break
		}
		select {
		case err := <-p.Exited():
			return fmt.Errorf("%s exited (%v): see %s", p.Name, err, n.c.LogPath(p.Name))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not open %s within 30s: see %s", p.Name, n.ContainerdSocket(), n.c.LogPath(p.Name))
		}
	}
	return nil
}

// Images lists the references of the images in the node's image store: what it pulled.
func (n *Node) Images(ctx context.Context) ([]string, error) {
	out, err := n.ctr(ctx, "images", "list", "--quiet")
	if err != nil {
		return nil, err
	}
	return strings.Fields(out), nil
}

// RunningTasks counts the containers (pod sandboxes included) the node's containerd runs.
func (n *Node) RunningTasks(ctx context.Context) (int, error) {
	out, err := n.ctr(ctx, "tasks", "list")
	if err != nil {
		return 0, err
	}
	running := 0
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[2] == "RUNNING" {
			running++
		}
	}
	return running, nil
}

// ctr runs containerd's ctr against the node's containerd, in the k8s.io namespace.
func (n *Node) ctr(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ctr", append([]string{"--address", n.ContainerdSocket(), "--namespace", "k8s.io"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("ctr %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}
