// Package rediscluster drives hack/redis-cluster.sh from Go: a throw-away Redis Cluster (3 masters,
// 3 replicas) on ports Base..Base+5 with its own directory, for tests, the local stack and the
// benchmark. It also finds the module root, where the script lives.
package rediscluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ModuleRoot walks up from the working directory to the directory holding go.mod.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// Cluster is one cluster the script started.
type Cluster struct {
	Base int    // first port
	Dir  string // the script's REDIS_CLUSTER_DIR: <port>/redis.pid, <port>/redis.log
	TLS  bool   // the script's REDIS_CLUSTER_TLS=1: nodes speak only TLS; clients trust CAFile and present ClientCertFile
	Host string // the script's REDIS_CLUSTER_HOST: the address the nodes listen on. Defaults to 127.0.0.1.
	// Password is the script's REDIS_CLUSTER_PASSWORD: the default user's (clients AUTH with it).
	// Empty: none.
	Password string
	script   string
}

// At is the cluster the script runs, or ran, with base and dir, without starting anything: for
// callers that run the script themselves and need PIDs or restarts.
func At(base int, dir string) *Cluster { return &Cluster{Base: base, Dir: dir} }

// Start runs `hack/redis-cluster.sh up`, which returns once the cluster is healthy and its
// replicas are in sync. A failed start is taken down again.
func Start(base int, dir string) (*Cluster, error) { return start(At(base, dir)) }

// StartTLS is Start with nodes that speak only TLS, to clients and to each other, with a
// certificate for 127.0.0.1 signed by the throw-away CA in CAFile, and that ask clients for a
// certificate (ClientCertFile).
func StartTLS(base int, dir string) (*Cluster, error) {
	c := At(base, dir)
	c.TLS = true
	return start(c)
}

func start(c *Cluster) (*Cluster, error) {
	if err := c.Up(); err != nil {
		return nil, err
	}
	return c, nil
}

// Up runs `hack/redis-cluster.sh up` for c; a failed start is taken down again.
func (c *Cluster) Up() error {
	if out, err := c.run("up"); err != nil {
		_, _ = c.run("down")
		return fmt.Errorf("redis-cluster.sh up: %v\n%s", err, out)
	}
	return nil
}

func (c *Cluster) run(verb string) ([]byte, error) {
	if c.script == "" {
		root, err := ModuleRoot()
		if err != nil {
			return nil, err
		}
		c.script = filepath.Join(root, "hack", "redis-cluster.sh")
	}
	cmd := exec.Command("bash", c.script, verb)
	cmd.Env = append(os.Environ(), "REDIS_CLUSTER_BASE_PORT="+strconv.Itoa(c.Base), "REDIS_CLUSTER_DIR="+c.Dir)
	if c.TLS {
		cmd.Env = append(cmd.Env, "REDIS_CLUSTER_TLS=1")
	}
	if c.Host != "" {
		cmd.Env = append(cmd.Env, "REDIS_CLUSTER_HOST="+c.Host)
	}
	if c.Password != "" {
		cmd.Env = append(cmd.Env, "REDIS_CLUSTER_PASSWORD="+c.Password)
	}
	return cmd.CombinedOutput()
}

// CAFile is the PEM CA that signed a TLS cluster's certificates.
func (c *Cluster) CAFile() string { return filepath.Join(c.Dir, "tls", "ca.crt") }

// ClientCertFile and ClientKeyFile are a client certificate a TLS cluster accepts (its nodes
// ask for one).
func (c *Cluster) ClientCertFile() string { return filepath.Join(c.Dir, "tls", "client.crt") }

// ClientKeyFile is the key of ClientCertFile.
func (c *Cluster) ClientKeyFile() string { return filepath.Join(c.Dir, "tls", "client.key") }

// RelayCAFile and RelayCAKeyFile are a second CA a TLS cluster trusts for client certificates,
// apart from the one that signed ClientCertFile: the relays' own (an operator's
// --redis-tls-client-ca-file).
func (c *Cluster) RelayCAFile() string { return filepath.Join(c.Dir, "tls", "relay-ca.crt") }

// RelayCAKeyFile is the key of RelayCAFile.
func (c *Cluster) RelayCAKeyFile() string { return filepath.Join(c.Dir, "tls", "relay-ca.key") }

// Down stops the nodes the script started (by their PID files) and removes their data. A node
// left stopped (SIGSTOP) is continued first, or it could not handle SIGTERM.
func (c *Cluster) Down() error {
	for _, p := range c.Ports() {
		_ = c.Signal(p, syscall.SIGCONT)
	}
	if out, err := c.run("down"); err != nil {
		return fmt.Errorf("redis-cluster.sh down: %v\n%s", err, out)
	}
	return nil
}

// Addr is the seed address of the cluster.
func (c *Cluster) Addr() string { return c.host() + ":" + strconv.Itoa(c.Base) }

func (c *Cluster) host() string {
	if c.Host == "" {
		return "127.0.0.1"
	}
	return c.Host
}

// Ports are the six node ports.
func (c *Cluster) Ports() []int {
	ps := make([]int, 6)
	for i := range ps {
		ps[i] = c.Base + i
	}
	return ps
}

// Addrs are the addresses of all nodes.
func (c *Cluster) Addrs() []string {
	as := make([]string, 0, 6)
	for _, p := range c.Ports() {
		as = append(as, c.host()+":"+strconv.Itoa(p))
	}
	return as
}

// PID is the process of the node on port, from the pid file the script told it to write.
func (c *Cluster) PID(port int) (int, error) {
	b, err := os.ReadFile(filepath.Join(c.Dir, strconv.Itoa(port), "redis.pid"))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// Signal sends sig to the node on port (a process this cluster started).
func (c *Cluster) Signal(port int, sig syscall.Signal) error {
	pid, err := c.PID(port)
	if err != nil {
		return err
	}
	return syscall.Kill(pid, sig)
}

// Restart starts a killed node again with the options the script gives it (its command line
// cannot be read back: Redis rewrites its process title). It rejoins the cluster with its
// nodes.conf, as a replica of whoever took over its slots.
func (c *Cluster) Restart(port int) error {
	d := filepath.Join(c.Dir, strconv.Itoa(port))
	_ = os.Remove(filepath.Join(d, "redis.pid"))
	timeout := os.Getenv("REDIS_CLUSTER_NODE_TIMEOUT")
	if timeout == "" {
		timeout = "2000"
	}
	listen := []string{"--port", strconv.Itoa(port)}
	if c.TLS {
		tlsDir := filepath.Join(c.Dir, "tls")
		listen = []string{"--port", "0", "--tls-port", strconv.Itoa(port), "--tls-cluster", "yes", "--tls-replication", "yes",
			"--tls-auth-clients", "yes", "--tls-cert-file", filepath.Join(tlsDir, "server.crt"),
			"--tls-key-file", filepath.Join(tlsDir, "server.key"), "--tls-ca-cert-file", filepath.Join(tlsDir, "trusted.crt")}
	}
	protected := "yes"
	if c.host() != "127.0.0.1" {
		protected = "no" // as the script: the local node's pods, on this machine, are the clients
	}
	// The script's auth.conf first (the password, if any), then its options.
	args := append([]string{filepath.Join(c.Dir, "auth.conf")}, listen...)
	args = append(args, "--bind", c.host(), "--protected-mode", protected, "--cluster-enabled", "yes",
		"--cluster-config-file", "nodes-"+strconv.Itoa(port)+".conf", "--cluster-node-timeout", timeout,
		"--cluster-replica-validity-factor", "0",
		"--appendonly", "yes", "--save", "", "--dir", d, "--daemonize", "yes",
		"--pidfile", filepath.Join(d, "redis.pid"), "--logfile", filepath.Join(d, "redis.log"))
	out, err := exec.Command("redis-server", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("restarting the Redis node on port %d: %w: %s", port, err, out)
	}
	return nil
}
