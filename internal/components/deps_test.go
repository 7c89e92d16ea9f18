package components

import (
	"go/build"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/hashgate/proxyd/"

// The libraries do not depend on the wiring: no package under nvml/ or
// switcher/ imports internal/daemon or internal/config, directly or
// through another package of this module (tests aside), and none links
// the testing package.
func TestLibrariesDoNotImportTheWiring(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	forbidden := []string{module + "internal/daemon", module + "internal/config", "testing"}
	// imports returns the non-test imports of a package of this module.
	imports := func(path string) []string {
		dir := filepath.Join(root, strings.TrimPrefix(path, module))
		p, err := build.ImportDir(dir, 0)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return p.Imports
	}
	for _, lib := range []string{"nvml", "switcher"} {
		err := filepath.WalkDir(filepath.Join(root, lib), func(path string, d os.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return err
			}
			if ok, _ := filepath.Glob(filepath.Join(path, "*.go")); len(ok) == 0 {
				return nil
			}
			rel, _ := filepath.Rel(root, path)
			start := module + filepath.ToSlash(rel)
			// Walk this module's packages from start; via records how each was reached.
			via := map[string]string{start: ""}
			queue := []string{start}
			for len(queue) > 0 {
				p := queue[0]
				queue = queue[1:]
				for _, imp := range imports(p) {
					if _, seen := via[imp]; seen {
						continue
					}
					via[imp] = p
					if slices.Contains(forbidden, imp) {
						chain := []string{imp}
						for q := p; q != ""; q = via[q] {
							chain = append(chain, q)
						}
						slices.Reverse(chain)
						t.Errorf("%s imports %s: %s", start, imp, strings.Join(chain, " → "))
						continue
					}
					if strings.HasPrefix(imp, module) {
						queue = append(queue, imp)
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
