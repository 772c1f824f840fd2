package chart

import (
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/promql/parser"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/heraldhq/herald/controllers"
	"github.com/heraldhq/herald/internal/version"
	"github.com/heraldhq/herald/relay/metrics"
)

// The monitoring kit (off by default): every expression of the alerts and of the dashboard
// parses as PromQL and names only metrics Herald exports, and the alerts the runbooks promise
// are there.
func TestMonitoringKitSpeaksHeraldsMetrics(t *testing.T) {
	if objs := mustHelmTemplate(t, "herald-system"); len(kinds(objs, "PrometheusRule"))+len(kinds(objs, "ConfigMap")) != 0 {
		t.Fatal("the monitoring kit must be off by default")
	}
	objs := mustHelmTemplate(t, "herald-system", "--set", "metrics.dashboard.enabled=true", "--set", "metrics.prometheusRule.enabled=true")
	exported := heraldMetricNames()

	var exprs []string
	var alerts []string
	groups, _, _ := unstructured.NestedSlice(find(t, objs, "PrometheusRule", "herald").Object, "spec", "groups")
	for _, g := range groups {
		for _, r := range g.(map[string]any)["rules"].([]any) {
			rule := r.(map[string]any)
			exprs = append(exprs, rule["expr"].(string))
			alerts = append(alerts, rule["alert"].(string))
		}
	}
	for _, want := range []string{"HeraldRollback", "HeraldChannelNotReady", "HeraldSlowConsumers", "HeraldPublishErrors", "HeraldDeliveryLatencyHigh"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("the PrometheusRule lacks the alert %s: %v", want, alerts)
		}
	}

	cm := find(t, objs, "ConfigMap", "herald-dashboard")
	if cm.GetLabels()["grafana_dashboard"] != "1" {
		t.Errorf("the dashboard ConfigMap lacks Grafana's sidecar label: %v", cm.GetLabels())
	}
	data, _, _ := unstructured.NestedStringMap(cm.Object, "data")
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
		Templating struct{ List []struct{ Query any } }
	}
	if err := json.Unmarshal([]byte(data["herald.json"]), &dash); err != nil || len(dash.Panels) == 0 {
		t.Fatalf("the dashboard is not JSON with panels: %v", err)
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	labelValues := regexp.MustCompile(`^label_values\((.+), *\w+\)$`)
	for _, v := range dash.Templating.List {
		if q, ok := v.Query.(string); ok {
			if m := labelValues.FindStringSubmatch(q); m != nil {
				exprs = append(exprs, m[1])
			}
		}
	}

	grafana := strings.NewReplacer("$__rate_interval", "5m", "$__range", "1h", "$__interval", "1m")
	promql := parser.NewParser(parser.Options{})
	for _, e := range exprs {
		expr, err := promql.ParseExpr(grafana.Replace(e))
		if err != nil {
			t.Errorf("%q does not parse: %v", e, err)
			continue
		}
		parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
			if vs, ok := n.(*parser.VectorSelector); ok && !exported[baseName(vs.Name)] {
				t.Errorf("%q reads %s, which Herald does not export", e, vs.Name)
			}
			return nil
		})
	}
}

// heraldMetricNames are the names of every metric Herald's processes export themselves, from
// the descriptions of their collectors (a vector without series yet still describes itself).
func heraldMetricNames() map[string]bool {
	names := namesOf{}
	metrics.New(names, prometheus.Labels{"channel": "c", "shard": "0"}, noHub{})
	metrics.NewSidecar(names, func() int { return 0 }, func() int { return 0 })
	names.MustRegister(append(controllers.Collectors(), version.BuildInfo("test"))...)
	return names
}

// namesOf is a prometheus.Registerer that keeps the names of what is registered.
type namesOf map[string]bool

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (n namesOf) Register(c prometheus.Collector) error {
	descs := make(chan *prometheus.Desc, 64)
	go func() { c.Describe(descs); close(descs) }()
	for d := range descs {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			n[m[1]] = true
		}
	}
	return nil
}

func (n namesOf) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		_ = n.Register(c)
	}
}

func (n namesOf) Unregister(prometheus.Collector) bool { return false }

// baseName strips the suffixes a histogram's series add to its name.
func baseName(name string) string {
	for _, s := range []string{"_bucket", "_count", "_sum"} {
		name = strings.TrimSuffix(name, s)
	}
	return name
}

type noHub struct{}

func (noHub) Subscribers() int64     { return 0 }
func (noHub) Delivered() uint64      { return 0 }
func (noHub) DeliveredBytes() uint64 { return 0 }
func (noHub) SlowClosed() uint64     { return 0 }
