package controllers

import (
	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	heraldv1 "github.com/heraldhq/herald/api/v1alpha1"
)

// The manager's own metrics, beside controller-runtime's. The namespace label is the channel's:
// scrape the manager with honor_labels (the chart's ServiceMonitor does), as for
// kube-state-metrics.
var (
	channelCondition = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "herald_channel_condition",
		Help: "1 for the current status (True, False, Unknown) of each condition of each channel, 0 for the other two.",
	}, []string{"namespace", "channel", "type", "status"})
	reconcileErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_reconcile_errors_total",
		Help: "Reconciles that ended in an error and will be retried, by reason (a condition reason, or StatusWriteFailed).",
	}, []string{"reason"})
)

// Collectors are the manager's own metrics (registered with controller-runtime's registry).
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{channelCondition, reconcileErrors}
}

func init() { ctrlmetrics.Registry.MustRegister(Collectors()...) }

// recordConditions sets herald_channel_condition for the channel's conditions.
func recordConditions(ch *heraldv1.NotificationChannel, conditions []metav1.Condition) {
	for _, c := range conditions {
		for _, s := range []metav1.ConditionStatus{metav1.ConditionTrue, metav1.ConditionFalse, metav1.ConditionUnknown} {
			v := 0.0
			if c.Status == s {
				v = 1
			}
			channelCondition.WithLabelValues(ch.Namespace, ch.Name, c.Type, string(s)).Set(v)
		}
	}
}

// forgetConditions drops the series of a channel that is gone.
func forgetConditions(namespace, name string) {
	channelCondition.DeletePartialMatch(prometheus.Labels{"namespace": namespace, "channel": name})
}

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
