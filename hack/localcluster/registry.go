package localcluster

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// The registry the node pulls every image from, as a real cluster does: an OCI registry
// (go-containerregistry's, blobs on disk) on a loopback address, which containerd (on the host's
// network) reaches over plain HTTP. containerd also takes it as the mirror of MirroredRegistry,
// so the images the samples name (ghcr.io/heraldhq/orders-app:dev) come from it too.
const MirroredRegistry = "ghcr.io"

func (c *Cluster) startRegistry() error {
	addr := c.opt.RegistryAddr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("the registry's address %s: %w", addr, err)
	}
	blobs := filepath.Join(c.Dir, "registry")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		ln.Close()
		return err
	}
	logf, err := os.Create(c.LogPath("registry"))
	if err != nil {
		ln.Close()
		return err
	}
	c.Registry = ln.Addr().String()
	c.registry = &http.Server{Handler: registry.New(
		registry.WithBlobHandler(registry.NewDiskBlobHandler(blobs)),
		registry.Logger(log.New(logf, "", log.LstdFlags)),
	)}
	go func() {
		defer logf.Close()
		if err := c.registry.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(logf, "registry:", err)
		}
	}()
	return nil
}

// registryHosts is containerd's hosts directory (config_path): the registry itself over HTTP,
// and the registry as the mirror of MirroredRegistry (tried first; the real one after).
func (n *Node) registryHosts() map[string]string {
	dir := filepath.Join(n.containerdDir(), "certs.d")
	local := "http://" + n.c.Registry
	return map[string]string{
		filepath.Join(dir, n.c.Registry, "hosts.toml"): fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", local, local),
		filepath.Join(dir, MirroredRegistry, "hosts.toml"): fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n",
			"https://"+MirroredRegistry, local),
	}
}

// PushArchive pushes the image (index) of an OCI archive hack/images wrote to the node's
// registry, under the reference's path: ghcr.io/heraldhq/herald:dev becomes
// <Registry>/heraldhq/herald:dev, which the node also pulls as ghcr.io/heraldhq/herald:dev.
func (c *Cluster) PushArchive(archive string) (string, error) {
	dir, err := os.MkdirTemp("", "herald-archive-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	if err := untar(archive, dir); err != nil {
		return "", fmt.Errorf("%s: %w", archive, err)
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		return "", fmt.Errorf("%s: %w", archive, err)
	}
	top, err := p.ImageIndex()
	if err != nil {
		return "", err
	}
	m, err := top.IndexManifest()
	if err != nil {
		return "", err
	}
	if len(m.Manifests) != 1 {
		return "", fmt.Errorf("%s holds %d images, want 1", archive, len(m.Manifests))
	}
	desc := m.Manifests[0]
	ref, err := name.ParseReference(desc.Annotations["org.opencontainers.image.ref.name"])
	if err != nil {
		return "", fmt.Errorf("%s: the image's name: %w", archive, err)
	}
	local, err := name.NewTag(c.Registry + "/" + ref.Context().RepositoryStr() + ":" + ref.Identifier())
	if err != nil {
		return "", err
	}
	switch {
	case desc.MediaType.IsIndex():
		idx, err := top.ImageIndex(desc.Digest)
		if err == nil {
			err = remote.WriteIndex(local, idx)
		}
		if err != nil {
			return "", fmt.Errorf("pushing %s: %w", local, err)
		}
	case desc.MediaType.IsImage(): // an archive of an earlier Herald's hack/images
		img, err := top.Image(desc.Digest)
		if err == nil {
			err = remote.Write(local, img)
		}
		if err != nil {
			return "", fmt.Errorf("pushing %s: %w", local, err)
		}
	default:
		return "", fmt.Errorf("%s holds a %s, not an image", archive, desc.MediaType)
	}
	return local.String(), nil
}

// PushChart packages the chart in dir as version and pushes it to the node's registry (helm
// push, as a user's CI does); the result is the chart's oci:// reference to install.
func (c *Cluster) PushChart(ctx context.Context, helm, dir, version string) (string, error) {
	tmp, err := os.MkdirTemp("", "herald-chart-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	for _, args := range [][]string{
		{"package", dir, "--version", version, "--destination", tmp},
		{"push", filepath.Join(tmp, filepath.Base(dir)+"-"+version+".tgz"), "oci://" + c.Registry + "/heraldhq/charts", "--plain-http"},
	} {
		if out, err := exec.CommandContext(ctx, helm, args...).CombinedOutput(); err != nil {
			return "", fmt.Errorf("helm %s: %v: %s", args[0], err, out)
		}
	}
	return "oci://" + c.Registry + "/heraldhq/charts/" + filepath.Base(dir), nil
}

// untar unpacks the plain files and directories of a tar archive into dir.
func untar(archive, dir string) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		p := filepath.Join(dir, filepath.Clean("/"+h.Name))
		if !strings.HasPrefix(p, dir+string(filepath.Separator)) {
			return fmt.Errorf("%q leaves the archive", h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o755)
		case tar.TypeReg:
			var out *os.File
			if out, err = os.Create(p); err == nil {
				_, err = io.Copy(out, tr)
				err = errors.Join(err, out.Close())
			}
		}
		if err != nil {
			return err
		}
	}
}
