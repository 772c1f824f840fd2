package localcluster

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// containerCgroup is the cgroup (in every hierarchy) where containerd puts the containers of
// its k8s.io namespace (<containerCgroup>/<container id>) when the kubelet runs without per-QoS
// cgroups, whichever node's containerd runs them: Down kills what is in it.
const containerCgroup = "k8s.io"

// Preflight checks what Start needs and says in one line what to do when something is off.
func Preflight(dir string, redisBasePort int) error {
	if os.Geteuid() != 0 {
		return errors.New("the local cluster runs containerd and kubelet and creates a network bridge: run it as root (sudo make dev)")
	}
	if _, err := os.Stat("/sys/fs/cgroup/memory"); err != nil {
		if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err != nil {
			return errors.New("no cgroups are mounted at /sys/fs/cgroup: kubelet needs them (mount cgroup v1 or v2, e.g. in a VM rather than a plain container)")
		}
	}
	for _, tool := range []string{"containerd", "ctr", "runc", "iptables", "iptables-save", "ip", cniBinDir + "/bridge", cniBinDir + "/host-local"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is missing: apt-get install -y containerd runc containernetworking-plugins iptables iproute2", tool)
		}
	}
	if live := livePids(dir); len(live) > 0 {
		return fmt.Errorf("a local cluster is already running from %s (%s): stop it first (make dev-down)", dir, strings.Join(live, ", "))
	}
	if b := bridges(); len(b) > 0 {
		return fmt.Errorf("the network bridge %s exists: a local cluster crashed or runs from another directory; make dev-down removes what it left", b[0])
	}
	_, pods, _ := net.ParseCIDR(ClusterCIDR)
	_, services, _ := net.ParseCIDR(ServiceCIDR)
	ifaces, _ := net.Interfaces()
	for _, iface := range ifaces {
		addrs, _ := iface.Addrs()
		for _, a := range addrs {
			if ipnet, ok := a.(*net.IPNet); ok && (pods.Contains(ipnet.IP) || services.Contains(ipnet.IP) || ipnet.Contains(pods.IP)) {
				return fmt.Errorf("%s on %s overlaps the local cluster's networks (%s, %s): remove it, or run the cluster on another machine", a, iface.Name, ClusterCIDR, ServiceCIDR)
			}
		}
	}
	if r := overlappingRoute(); r != "" {
		return fmt.Errorf("the route %q overlaps the local cluster's networks (%s, %s): make dev-down removes what a crashed local cluster left; otherwise another network uses these addresses", r, ClusterCIDR, ServiceCIDR)
	}
	ports := []int{APIServerPort, 10250, 53}
	for p := redisBasePort; p < redisBasePort+6; p++ {
		ports = append(ports, p)
	}
	for _, p := range ports {
		if l := listener(p); l != "" {
			return fmt.Errorf("port %d is taken (something listens on %s): stop it (make dev-down, if a make dev crashed), or move the Redis ports (REDIS_CLUSTER_BASE_PORT)", p, l)
		}
	}
	return nil
}

// overlappingRoute returns a route of the machine to addresses within ClusterCIDR or
// ServiceCIDR ("" when none): a crashed cluster's blackhole, or another network's, which would
// take packets meant for the cluster (a broader route, such as a VPN's 10.0.0.0/8, loses to the
// cluster's own and does not count).
func overlappingRoute() string {
	out, err := exec.Command("ip", "-4", "route", "show").Output()
	if err != nil {
		return ""
	}
	_, pods, _ := net.ParseCIDR(ClusterCIDR)
	_, services, _ := net.ParseCIDR(ServiceCIDR)
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && (f[0] == "blackhole" || f[0] == "unreachable" || f[0] == "prohibit") {
			f = f[1:]
		}
		if len(f) == 0 || f[0] == "default" {
			continue
		}
		dst := f[0]
		if !strings.Contains(dst, "/") {
			dst += "/32"
		}
		if _, n, err := net.ParseCIDR(dst); err == nil && (pods.Contains(n.IP) || services.Contains(n.IP)) {
			return strings.TrimSpace(line)
		}
	}
	return ""
}

// livePids names the processes of dir's pid files that still run.
func livePids(dir string) (live []string) {
	files, _ := filepath.Glob(filepath.Join(dir, "pids", "*"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid > 0 && runs(pid, filepath.Base(f), dir) {
			live = append(live, filepath.Base(f)+" "+strconv.Itoa(pid))
		}
	}
	return live
}

// listener is the address of a TCP socket listening on port that would clash with the node's
// (on any address, or NodeIP), or "".
func listener(port int) string {
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(file)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 4 || fields[3] != "0A" { // 0A: LISTEN
				continue
			}
			host, portHex, ok := strings.Cut(fields[1], ":")
			if p, _ := strconv.ParseInt(portHex, 16, 32); !ok || int(p) != port {
				continue
			}
			if strings.Trim(host, "0") == "" {
				f.Close()
				return "*:" + strconv.Itoa(port)
			}
			if host == "0100F40A" { // 10.244.0.1, little-endian
				f.Close()
				return NodeIP + ":" + strconv.Itoa(port)
			}
		}
		f.Close()
	}
	return ""
}

// Down removes what a cluster run from dir left on the machine, whether it stopped or
// crashed: its processes, container processes, mounts under dir, the iptables chains of
// kubelet and kube-proxy, and the bridge; the last three only when no kubelet or kube-proxy of
// another cluster runs. It is safe to run when nothing is left.
func Down(dir string) error {
	var errs []error
	killPidFiles(dir)
	killRedis(dir)
	killMatching(func(pid int, cmdline string) bool { return strings.Contains(cmdline, dir) })
	errs = append(errs, unmountUnder(dir))
	// The containers' cgroup, the chains and the bridge are the machine's: they are another
	// cluster's while one runs from another directory.
	if other := nodeProcess(); other != "" {
		return errors.Join(append(errs, fmt.Errorf("left the bridge %s, the KUBE-* iptables chains and the containers alone: %s of another cluster is running", Bridge, other))...)
	}
	errs = append(errs, killCgroup(containerCgroup))
	errs = append(errs, deleteKubeChains())
	errs = append(errs, deleteNetwork())
	return errors.Join(errs...)
}

// killRedis stops the Redis nodes hack/redis-cluster.sh started under dir/redis (it daemonizes
// them, and Redis rewrites its command line, so only their pid files find them).
func killRedis(dir string) {
	files, _ := filepath.Glob(filepath.Join(dir, "redis", "*", "redis.pid"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid > 0 && strings.HasPrefix(processName(pid), "redis-") { // Debian links redis-server to redis-check-rdb
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// nodeProcess names a running kubelet or kube-proxy ("" when there is none).
func nodeProcess() string {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			if name := processName(pid); name == "kubelet" || name == "kube-proxy" {
				return name + " " + e.Name()
			}
		}
	}
	return ""
}

// killMatching SIGKILLs every process (but this one) whose command line match accepts.
func killMatching(match func(pid int, cmdline string) bool) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		if match(pid, strings.ReplaceAll(string(b), "\x00", " ")) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// killCgroup kills every process in the cgroup rel (relative to each hierarchy's root) and
// below, and removes those cgroups.
func killCgroup(rel string) error {
	root := filepath.Join("/sys/fs/cgroup/pids", rel)
	if _, err := os.Stat(root); err != nil {
		return nil
	}
	var dirs []string
	_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for _, d := range dirs {
		b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		for _, f := range strings.Fields(string(b)) {
			if pid, _ := strconv.Atoi(f); pid > 0 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	// Every hierarchy has the same tree; remove it deepest first once its processes are gone.
	hierarchies, _ := filepath.Glob("/sys/fs/cgroup/*/" + rel)
	var all []string
	for _, h := range hierarchies {
		_ = filepath.WalkDir(h, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				all = append(all, p)
			}
			return nil
		})
	}
	sort.Slice(all, func(i, j int) bool { return len(all[i]) > len(all[j]) })
	var errs []error
	for _, d := range all {
		for try := 0; ; try++ {
			err := syscall.Rmdir(d)
			if err == nil || errors.Is(err, syscall.ENOENT) {
				break
			}
			if try == 50 {
				errs = append(errs, fmt.Errorf("removing cgroup %s: %w", d, err))
				break
			}
			time.Sleep(100 * time.Millisecond) // the kernel frees an emptied cgroup shortly after its last process
		}
	}
	return errors.Join(errs...)
}

// unmountUnder detaches every mount below dir, deepest first.
func unmountUnder(dir string) error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(unescapeMount(f[4]), dir+"/") {
			points = append(points, unescapeMount(f[4]))
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	var errs []error
	for _, p := range points {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("unmounting %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	if u, err := strconv.Unquote(`"` + strings.ReplaceAll(s, `"`, `\"`) + `"`); err == nil {
		return u
	}
	return s
}
