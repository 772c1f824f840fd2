package controllers

import (
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// MetricsReaderClusterRole may GET the manager's /metrics; bind it to Prometheus's service
// account.
const MetricsReaderClusterRole = "herald-metrics-reader"

// MetricsOptions serve the manager's metrics on addr ("0": not at all). Secure is kubebuilder's
// default: HTTPS (a self-signed certificate unless certDir holds tls.crt and tls.key), and every
// scrape needs a bearer token that the API server authenticates (TokenReview) and allows to GET
// the non-resource URL /metrics (SubjectAccessReview), e.g. through MetricsReaderClusterRole.
func MetricsOptions(addr string, secure bool, certDir string) metricsserver.Options {
	o := metricsserver.Options{BindAddress: addr}
	if secure {
		o.SecureServing = true
		o.FilterProvider = filters.WithAuthenticationAndAuthorization
		o.CertDir = certDir
	}
	return o
}
