// Package chart tests Herald's two install paths, the Helm chart (charts/herald) and the kustomize
// tree (config/default), against a real kube-apiserver and etcd (envtest).
//
// It renders the chart with bin/helm (built by the Makefile's rule for it if missing) and config/default
// with kubectl, applies every rendered object with server-side apply (a dry run, then for real),
// runs `helm install` against the same API server, and checks what a reviewer of an operator's
// install would check by hand:
//
//   - the chart renders the generated CRD (config/crd/bases) from a template, kept on uninstall;
//   - no Role or ClusterRole grants a wildcard, the manager's ClusterRole covers every rule
//     generated from the code's +kubebuilder:rbac markers (config/rbac/role.yaml), and grants
//     nothing beyond those;
//   - values.schema.json rejects bad values with the path of the value, values.yaml documents
//     every value the schema knows;
//   - the kustomize install renders the same objects as the chart with its default values;
//   - the manager and the sample app pass the "restricted" Pod Security Standard, as judged by the
//     API server's own PodSecurity admission.
//
// Run it with the other envtest suites: `make test`, or
// KUBEBUILDER_ASSETS=$(hack/setup-envtest.sh) go test ./test/chart/.
package chart
