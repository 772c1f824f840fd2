// Package release tests `make release`: hack/release.sh writes every artefact of a version, each
// stamped with it, and sums that verify.
package release

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/heraldhq/herald/internal/testing/rediscluster"
)

func TestReleaseWritesStampedArtefacts(t *testing.T) {
	root, err := rediscluster.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	const version = "1.2.3-rc.1"
	dist := t.TempDir()
	helm := filepath.Join(root, "bin", "helm")
	if _, err := os.Stat(helm); err != nil {
		if out, err := exec.Command("make", "-C", root, "bin/helm").CombinedOutput(); err != nil {
			t.Fatalf("building helm: %v\n%s", err, out)
		}
	}
	cmd := exec.Command("bash", filepath.Join(root, "hack", "release.sh"))
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "VERSION="+version, "DIST="+dist, "HELM="+helm)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("release.sh: %v\n%s", err, out)
	}

	// The binary says its version.
	out, err := exec.Command(filepath.Join(dist, "herald-linux-amd64"), "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "herald "+version+" ") {
		t.Fatalf("herald version: %q %v", out, err)
	}
	// The sums verify.
	sums := exec.Command("sha256sum", "-c", "SHA256SUMS")
	sums.Dir = dist
	if out, err := sums.CombinedOutput(); err != nil || strings.Count(string(out), ": OK") != 4 {
		t.Fatalf("sha256sum -c: %v\n%s", err, out)
	}
	// The image archive carries the version's tag.
	index := fileInTar(t, filepath.Join(dist, "herald-image.tar"), "index.json", false)
	if !bytes.Contains(index, []byte(`"ghcr.io/heraldhq/herald:v`+version+`"`)) {
		t.Fatalf("the image archive is not tagged v%s: %s", version, index)
	}
	// The chart is the version's.
	var chart struct{ Version, AppVersion string }
	if err := yaml.Unmarshal(fileInTar(t, filepath.Join(dist, "herald-"+version+".tgz"), "herald/Chart.yaml", true), &chart); err != nil ||
		chart.Version != version || chart.AppVersion != version {
		t.Fatalf("chart %+v (%v), want version and appVersion %s", chart, err, version)
	}
	// One file installs it all: the namespace, the CRD, and the manager on the version's image.
	manifest, err := os.ReadFile(filepath.Join(dist, "herald.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"kind: Namespace", "kind: CustomResourceDefinition", "kind: MutatingWebhookConfiguration",
		"image: ghcr.io/heraldhq/herald:v" + version, "--relay-image=ghcr.io/heraldhq/herald:v" + version} {
		if !bytes.Contains(manifest, []byte(want)) {
			t.Errorf("herald.yaml lacks %q", want)
		}
	}
	// A version that is not semver is refused.
	bad := exec.Command("bash", filepath.Join(root, "hack", "release.sh"))
	bad.Dir = root
	bad.Env = append(os.Environ(), "VERSION=latest", "DIST="+t.TempDir(), "HELM="+helm)
	if out, err := bad.CombinedOutput(); err == nil || !strings.Contains(string(out), "not semver") {
		t.Fatalf("VERSION=latest: %v %s", err, out)
	}
}

// fileInTar reads one file of a (gzipped) tar archive.
func fileInTar(t *testing.T, archive, name string, gzipped bool) []byte {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r io.Reader = f
	if gzipped {
		if r, err = gzip.NewReader(f); err != nil {
			t.Fatal(err)
		}
	}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s holds no %s: %v", archive, name, err)
		}
		if h.Name == name {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
}
