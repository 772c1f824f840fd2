package localcluster

import (
	"errors"
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

// setUpNetwork creates each node's bridge with its address (the CNI bridge plugin adopts it),
// and routes: ServiceCIDR to the first bridge (a Service address that kube-proxy has no rule
// for yet goes there, never to the machine's default route), and ClusterCIDR and ServiceCIDR
// to a blackhole behind them, so a packet to a node that is down is dropped, as a dead
// machine's would be, and never leaves this one. The machine routes between the bridges.
func setUpNetwork(nodes []*Node) (*network, error) {
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
	var cmds [][]string
	for _, node := range nodes {
		cmds = append(cmds,
			[]string{"link", "add", node.Bridge, "type", "bridge"},
			[]string{"addr", "add", node.IP + "/" + prefixLen(node.PodCIDR), "dev", node.Bridge},
			[]string{"link", "set", node.Bridge, "up"})
	}
	cmds = append(cmds,
		[]string{"route", "add", ServiceCIDR, "dev", Bridge, "src", NodeIP},
		[]string{"route", "add", "blackhole", ClusterCIDR, "metric", blackholeMetric},
		[]string{"route", "add", "blackhole", ServiceCIDR, "metric", blackholeMetric})
	for _, args := range cmds {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return n, fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return n, nil
}

// blackholeMetric puts the blackhole routes behind every other route of their addresses.
const blackholeMetric = "4242"

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

// bridges lists the local cluster's bridges on this machine (a live or crashed cluster's).
func bridges() []string {
	var out []string
	ifaces, _ := net.Interfaces()
	for _, iface := range ifaces {
		if n, ok := strings.CutPrefix(iface.Name, "herald"); ok && n != "" && strings.Trim(n, "0123456789") == "" {
			out = append(out, iface.Name)
		}
	}
	return out
}

// deleteNetwork removes the bridges, and with them their addresses and the Service route, and
// the blackhole routes.
func deleteNetwork() error {
	var errs []error
	for _, b := range bridges() {
		if out, err := exec.Command("ip", "link", "del", b).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip link del %s: %v: %s", b, err, out))
		}
	}
	for _, cidr := range []string{ClusterCIDR, ServiceCIDR} {
		_ = exec.Command("ip", "route", "del", "blackhole", cidr, "metric", blackholeMetric).Run() // gone already when never made
	}
	return errors.Join(errs...)
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
