package controllers

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	heraldv1 "github.com/heraldhq/herald/api/v1alpha1"
)

// The manager's metrics are HTTPS, and only a token the API server accepts and allows to GET
// /metrics (the herald-metrics-reader ClusterRole the chart renders) reads them.
func TestManagerMetricsNeedAnAuthorizedToken(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	mgr, err := ctrl.NewManager(testEnv.Config, ctrl.Options{Scheme: scheme, Metrics: MetricsOptions(addr, true, "")})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	defer func() { cancel(); <-done }()

	ns := newNamespace(t)
	reader := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{GenerateName: MetricsReaderClusterRole + "-"},
		Rules: []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}}}
	must(t, k8s.Create(ctx, reader))
	token := func(name string) string {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
		must(t, k8s.Create(ctx, sa))
		tr := &authenticationv1.TokenRequest{}
		must(t, k8s.SubResource("token").Create(ctx, sa, tr))
		return tr.Status.Token
	}
	scraper, stranger := token("prometheus"), token("stranger")
	must(t, k8s.Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{GenerateName: "scrape-"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: reader.Name},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: ns, Name: "prometheus"}}}))

	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // the manager's self-signed certificate
	get := func(bearer string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "https://"+addr+"/metrics", nil)
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	eventually(t, 20*time.Second, func() error {
		if code, body := get(scraper); code != http.StatusOK || !strings.Contains(body, "go_goroutines") {
			return &unexpected{code, body}
		}
		return nil
	})
	if code, _ := get(""); code != http.StatusUnauthorized {
		t.Errorf("without a token: %d, want 401", code)
	}
	if code, _ := get(stranger); code != http.StatusForbidden {
		t.Errorf("a token without the reader role: %d, want 403", code)
	}
}

type unexpected struct {
	code int
	body string
}

func (u *unexpected) Error() string { return "got " + http.StatusText(u.code) + ": " + u.body }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// herald_channel_condition follows each channel's conditions (and goes with the channel), and
// reconcile errors are counted by reason.
func TestChannelConditionsAndErrorsAreMetrics(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	key := create(t, channel(ns))
	waitFor(t, key, heraldv1.ConditionRedisConfigured, metav1.ConditionTrue, "")
	eventually(t, 10*time.Second, func() error {
		if v := testutil.ToFloat64(channelCondition.WithLabelValues(ns, key.Name, heraldv1.ConditionRedisConfigured, "True")); v != 1 {
			return fmt.Errorf("herald_channel_condition RedisConfigured=True is %v", v)
		}
		if v := testutil.ToFloat64(channelCondition.WithLabelValues(ns, key.Name, heraldv1.ConditionRedisConfigured, "False")); v != 0 {
			return fmt.Errorf("herald_channel_condition RedisConfigured=False is %v", v)
		}
		return nil
	})
	before := testutil.ToFloat64(reconcileErrors.WithLabelValues(heraldv1.ReasonRedisUnreachable))
	broken := create(t, channel(ns, withRedis("127.0.0.1:1")))
	waitFor(t, broken, heraldv1.ConditionReady, metav1.ConditionFalse, heraldv1.ReasonRedisUnreachable)
	eventually(t, 10*time.Second, func() error {
		if after := testutil.ToFloat64(reconcileErrors.WithLabelValues(heraldv1.ReasonRedisUnreachable)); after <= before {
			return fmt.Errorf("herald_reconcile_errors_total{reason=RedisUnreachable} stayed at %v", after)
		}
		return nil
	})
	must(t, k8s.Delete(ctx, &heraldv1.NotificationChannel{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: key.Name}}))
	eventually(t, 20*time.Second, func() error {
		if left := gatherChannel(t, ns, key.Name); len(left) > 0 {
			return fmt.Errorf("a deleted channel still has %v", left)
		}
		return nil
	})
}

// gatherChannel lists the herald_channel_condition series of one channel.
func gatherChannel(t *testing.T, ns, name string) []string {
	t.Helper()
	families, err := ctrlmetrics.Registry.Gather()
	must(t, err)
	var out []string
	for _, f := range families {
		if f.GetName() != "herald_channel_condition" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["namespace"] == ns && labels["channel"] == name {
				out = append(out, fmt.Sprint(labels))
			}
		}
	}
	return out
}
