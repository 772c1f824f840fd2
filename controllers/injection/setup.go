package injection

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/open-policy-agent/cert-controller/pkg/rotator"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=mutatingwebhookconfigurations,verbs=get;list;watch
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=mutatingwebhookconfigurations,verbs=update;patch,resourceNames=herald-sidecar-injector

// Options configure the webhook.
type Options struct {
	Namespace         string                        // the manager's namespace
	ServiceName       string                        // Service in front of the webhook. Defaults to herald-webhook.
	SecretName        string                        // Secret holding the serving certificate. Defaults to herald-webhook-certs.
	ConfigurationName string                        // MutatingWebhookConfiguration to patch. Defaults to herald-sidecar-injector.
	CertDir           string                        // where the serving certificate is written and read
	SelfManagedCerts  bool                          // issue and rotate certificates here (else cert-manager or another tool does)
	Image             string                        // relay image injected as the sidecar
	Resources         *corev1.ResourceRequirements  // sidecar resources (nil: the injector's defaults)
	LogLevel          string                        // sidecar log level unless the pod's annotation sets one; "" leaves the relay's
	MetricsPort       int32                         // the sidecar's /metrics on the pod IP; 0: loopback only
	PullPolicy        corev1.PullPolicy             // of the sidecar container
	PullSecrets       []corev1.LocalObjectReference // added to opted-in pods (Secrets of their namespace)
}

// Setup registers the injector with the manager's webhook server. With SelfManagedCerts, the
// manager issues its own CA and serving certificate into the Secret, patches the caBundle of the
// webhook configuration and rotates both before they expire (open-policy-agent/cert-controller);
// the webhook is served, and the "webhook" readiness check passes, only once certificates are in
// place.
func Setup(mgr ctrl.Manager, o Options) error {
	if o.ServiceName == "" {
		o.ServiceName = "herald-webhook"
	}
	if o.SecretName == "" {
		o.SecretName = "herald-webhook-certs"
	}
	if o.ConfigurationName == "" {
		o.ConfigurationName = "herald-sidecar-injector"
	}
	certsReady := make(chan struct{})
	if o.SelfManagedCerts {
		if o.Namespace == "" {
			return errors.New("self-managed webhook certificates need the manager's namespace")
		}
		err := rotator.AddRotator(mgr, &rotator.CertRotator{
			SecretKey:      types.NamespacedName{Namespace: o.Namespace, Name: o.SecretName},
			CertDir:        o.CertDir,
			CAName:         "herald-webhook-ca",
			CAOrganization: "herald",
			DNSName:        fmt.Sprintf("%s.%s.svc", o.ServiceName, o.Namespace),
			ExtraDNSNames:  []string{fmt.Sprintf("%s.%s.svc.cluster.local", o.ServiceName, o.Namespace)},
			IsReady:        certsReady,
			Webhooks:       []rotator.WebhookInfo{{Name: o.ConfigurationName, Type: rotator.Mutating}},
			// Every replica serves the webhook, so every replica keeps its certificate files current.
			RequireLeaderElection: false,
		})
		if err != nil {
			return fmt.Errorf("setting up webhook certificates: %w", err)
		}
	} else {
		close(certsReady)
	}

	injector := &Injector{Client: mgr.GetAPIReader(), Decoder: admission.NewDecoder(mgr.GetScheme()), Image: o.Image, Resources: o.Resources, LogLevel: o.LogLevel, MetricsPort: o.MetricsPort,
		PullPolicy: o.PullPolicy, PullSecrets: o.PullSecrets}
	var server webhook.Server
	registered := make(chan struct{})
	go func() {
		<-certsReady
		server = mgr.GetWebhookServer() // adds and starts the server now that it has certificates
		server.Register(Path, &webhook.Admission{Handler: injector})
		close(registered)
	}()
	return mgr.AddReadyzCheck("webhook", func(req *http.Request) error {
		select {
		case <-registered:
			return server.StartedChecker()(req)
		default:
			return errors.New("webhook certificates are not ready")
		}
	})
}
