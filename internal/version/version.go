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

// Image is Herald's image of this version: the relay image the operator deploys and injects
// unless told otherwise. An unstamped build names the local image (make images).
func Image() string {
	if Version == "dev" {
		return "ghcr.io/heraldhq/herald:dev"
	}
	return "ghcr.io/heraldhq/herald:v" + Version
}

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
