// Package localcluster runs a Kubernetes cluster with one real node on this machine, for
// `make dev` (hack/localup) and the end-to-end test (test/e2e): the envtest control plane
// (etcd and kube-apiserver from hack/setup-envtest.sh), kube-controller-manager,
// kube-scheduler, containerd with runc and CNI plugins from Debian, kubelet, kube-proxy and
// CoreDNS (hack/setup-node.sh), and a Redis Cluster (hack/redis-cluster.sh) that pods reach.
//
// Every address lives on this machine. The node's bridge (Bridge, NodeIP on PodCIDR) carries
// the pods; the API server, kubelet, CoreDNS and Redis listen on NodeIP, which the host and the
// pods both reach; Service addresses (ServiceCIDR) are translated by kube-proxy's iptables
// rules and routed to the bridge, so no packet leaves the machine. Pods use images imported
// into containerd from OCI archives (hack/images), never a registry.
//
// Only one such cluster runs on a machine at a time (kube-proxy's chains and the bridge are
// machine-wide). Start refuses to run next to a live one and says so; Down removes what a
// cluster that was not stopped left behind: its processes (found by their pid files and by
// the containerd socket of its shims), mounts under its directory, the bridge, the route and
// the iptables chains its kubelet and kube-proxy made.
package localcluster
