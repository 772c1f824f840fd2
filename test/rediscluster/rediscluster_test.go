package rediscluster

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/redis/go-redis/v9"
)

// basePort keeps this test's cluster apart from the one `make test` starts for the other tests.
const basePort = 7701

func script(t *testing.T, dir, verb string) {
	t.Helper()
	cmd := exec.Command("bash", filepath.Join("..", "..", "hack", "redis-cluster.sh"), verb)
	cmd.Env = append(os.Environ(), "REDIS_CLUSTER_BASE_PORT="+strconv.Itoa(basePort), "REDIS_CLUSTER_DIR="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("redis-cluster.sh %s: %v\n%s", verb, err, out)
	}
}

func TestUpGivesAHealthyClusterAndDownLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	script(t, dir, "up")
	t.Cleanup(func() { script(t, dir, "down") }) // a no-op once the test has taken it down

	ctx := context.Background()
	var addrs []string
	for p := basePort; p < basePort+6; p++ {
		addrs = append(addrs, "127.0.0.1:"+strconv.Itoa(p))
	}
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs[:1]})
	defer rdb.Close()

	shards, err := rdb.ClusterShards(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	masters, replicas, slots := 0, 0, 0
	for _, s := range shards {
		for _, r := range s.Slots {
			slots += int(r.End-r.Start) + 1
		}
		for _, n := range s.Nodes {
			switch n.Role {
			case "master":
				masters++
			case "replica":
				replicas++
			}
		}
	}
	if masters != 3 || replicas != 3 || slots != 16384 {
		t.Fatalf("want 3 masters, 3 replicas and 16384 slots; got %d, %d, %d", masters, replicas, slots)
	}
	for _, a := range addrs {
		info, err := redis.NewClient(&redis.Options{Addr: a}).ClusterInfo(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(info, "cluster_state:ok") {
			t.Fatalf("%s: %s", a, info)
		}
	}

	// Remember the servers the script started, then take them down.
	var pids []int
	for p := basePort; p < basePort+6; p++ {
		b, err := os.ReadFile(filepath.Join(dir, strconv.Itoa(p), "redis.pid"))
		if err != nil {
			t.Fatal(err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, pid)
	}
	script(t, dir, "down")
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); err == nil && isRedis(pid) {
			t.Errorf("redis-server %d still runs after down", pid)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, strconv.Itoa(basePort))); !os.IsNotExist(err) {
		t.Errorf("down left data behind in %s", dir)
	}
}

func isRedis(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return err == nil && strings.Contains(string(b), "redis-server")
}
