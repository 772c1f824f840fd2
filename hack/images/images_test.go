package main

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// dockerfileRuntime reads what the Dockerfile's last stage makes of the image: its base, the
// binary's path (COPY --from=build <src> <dst>), USER and ENTRYPOINT.
func dockerfileRuntime(t *testing.T) (base, binary, user string, entrypoint []string) {
	t.Helper()
	b, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && f[0] == "FROM":
			base, binary, user, entrypoint = f[1], "", "", nil // a new stage: only the last counts
		case len(f) == 4 && f[0] == "COPY" && strings.HasPrefix(f[1], "--from="):
			binary = f[3]
		case len(f) == 2 && f[0] == "USER":
			user = f[1]
		case len(f) >= 2 && f[0] == "ENTRYPOINT":
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "ENTRYPOINT")), &entrypoint); err != nil {
				t.Fatalf("ENTRYPOINT is not in exec form: %v", err)
			}
		}
	}
	return base, binary, user, entrypoint
}

func fakeBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "bin")
	if err := os.WriteFile(bin, []byte("not really a program\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// filesOf reads the image's file system: path (no leading or trailing slash) -> header, and the
// contents of regular files.
func filesOf(t *testing.T, img v1.Image) (map[string]*tar.Header, map[string]string) {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	headers, contents := map[string]*tar.Header{}, map[string]string{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return headers, contents
		}
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(h.Name, "/")
		headers[name] = h
		b, _ := io.ReadAll(tr)
		contents[name] = string(b)
	}
}

// The Herald image `make dev` runs has the layout of the Dockerfile users build with Docker, so
// the two cannot drift apart.
func TestHeraldImageMatchesDockerfile(t *testing.T) {
	base, binary, user, entrypoint := dockerfileRuntime(t)
	if base != "gcr.io/distroless/static-debian12:nonroot" {
		t.Errorf("the Dockerfile's runtime base is %s; HeraldSpec copies distroless static :nonroot (user 65532, CA certificates): update both", base)
	}
	if binary != HeraldSpec.Binary {
		t.Errorf("the Dockerfile puts the binary at %s, HeraldSpec at %s", binary, HeraldSpec.Binary)
	}
	if user != HeraldSpec.User {
		t.Errorf("the Dockerfile runs as %s, HeraldSpec as %s", user, HeraldSpec.User)
	}
	img, err := Image(HeraldSpec, fakeBinary(t), "amd64")
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(cf.Config.Entrypoint, " "), strings.Join(entrypoint, " "); got != want {
		t.Errorf("entrypoint %q, the Dockerfile's %q", got, want)
	}
	if cf.Config.User != user || cf.OS != "linux" {
		t.Errorf("config: user %q, os %q", cf.Config.User, cf.OS)
	}
	headers, contents := filesOf(t, img)
	for name, mode := range map[string]int64{
		strings.TrimPrefix(binary, "/"): 0o755, "etc/passwd": 0o644, "etc/group": 0o644,
		"etc/ssl/certs/ca-certificates.crt": 0o644, "tmp": 0o1777, "home/nonroot": 0o700,
	} {
		h, ok := headers[name]
		if !ok {
			t.Errorf("the image lacks /%s", name)
		} else if h.Mode != mode {
			t.Errorf("/%s has mode %o, want %o", name, h.Mode, mode)
		}
	}
	if !strings.Contains(contents["etc/passwd"], "nonroot:x:65532:65532:") {
		t.Errorf("/etc/passwd has no nonroot user 65532:\n%s", contents["etc/passwd"])
	}
	if !strings.Contains(contents["etc/ssl/certs/ca-certificates.crt"], "BEGIN CERTIFICATE") {
		t.Error("/etc/ssl/certs/ca-certificates.crt holds no certificate")
	}
	if h := headers["home/nonroot"]; h != nil && (h.Uid != 65532 || h.Gid != 65532) {
		t.Errorf("/home/nonroot belongs to %d:%d", h.Uid, h.Gid)
	}
}

// The same binaries give the same index (digest), so a rebuild does not roll every pod and a
// release can be rebuilt and checked; each platform's image says its architecture.
func TestIndexIsReproducibleAndMultiPlatform(t *testing.T) {
	bins := map[string]string{"amd64": fakeBinary(t), "arm64": fakeBinary(t)}
	archs := []string{"amd64", "arm64"}
	digests := map[v1.Hash]bool{}
	for range 2 {
		idx, err := Index(PauseSpec, archs, func(arch string) string { return bins[arch] })
		if err != nil {
			t.Fatal(err)
		}
		d, err := idx.Digest()
		if err != nil {
			t.Fatal(err)
		}
		digests[d] = true
		m, err := idx.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Manifests) != 2 || m.MediaType != types.OCIImageIndex {
			t.Fatalf("index %s of %d manifests, want an OCI index of 2", m.MediaType, len(m.Manifests))
		}
		for i, desc := range m.Manifests {
			if desc.Platform == nil || desc.Platform.OS != "linux" || desc.Platform.Architecture != archs[i] {
				t.Errorf("manifest %d is for %v, want linux/%s", i, desc.Platform, archs[i])
			}
			img, err := idx.Image(desc.Digest)
			if err != nil {
				t.Fatal(err)
			}
			if cf, err := img.ConfigFile(); err != nil || cf.Architecture != archs[i] || cf.OS != "linux" {
				t.Errorf("image %d's config says %s/%s (%v), want linux/%s", i, cf.OS, cf.Architecture, err, archs[i])
			}
		}
	}
	if len(digests) != 1 {
		t.Errorf("two builds of the same binaries gave %d digests", len(digests))
	}
}

// An archive is an OCI layout whose index names the image by its full reference, the name
// containerd gives it on import.
func TestWriteArchiveNamesTheImage(t *testing.T) {
	bin := fakeBinary(t)
	img, err := Index(AppSpec, []string{"amd64"}, func(string) string { return bin })
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(t.TempDir(), "app.tar")
	ref := "ghcr.io/heraldhq/orders-app:test"
	if err := WriteArchive(archive, ref, img); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, h.Name)
		if h.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		b, _ := io.ReadAll(tr)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 1 {
		t.Fatalf("the index lists %d manifests", len(m.Manifests))
	}
	if got := m.Manifests[0].Annotations["io.containerd.image.name"]; got != ref {
		t.Errorf("io.containerd.image.name = %q, want %q", got, ref)
	}
	want, _ := img.Digest()
	if m.Manifests[0].Digest != want {
		t.Errorf("the index points at %s, the image is %s", m.Manifests[0].Digest, want)
	}
}
