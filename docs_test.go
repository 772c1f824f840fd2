package main

import (
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// trackedFiles lists the files git tracks, as paths from the repository root.
func trackedFiles(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("git", "ls-files").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	return strings.Fields(string(out))
}

// README's layout table names every top-level folder, so a newcomer finds each from it.
func TestReadmeLayoutNamesEveryTopLevelFolder(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, _ := strings.Cut(string(readme), "## Layout")
	table, _, _ = strings.Cut(table, "\n## ")
	listed := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([^/`]+)/").FindAllStringSubmatch(table, -1) {
		listed[m[1]] = true
	}
	seen := map[string]bool{}
	for _, f := range trackedFiles(t) {
		dir, _, nested := strings.Cut(f, "/")
		if !nested || strings.HasPrefix(dir, ".") || seen[dir] {
			continue
		}
		seen[dir] = true
		if !listed[dir] {
			t.Errorf("README's layout table does not name the folder %s/", dir)
		}
	}
	if len(seen) == 0 {
		t.Fatal("git lists no folder: the check reads nothing")
	}
}

// fileRef is a file a comment or a doc names: a path with a folder (from the repository root)
// or a bare file name of Go or shell code (in the commenting package's folder).
var fileRef = regexp.MustCompile("(?:[A-Za-z0-9_.-]+/)*[A-Za-z0-9_-]+\\.(?:go|sh)\\b")

// Package docs and comments name only files that exist: a doc that names a file that is gone
// is stale (a file is renamed or a package moves, and its readers are sent nowhere).
func TestDocsNameOnlyFilesThatExist(t *testing.T) {
	exists := map[string]bool{}
	files := trackedFiles(t)
	for _, f := range files {
		exists[f] = true
		for dir := filepath.Dir(f); dir != "."; dir = filepath.Dir(dir) {
			exists[dir] = true
		}
	}
	names := func(text string) []string {
		var refs []string
		for _, at := range fileRef.FindAllStringIndex(text, -1) {
			ref := text[at[0]:at[1]]
			if strings.HasPrefix(ref, ".") || strings.Contains(ref, "..") || strings.HasPrefix(text[at[1]:], "/") {
				continue // relative, or a host name (helm.sh/helm)
			}
			refs = append(refs, ref)
		}
		return refs
	}
	base := map[string]bool{}
	for f := range exists {
		base[filepath.Base(f)] = true
	}
	found := func(from, ref string) bool {
		dir := filepath.Dir(from)
		if exists[ref] || exists[filepath.Join(dir, ref)] {
			return true
		}
		if !strings.Contains(ref, "/") {
			// A Go comment names a file of its own package; a guide may name any by its name.
			return strings.HasSuffix(from, ".md") && base[ref]
		}
		// A path below a folder of the repository that holds it at another depth, e.g.
		// `watch/watch_linux.go` said inside relay/.
		for f := range exists {
			if strings.HasSuffix(f, "/"+ref) {
				return true
			}
		}
		return false
	}
	checked := 0
	for _, f := range files {
		var texts []string
		switch {
		case strings.HasSuffix(f, ".go") && !strings.Contains(f, "/testdata/"):
			parsed, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ParseComments|parser.PackageClauseOnly)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if parsed.Doc != nil {
				texts = append(texts, parsed.Doc.Text())
			}
			all, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ParseComments)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			for _, c := range all.Comments {
				texts = append(texts, c.Text())
			}
		case strings.HasPrefix(f, "docs/") && strings.HasSuffix(f, ".md"), f == "README.md":
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			// Only what is quoted as code names a file of this repository.
			for _, m := range regexp.MustCompile("`([^`\n]+)`").FindAllStringSubmatch(string(b), -1) {
				texts = append(texts, m[1])
			}
		default:
			continue
		}
		for _, text := range texts {
			for _, ref := range names(text) {
				checked++
				if !found(f, ref) {
					t.Errorf("%s names %s, which is not in the repository", f, ref)
				}
			}
		}
	}
	if checked < 20 {
		t.Fatalf("only %d file names checked: the check reads too little", checked)
	}
}
