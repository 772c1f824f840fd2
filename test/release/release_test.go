// Package release tests `make release`: hack/release.sh writes every artefact of a version, each
// stamped with it, and sums that verify, and pushes the image and the chart to a registry.
package release

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"sigs.k8s.io/yaml"

	"github.com/heraldhq/herald/internal/testing/rediscluster"
)

// A release pushed to a registry (go-containerregistry's, started here) holds a two-platform
// image index and the chart, the chart and herald.yaml name the image by its digest, and the
// same sources give the same digest again.
func TestReleaseIsPushedAndPinnedByDigest(t *testing.T) {
	root, err := rediscluster.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	const version = "1.2.3-rc.1"
	helm := filepath.Join(root, "bin", "helm")
	if _, err := os.Stat(helm); err != nil {
		if out, err := exec.Command("make", "-C", root, "bin/helm").CombinedOutput(); err != nil {
			t.Fatalf("building helm: %v\n%s", err, out)
		}
	}
	reg := httptest.NewServer(registry.New())
	defer reg.Close()
	repo := strings.TrimPrefix(reg.URL, "http://") + "/heraldhq"
	release := func(env ...string) (dist string, out []byte, err error) {
		dist = t.TempDir()
		cmd := exec.Command("bash", filepath.Join(root, "hack", "release.sh"))
		cmd.Dir = root
		cmd.Env = append(append(os.Environ(), "VERSION="+version, "DIST="+dist, "HELM="+helm), env...)
		out, err = cmd.CombinedOutput()
		return dist, out, err
	}
	dist, out, err := release("REGISTRY=" + repo)
	if err != nil {
		t.Fatalf("release.sh: %v\n%s", err, out)
	}

	// The binaries say their version; the arm64 one is for arm64.
	if out, err := exec.Command(filepath.Join(dist, "herald-linux-amd64"), "version").Output(); err != nil || !strings.HasPrefix(string(out), "herald "+version+" ") {
		t.Fatalf("herald version: %q %v", out, err)
	}
	if f, err := elf.Open(filepath.Join(dist, "herald-linux-arm64")); err != nil || f.Machine != elf.EM_AARCH64 {
		t.Fatalf("herald-linux-arm64: %v %v", f, err)
	} else {
		f.Close()
	}
	// The sums verify.
	sums := exec.Command("sha256sum", "-c", "SHA256SUMS")
	sums.Dir = dist
	if out, err := sums.CombinedOutput(); err != nil || strings.Count(string(out), ": OK") != 7 {
		t.Fatalf("sha256sum -c: %v\n%s", err, out)
	}
	// Each binary has an SBOM that lists the modules built into it.
	for _, arch := range []string{"amd64", "arm64"} {
		b, err := os.ReadFile(filepath.Join(dist, "herald-linux-"+arch+".cdx.json"))
		if err != nil || !bytes.Contains(b, []byte(`"bomFormat": "CycloneDX"`)) || !bytes.Contains(b, []byte(`"name": "github.com/redis/go-redis/v9"`)) {
			t.Errorf("herald-linux-%s.cdx.json is no SBOM of the binary's modules (%v)", arch, err)
		}
	}
	// DIGESTS names what was pushed.
	digests, err := os.ReadFile(filepath.Join(dist, "DIGESTS"))
	if err != nil {
		t.Fatal(err)
	}
	var imageDigest string
	for _, line := range strings.Split(strings.TrimSpace(string(digests)), "\n") {
		if ref, ok := strings.CutPrefix(line, "image "+repo+"/herald:v"+version+"@"); ok {
			imageDigest = ref
		} else if !strings.HasPrefix(line, "chart oci://"+repo+"/charts/herald:"+version+"@sha256:") {
			t.Errorf("DIGESTS: unexpected line %q", line)
		}
	}
	if !strings.HasPrefix(imageDigest, "sha256:") {
		t.Fatalf("DIGESTS names no image digest:\n%s", digests)
	}
	image := repo + "/herald@" + imageDigest

	// The registry holds the image index: linux/amd64 and linux/arm64, each image's config
	// saying its platform; the tag points at the same index.
	ref, err := name.ParseReference(image)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(ref)
	if err != nil {
		t.Fatalf("pulling %s: %v", image, err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var platforms []string
	for _, d := range m.Manifests {
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if d.Platform == nil || d.Platform.Architecture != cf.Architecture {
			t.Errorf("manifest %s: descriptor %v, config %s", d.Digest, d.Platform, cf.Architecture)
		}
		platforms = append(platforms, cf.OS+"/"+cf.Architecture)
	}
	if strings.Join(platforms, ",") != "linux/amd64,linux/arm64" {
		t.Errorf("the image index holds %v, want linux/amd64 and linux/arm64", platforms)
	}
	tagged, err := name.ParseReference(repo + "/herald:v" + version)
	if err != nil {
		t.Fatal(err)
	}
	if desc, err := remote.Head(tagged); err != nil || desc.Digest.String() != imageDigest {
		t.Errorf("tag v%s: %v %v, want %s", version, desc, err, imageDigest)
	}
	// The archive holds the same index, named by its tag.
	index := fileInTar(t, filepath.Join(dist, "herald-image.tar"), "index.json", false)
	if !bytes.Contains(index, []byte(`"`+repo+`/herald:v`+version+`"`)) || !bytes.Contains(index, []byte(imageDigest)) {
		t.Fatalf("the image archive is not %s:v%s at %s: %s", repo, version, imageDigest, index)
	}

	// The chart comes back from the registry with the version's numbers and the image pinned.
	pulled := t.TempDir()
	if out, err := exec.Command(helm, "pull", "oci://"+repo+"/charts/herald", "--version", version, "--plain-http", "-d", pulled).CombinedOutput(); err != nil {
		t.Fatalf("helm pull: %v\n%s", err, out)
	}
	var chart struct{ Version, AppVersion string }
	if err := yaml.Unmarshal(fileInTar(t, filepath.Join(pulled, "herald-"+version+".tgz"), "herald/Chart.yaml", true), &chart); err != nil ||
		chart.Version != version || chart.AppVersion != version {
		t.Fatalf("chart %+v (%v), want version and appVersion %s", chart, err, version)
	}
	var values struct {
		Image struct{ Repository, Digest string }
	}
	if err := yaml.Unmarshal(fileInTar(t, filepath.Join(pulled, "herald-"+version+".tgz"), "herald/values.yaml", true), &values); err != nil ||
		values.Image.Repository != repo+"/herald" || values.Image.Digest != imageDigest {
		t.Fatalf("the chart's image is %+v (%v), want %s", values.Image, err, image)
	}
	// One file installs it all: the namespace, the CRD, and every Herald container on the digest.
	manifest, err := os.ReadFile(filepath.Join(dist, "herald.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"kind: Namespace", "kind: CustomResourceDefinition", "kind: MutatingWebhookConfiguration",
		"image: " + image, "--relay-image=" + image, "--sidecar-image=" + image} {
		if !bytes.Contains(manifest, []byte(want)) {
			t.Errorf("herald.yaml lacks %q", want)
		}
	}

	// make sign signs the image and the chart by their digests (a registry with a port too) and
	// the checksums; cosign is stood in for by a script that writes down its arguments.
	calls := filepath.Join(t.TempDir(), "calls")
	cosign := filepath.Join(t.TempDir(), "cosign")
	if err := os.WriteFile(cosign, []byte("#!/bin/sh\necho \"$*\" >>"+calls+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	sign := exec.Command("bash", filepath.Join(root, "hack", "sign.sh"))
	sign.Dir = root
	sign.Env = append(os.Environ(), "DIST="+dist, "COSIGN="+cosign)
	if out, err := sign.CombinedOutput(); err != nil {
		t.Fatalf("sign.sh: %v\n%s", err, out)
	}
	chartDigest := digests[bytes.LastIndexByte(digests[:len(digests)-1], '@')+1 : len(digests)-1]
	signed, _ := os.ReadFile(calls)
	if want := "sign --yes " + image + "\nsign --yes " + repo + "/charts/herald@" + string(chartDigest) + "\n" +
		"sign-blob --yes --bundle " + dist + "/SHA256SUMS.sigstore.json " + dist + "/SHA256SUMS\n"; string(signed) != want {
		t.Errorf("make sign ran cosign\n%s\nwant\n%s", signed, want)
	}

	// Built again without pushing: the same image, named under the project's registry.
	again, out, err := release()
	if err != nil {
		t.Fatalf("release.sh again: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(filepath.Join(again, "DIGESTS")); string(b) != "image ghcr.io/heraldhq/herald:v"+version+"@"+imageDigest+"\n" {
		t.Errorf("a second build's DIGESTS is %q, want the same image digest %s", b, imageDigest)
	}
	// A version that is not semver is refused.
	if _, out, err := release("VERSION=latest"); err == nil || !strings.Contains(string(out), "not semver") {
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
