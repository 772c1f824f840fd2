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

func (c *Cluster) containerdDir() string { return filepath.Join(c.Dir, "containerd") }

// ContainerdSocket is the CRI and containerd API socket of the node.
func (c *Cluster) ContainerdSocket() string {
	return filepath.Join(c.containerdDir(), "containerd.sock")
}

// containerdConfig is a version-2 config with its own root, state and socket (next to any
// containerd the machine runs), and the CRI settings this machine needs:
// restrict_oom_score_adj because root here cannot lower oom_score_adj (kubelet asks -998 for
// sandboxes), network namespaces under the state directory so Stop finds every mount, the pause
// image, and the registries' hosts directory (registryHosts).
func (c *Cluster) containerdConfig() string {
	d := c.containerdDir()
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
`, filepath.Join(d, "root"), filepath.Join(d, "state"), c.ContainerdSocket(), c.opt.PauseImage,
		cniBinDir, filepath.Join(c.Dir, "cni", "net.d"), filepath.Join(d, "certs.d"))
}

// cniConfig is the pod network: Bridge with host-local addresses from PodCIDR, NodeIP as the
// gateway, no masquerading (nothing leaves the machine), hairpin so a pod reaches itself through
// its Service.
func (c *Cluster) cniConfig() ([]byte, error) {
	return json.MarshalIndent(map[string]any{
		"cniVersion": "0.4.0",
		"name":       "herald",
		"plugins": []any{
			map[string]any{
				"type": "bridge", "bridge": Bridge, "isGateway": true, "ipMasq": false, "hairpinMode": true,
				"ipam": map[string]any{
					"type":    "host-local",
					"ranges":  [][]map[string]string{{{"subnet": PodCIDR, "gateway": NodeIP}}},
					"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
					"dataDir": filepath.Join(c.Dir, "cni", "ipam"),
				},
			},
		},
	}, "", "  ")
}

func (c *Cluster) startContainerd() error {
	cni, err := c.cniConfig()
	if err != nil {
		return err
	}
	files := map[string][]byte{
		filepath.Join(c.containerdDir(), "config.toml"):            []byte(c.containerdConfig()),
		filepath.Join(c.Dir, "cni", "net.d", "10-herald.conflist"): cni,
	}
	for path, hosts := range c.registryHosts() {
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
	p, err := StartProcess(c.Dir, "containerd", bin, []string{"--config", filepath.Join(c.containerdDir(), "config.toml")}, nil)
	if err != nil {
		return err
	}
	c.procs = append(c.procs, p)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if conn, err := net.Dial("unix", c.ContainerdSocket()); err == nil {
			conn.Close()
			break
		}
		select {
		case err := <-p.Exited():
			return fmt.Errorf("containerd exited (%v): see %s", err, c.LogPath("containerd"))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd did not open %s within 30s: see %s", c.ContainerdSocket(), c.LogPath("containerd"))
		}
	}
	return nil
}

// Images lists the references of the images in the node's image store: what it pulled.
func (c *Cluster) Images(ctx context.Context) ([]string, error) {
	out, err := c.ctr(ctx, "images", "list", "--quiet")
	if err != nil {
		return nil, err
	}
	return strings.Fields(out), nil
}

// ctr runs containerd's ctr against the node's containerd, in the k8s.io namespace.
func (c *Cluster) ctr(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ctr", append([]string{"--address", c.ContainerdSocket(), "--namespace", "k8s.io"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("ctr %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}
