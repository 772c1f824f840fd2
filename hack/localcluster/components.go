package localcluster

import (
	"fmt"
	"os"
	"path/filepath"

	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// startControlPlane starts etcd and kube-apiserver through envtest, with the API server on
// NodeIP (pods reach it through the `kubernetes` Service) and a serving certificate they can
// verify, ServiceAccount admission on (envtest turns it off), webhooks called at their pods'
// addresses, and writes an admin kubeconfig.
func (c *Cluster) startControlPlane() error {
	pki := filepath.Join(c.Dir, "pki")
	ca, err := writeAPIServerCerts(pki)
	if err != nil {
		return err
	}
	logs := filepath.Join(c.Dir, "logs")
	etcdLog, err := os.Create(filepath.Join(logs, "etcd.log"))
	if err != nil {
		return err
	}
	apiLog, err := os.Create(filepath.Join(logs, "kube-apiserver.log"))
	if err != nil {
		return err
	}
	c.env = &envtest.Environment{BinaryAssetsDirectory: c.Assets}
	c.env.ControlPlane.Etcd = &envtest.Etcd{DataDir: filepath.Join(c.Dir, "etcd"), Out: etcdLog, Err: etcdLog}
	api := c.env.ControlPlane.GetAPIServer()
	api.CertDir = pki
	// Both, or envtest picks a loopback port for itself.
	api.SecureServing.Address, api.SecureServing.Port = NodeIP, itoa(APIServerPort)
	api.SecureServing.CA = ca
	api.Out, api.Err = apiLog, apiLog
	args := api.Configure()
	args.Disable("disable-admission-plugins")
	args.Set("service-cluster-ip-range", ServiceCIDR)
	args.Set("advertise-address", NodeIP) // else the machine's default address
	args.Set("kubelet-preferred-address-types", "InternalIP")
	args.Set("enable-aggregator-routing", "true")
	args.Set("allow-privileged", "true")
	// The kubelet lets in only callers it can authenticate: the API server with this certificate.
	args.Set("kubelet-client-certificate", filepath.Join(pki, "kubelet-client.crt"))
	args.Set("kubelet-client-key", filepath.Join(pki, "kubelet-client.key"))
	args.Set("v", "1")
	if _, err := c.env.Start(); err != nil {
		return fmt.Errorf("starting the control plane: %w (see %s)", err, filepath.Join(logs, "kube-apiserver.log"))
	}
	admin, err := c.env.AddUser(envtest.User{Name: "herald-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return err
	}
	kc, err := admin.KubeConfig()
	if err != nil {
		return err
	}
	c.Config = admin.Config()
	c.Kubeconfig = filepath.Join(c.Dir, "kubeconfig")
	if err := os.WriteFile(c.Kubeconfig, kc, 0o600); err != nil {
		return err
	}
	c.Client, err = NewClient(c.Config)
	return err
}

// startNodeComponents starts the controllers, the scheduler, the node and the cluster's DNS,
// all with the admin kubeconfig (a single-user local cluster; RBAC still applies to pods).
func (c *Cluster) startNodeComponents() error {
	pki := filepath.Join(c.Dir, "pki")
	kc := "--kubeconfig=" + c.Kubeconfig
	if _, err := c.start("kube-controller-manager", "kube-controller-manager", []string{kc,
		"--leader-elect=false", "--secure-port=0", "--controllers=*",
		"--service-account-private-key-file=" + filepath.Join(pki, "sa-signer.key"),
		"--root-ca-file=" + filepath.Join(pki, "ca.crt"),
		"--use-service-account-credentials=false", "--cluster-name=herald",
	}); err != nil {
		return err
	}
	if _, err := c.start("kube-scheduler", "kube-scheduler", []string{kc, "--leader-elect=false", "--secure-port=0"}); err != nil {
		return err
	}
	for _, n := range c.Nodes {
		if err := n.startKubelet(); err != nil {
			return err
		}
	}
	// One kube-proxy serves every node: their pods all reach Services through the machine's
	// iptables rules.
	if _, err := c.start("kube-proxy", "kube-proxy", []string{kc, "--hostname-override=" + NodeName,
		"--proxy-mode=iptables", "--cluster-cidr=" + ClusterCIDR,
		"--healthz-bind-address=127.0.0.1:10256", "--metrics-bind-address=127.0.0.1:10249",
		"--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established=0", "--conntrack-tcp-timeout-close-wait=0",
	}); err != nil {
		return err
	}
	corefile := filepath.Join(c.Dir, "coredns", "Corefile")
	if err := os.MkdirAll(filepath.Dir(corefile), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(corefile, []byte(c.corefile()), 0o644); err != nil {
		return err
	}
	_, err := c.start("coredns", "coredns", []string{"-conf", corefile})
	return err
}

// kubeletConfig is the node's KubeletConfiguration, with what these machines need: cgroup v1
// with the cgroupfs driver, no per-QoS cgroups or node allocatable enforcement (no
// CAP_SYS_RESOURCE), no swap check, only memory pressure evicts. Its API on the node's address,
// port 10250, which
// every pod can reach, is as closed as a real node's: no anonymous caller; a client certificate
// of the cluster's CA (the API server's, for logs, exec and port-forward) or a bearer token
// (TokenReview), each authorized by the API server (SubjectAccessReview).
func (n *Node) kubeletConfig() string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %[1]s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %[5]s}
authorization:
  mode: Webhook
containerRuntimeEndpoint: unix://%[2]s
cgroupDriver: cgroupfs
failCgroupV1: false
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
clusterDNS: [%[6]s]
clusterDomain: %[3]s
evictionHard:
  memory.available: 100Mi
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
maxPods: 110
podLogsDir: %[4]s
`, n.IP, n.ContainerdSocket(), ClusterDomain, filepath.Join(n.dir(), "kubelet", "pod-logs"), filepath.Join(n.c.Dir, "pki", "ca.crt"),
		NodeIP)
}

// corefile serves the cluster domain (Services and pods) on NodeIP:53 and nothing else: no
// name is resolved off the machine.
func (c *Cluster) corefile() string {
	return fmt.Sprintf(`%[1]s:53 in-addr.arpa:53 {
    bind %[2]s
    errors
    kubernetes %[1]s in-addr.arpa {
        kubeconfig %[3]s
        pods insecure
    }
    cache 5
}
`, ClusterDomain, NodeIP, c.Kubeconfig)
}
