// Package version is Herald's version, stamped into the binary at build time:
//
//	go build -ldflags "-X github.com/heraldhq/herald/internal/version.Version=0.2.0"
package version

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
)

// Version is the release this binary was built from; "dev" for an unstamped build.
var Version = "dev"

// BuildInfo is herald_build_info{version, goversion, role} = 1, the usual way to see in
// Prometheus which version runs where.
func BuildInfo(role string) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "herald_build_info",
		Help:        "Always 1; the labels say which Herald version (and Go version) this process runs, in which role.",
		ConstLabels: prometheus.Labels{"version": Version, "goversion": runtime.Version(), "role": role},
	})
	g.Set(1)
	return g
}
