package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func main() {
	out := flag.String("out", "bin/images", "directory the archives are written to (empty: none)")
	repo := flag.String("repo", "ghcr.io/heraldhq", "registry and path the images are named under: <repo>/<name>:<tag>")
	tag := flag.String("tag", "dev", "tag of every image")
	push := flag.Bool("push", false, "push each image to -repo (a registry on a loopback address is spoken to over plain HTTP)")
	platforms := flag.String("platforms", "linux/"+runtime.GOARCH, "comma-separated linux/<arch> platforms of each image; {arch} in a binary's path is replaced by each arch")
	herald := flag.String("herald", "bin/herald", "static herald binary")
	pause := flag.String("pause", "bin/pause", "static pause binary (hack/pause)")
	app := flag.String("orders-app", "bin/orders-app", "static orders-app binary (config/samples/orders-app)")
	only := flag.String("only", "", "comma-separated names of the images to build (default: all)")
	var extra []string
	flag.Func("app", "name=binary: one more app image (e.g. a test's), repeatable", func(v string) error {
		if name, bin, ok := strings.Cut(v, "="); !ok || name == "" || bin == "" {
			return fmt.Errorf("want name=binary, got %q", v)
		}
		extra = append(extra, v)
		return nil
	})
	flag.Parse()
	var archs []string
	for _, p := range strings.Split(*platforms, ",") {
		arch, ok := strings.CutPrefix(p, "linux/")
		if !ok || arch == "" || strings.Contains(arch, "/") {
			fail(fmt.Errorf("-platforms: %q is not linux/<arch>", p))
		}
		archs = append(archs, arch)
	}
	if *out != "" {
		if err := os.MkdirAll(*out, 0o755); err != nil {
			fail(err)
		}
	}
	type image struct {
		name, bin string
		spec      Spec
	}
	images := []image{{"herald", *herald, HeraldSpec}, {"pause", *pause, PauseSpec}, {"orders-app", *app, AppSpec}}
	for _, v := range extra {
		name, bin, _ := strings.Cut(v, "=")
		images = append(images, image{name, bin, AppSpec})
	}
	for _, im := range images {
		if *only != "" && !slices.Contains(strings.Split(*only, ","), im.name) {
			continue
		}
		idx, err := Index(im.spec, archs, func(arch string) string { return strings.ReplaceAll(im.bin, "{arch}", arch) })
		if err != nil {
			fail(fmt.Errorf("%s image: %w", im.name, err))
		}
		digest, err := idx.Digest()
		if err != nil {
			fail(err)
		}
		ref := *repo + "/" + im.name + ":" + *tag
		if *out != "" {
			if err := WriteArchive(filepath.Join(*out, im.name+".tar"), ref, idx); err != nil {
				fail(fmt.Errorf("%s image: %w", im.name, err))
			}
		}
		if *push {
			r, err := name.NewTag(ref)
			if err != nil {
				fail(err)
			}
			// Credentials as docker login, crane auth login or a CI's login step left them.
			if err := remote.WriteIndex(r, idx, remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
				fail(fmt.Errorf("pushing %s: %w", ref, err))
			}
		}
		fmt.Println(im.name, ref, digest)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "images:", err)
	os.Exit(1)
}
