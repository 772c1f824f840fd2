// Package localcluster runs a Kubernetes cluster of real nodes on this machine (one by
// default), for `make dev` (hack/localup) and the end-to-end test (test/e2e): the envtest
// control plane (etcd and kube-apiserver from hack/setup-envtest.sh), kube-controller-manager,
// kube-scheduler, a containerd (with runc and CNI plugins from Debian) and a kubelet per node,
// one kube-proxy and CoreDNS (hack/setup-node.sh), a registry the nodes pull every image from,
// and a Redis Cluster (hack/redis-cluster.sh) that pods reach.
//
// Every address lives on this machine. Each node has its own bridge, address and pod CIDR
// (Node; the first node's are Bridge, NodeIP and PodCIDR), and the machine routes between
// them; the API server, CoreDNS and Redis listen on NodeIP, which the host and every pod reach;
// Service addresses (ServiceCIDR) are translated by kube-proxy's iptables rules; blackhole
// routes behind the bridges' drop what is meant for a node that is down, so no packet leaves
// the machine.
//
// Only one such cluster runs on a machine at a time (kube-proxy's chains and the bridges are
// machine-wide). Start refuses to run next to a live one and says so; Down removes what a
// cluster that was not stopped left behind: its processes (found by their pid files and by
// the containerd sockets of its shims), mounts under its directory, the bridges, the routes and
// the iptables chains its kubelets and kube-proxy made.
package localcluster
