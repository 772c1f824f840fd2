// Command images builds Herald's container images with no Docker: the Herald image (the
// Dockerfile's layout, see HeraldSpec), a pause image for pod sandboxes and the orders-app
// sample's image. Each is an OCI image index of one image per platform, the same bytes for the
// same binaries. It writes each as an OCI archive (an image layout named by the full reference,
// which `ctr images import`, crane and skopeo read) and, with -push, pushes it to its registry.
//
//	images -out DIR -tag dev                       # make images: the host's platform
//	images -platforms linux/amd64,linux/arm64 -herald 'dist/herald-linux-{arch}' \
//	       -only herald -repo REGISTRY -tag v1.2.3 -push   # make release
package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Spec is what an image holds: one static binary and the few files a non-root, distroless-style
// image has.
type Spec struct {
	Binary  string // path of the binary inside the image, and its entrypoint
	User    string // "uid:gid"
	CACerts bool   // ship /etc/ssl/certs/ca-certificates.crt
	Env     []string
}

// nonroot is the user of distroless's :nonroot images, which the Dockerfile's runtime stage uses.
const nonroot = "65532:65532"

// HeraldSpec is the Herald image: the same layout as the Dockerfile's runtime stage
// (gcr.io/distroless/static-debian12:nonroot with the binary at /herald). images_test.go reads
// the Dockerfile and fails when the two differ.
var HeraldSpec = Spec{
	Binary:  "/herald",
	User:    nonroot,
	CACerts: true,
	Env:     []string{"PATH=/usr/local/bin:/usr/bin:/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"},
}

// PauseSpec is the pod sandbox image: a process that sleeps until it is told to stop.
var PauseSpec = Spec{Binary: "/pause", User: nonroot}

// AppSpec is the image of a sample app: its binary at /app.
var AppSpec = Spec{Binary: "/app", User: nonroot, Env: []string{"PATH=/usr/local/bin:/usr/bin:/bin"}}

// hostCACerts is where Debian keeps the bundle ca-certificates builds.
const hostCACerts = "/etc/ssl/certs/ca-certificates.crt"

// epoch is every file's modification time, so the same binary gives the same image.
var epoch = time.Unix(0, 0).UTC()

// Image builds spec's image for linux/arch around the binary at binPath.
func Image(spec Spec, binPath, arch string) (v1.Image, error) {
	bin, err := os.ReadFile(binPath)
	if err != nil {
		return nil, err
	}
	files := map[string]file{
		spec.Binary:       {mode: 0o755, data: bin},
		"/etc/passwd":     {mode: 0o644, data: []byte("root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
		"/etc/group":      {mode: 0o644, data: []byte("root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n")},
		"/tmp/":           {mode: 0o1777},
		"/home/nonroot/":  {mode: 0o700, uid: 65532, gid: 65532},
		"/etc/ssl/certs/": {mode: 0o755},
	}
	if spec.CACerts {
		ca, err := os.ReadFile(hostCACerts)
		if err != nil {
			return nil, fmt.Errorf("CA certificates (Debian's ca-certificates package): %w", err)
		}
		files[hostCACerts] = file{mode: 0o644, data: ca}
	}
	layerTar, err := tarOf(files)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS, cf.Created = arch, "linux", v1.Time{Time: epoch}
	cf.Config = v1.Config{Entrypoint: []string{spec.Binary}, User: spec.User, Env: spec.Env, WorkingDir: "/"}
	return mutate.ConfigFile(img, cf)
}

// Index builds spec's image for each of archs (linux/<arch>), binary(arch) being its binary, as
// one OCI image index in the order of archs.
func Index(spec Spec, archs []string, binary func(arch string) string) (v1.ImageIndex, error) {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, arch := range archs {
		img, err := Image(spec, binary(arch), arch)
		if err != nil {
			return nil, fmt.Errorf("linux/%s: %w", arch, err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}},
		})
	}
	return idx, nil
}

// WriteArchive writes idx as a tar of an OCI image layout whose index names it ref, the form
// `ctr images import` reads (containerd takes the name from io.containerd.image.name).
func WriteArchive(out, ref string, idx v1.ImageIndex) error {
	dir, err := os.MkdirTemp("", "herald-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		"io.containerd.image.name":          ref,
		"org.opencontainers.image.ref.name": ref,
	})); err != nil {
		return err
	}
	return tarDir(dir, out)
}

type file struct {
	mode     int64
	uid, gid int
	data     []byte
}

// tarOf writes files (a trailing slash marks a directory) and every parent directory, sorted, as
// an uncompressed tar.
func tarOf(files map[string]file) ([]byte, error) {
	all := map[string]file{}
	for name, f := range files {
		all[name] = f
		for d := path.Dir(name[:len(name)-1]) + "/"; d != "//" && d != "/"; d = path.Dir(d[:len(d)-1]) + "/" {
			if _, ok := files[d]; !ok {
				all[d] = file{mode: 0o755}
			}
		}
	}
	names := make([]string, 0, len(all))
	for n := range all {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		f := all[n]
		h := &tar.Header{Name: n[1:], Mode: f.mode, Uid: f.uid, Gid: f.gid, ModTime: epoch, Format: tar.FormatPAX}
		if n[len(n)-1] == '/' {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// tarDir writes the files and directories under dir into the tar file out.
func tarDir(dir, out string) error {
	files := map[string]file{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() {
			files["/"+rel+"/"] = file{mode: 0o755}
			return nil
		}
		data, err := os.ReadFile(p)
		files["/"+rel] = file{mode: 0o644, data: data}
		return err
	})
	if err != nil {
		return err
	}
	b, err := tarOf(files)
	if err != nil {
		return err
	}
	return os.WriteFile(out, b, 0o644)
}
