package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

func main() {
	out := flag.String("out", "bin/images", "directory the archives are written to")
	tag := flag.String("tag", "dev", "tag of every image")
	herald := flag.String("herald", "bin/herald", "static herald binary")
	pause := flag.String("pause", "bin/pause", "static pause binary (hack/pause)")
	app := flag.String("orders-app", "bin/orders-app", "static orders-app binary (config/samples/orders-app)")
	only := flag.String("only", "", "comma-separated names of the images to write (default: all)")
	var extra []string
	flag.Func("app", "name=binary: one more app image (e.g. a test's), repeatable", func(v string) error {
		if name, bin, ok := strings.Cut(v, "="); !ok || name == "" || bin == "" {
			return fmt.Errorf("want name=binary, got %q", v)
		}
		extra = append(extra, v)
		return nil
	})
	flag.Parse()
	if err := os.MkdirAll(*out, 0o755); err != nil {
		fail(err)
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
		img, err := Image(im.spec, im.bin)
		if err != nil {
			fail(fmt.Errorf("%s image: %w", im.name, err))
		}
		ref := Ref(im.name, *tag)
		if err := WriteArchive(filepath.Join(*out, im.name+".tar"), ref, img); err != nil {
			fail(fmt.Errorf("%s image: %w", im.name, err))
		}
		fmt.Println(ref, filepath.Join(*out, im.name+".tar"))
	}
}

// Ref is the full reference of one of the local images.
func Ref(name, tag string) string { return "ghcr.io/heraldhq/" + name + ":" + tag }

func fail(err error) {
	fmt.Fprintln(os.Stderr, "images:", err)
	os.Exit(1)
}
