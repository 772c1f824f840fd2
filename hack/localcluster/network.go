package localcluster

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
)

// network is what setUpNetwork changed on the machine, to put back on Stop.
type network struct {
	sysctls map[string]string // path -> value before
}

// The kernel settings a node needs: routing between the bridge and Service addresses
// (ip_forward), and bridged pod-to-pod traffic passing kube-proxy's rules, so a pod reaching a
// Service whose endpoint sits on the same bridge gets its answer back through them.
var nodeSysctls = map[string]string{
	"/proc/sys/net/ipv4/ip_forward":                "1",
	"/proc/sys/net/bridge/bridge-nf-call-iptables": "1",
}

// setUpNetwork creates the bridge with NodeIP (the CNI bridge plugin adopts it) and routes
// ServiceCIDR to it: a Service address that kube-proxy has no rule for yet goes to the bridge,
// never to the machine's default route.
func setUpNetwork() (*network, error) {
	n := &network{sysctls: map[string]string{}}
	for path, want := range nodeSysctls {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w (br_netfilter: modprobe br_netfilter)", path, err)
		}
		if have := strings.TrimSpace(string(b)); have != want {
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				return nil, fmt.Errorf("setting %s to %s: %w", path, want, err)
			}
			n.sysctls[path] = have
		}
	}
	for _, args := range [][]string{
		{"link", "add", Bridge, "type", "bridge"},
		{"addr", "add", NodeIP + "/" + prefixLen(PodCIDR), "dev", Bridge},
		{"link", "set", Bridge, "up"},
		{"route", "add", ServiceCIDR, "dev", Bridge, "src", NodeIP},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return n, fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return n, nil
}

// restore puts the kernel settings back.
func (n *network) restore() {
	for path, v := range n.sysctls {
		_ = os.WriteFile(path, []byte(v), 0o644)
	}
}

func prefixLen(cidr string) string {
	_, ipnet, _ := net.ParseCIDR(cidr)
	ones, _ := ipnet.Mask.Size()
	return itoa(ones)
}

// bridgeExists says whether the node's bridge is there (a live or crashed cluster).
func bridgeExists() bool {
	_, err := net.InterfaceByName(Bridge)
	return err == nil
}

// deleteBridge removes the bridge, and with it its address and the Service route.
func deleteBridge() error {
	if !bridgeExists() {
		return nil
	}
	if out, err := exec.Command("ip", "link", "del", Bridge).CombinedOutput(); err != nil {
		return fmt.Errorf("ip link del %s: %v: %s", Bridge, err, out)
	}
	return nil
}

// deleteKubeChains removes the iptables rules and chains kube-proxy and kubelet make (KUBE-*)
// from every table.
func deleteKubeChains() error {
	for _, table := range []string{"nat", "filter", "mangle"} {
		out, err := exec.Command("iptables-save", "-t", table).Output()
		if err != nil {
			return fmt.Errorf("iptables-save -t %s: %w", table, err)
		}
		var rules, chains []string
		for _, line := range strings.Split(string(out), "\n") {
			switch {
			case strings.HasPrefix(line, "-A ") && strings.Contains(line, "KUBE-"):
				rules = append(rules, line)
			case strings.HasPrefix(line, ":KUBE-"):
				chains = append(chains, strings.Fields(line[1:])[0])
			}
		}
		// Rules that jump to KUBE- chains from built-in chains first, then the chains.
		for _, r := range rules {
			if strings.HasPrefix(r, "-A KUBE-") {
				continue
			}
			// iptables-save quotes comments the way a shell reads them.
			_ = exec.Command("sh", "-c", "iptables -t "+table+" -D "+strings.TrimPrefix(r, "-A ")).Run()
		}
		for _, ch := range chains {
			_ = exec.Command("iptables", "-t", table, "-F", ch).Run()
		}
		for _, ch := range chains {
			_ = exec.Command("iptables", "-t", table, "-X", ch).Run()
		}
	}
	return nil
}
