// Package localstack runs Herald's whole system on one machine with no kubelet and no images:
// the envtest control plane (kube-apiserver and etcd), a Redis Cluster from
// hack/redis-cluster.sh, the manager as a process, and a Runner that plays the kubelet and the
// Deployment controller for the operator's relay Deployments.
//
// The Runner watches Deployments labelled app.kubernetes.io/managed-by=herald-operator (only
// those: an app's Deployment, such as the orders-app sample, is never run) and runs
// spec.replicas replicas of each one's first container as processes of the local herald
// binary, as a kubelet would run the pod:
//
//   - args and env come from the container; env values from secretKeyRef and configMapKeyRef
//     are read from the API server at each start, and $(VAR) references are expanded with the
//     kubelet's rules (ExpandVars);
//   - volumes become directories under the runner's directory (ConfigMap and Secret volumes
//     hold their keys, kept up to date) and every container path under a mount, in args and
//     env values, is rewritten to the local directory (RewritePaths);
//   - --listen is rewritten to a free 127.0.0.1 port kept for the replica's lifetime;
//   - a replica that exits is restarted with a capped back-off (CrashLoopBackOff); scaling
//     down or deleting the Deployment stops replicas (SIGTERM, then SIGKILL); a template change
//     rolls replicas one at a time without dropping below spec.replicas available;
//   - the readiness probe's path is polled on the replica's port and the Deployment's status
//     (replicas, updated, ready, available, observedGeneration) is written, so the operator's
//     conditions become Ready the way they do in a real cluster;
//   - a shardmap.Endpoints file, the local stand-in for cluster DNS, maps each Service host
//     ("<service>.<namespace>.svc") to the 127.0.0.1:port of the ready replicas its selector
//     matches (ComputeEndpoints); sidecars read it with --endpoints-file;
//   - a pod that mounts a service account token gets --kubeconfig with a token of its service
//     account (TokenRequest API, renewed at half its life), so relays authenticate sidecars
//     with TokenReviews under the RBAC the manager grants them, as in a cluster.
//
// envtest has no garbage collector: the Runner deletes managed objects whose controller owner
// is gone (so deleting a channel stops its relays, as in a cluster).
//
// The Runner is level-based: every pass (on a short tick, and whenever a replica's readiness
// changes) lists the Deployments and Services and converges the processes to them.
//
// Stack starts and stops the whole thing in the order `make dev` (hack/localup) and the
// end-to-end test (test/e2e) need, and stops only what it started (children run in their own
// process groups and die with their parent). It also installs the relay ClusterRole the chart
// installs (herald-relay), starts app sidecars (StartSidecar: `herald relay --role=sidecar`
// with the endpoints file and a token of the pod's service account, audience "herald") and
// restarts a Redis node a test killed (RestartRedis).
package localstack
