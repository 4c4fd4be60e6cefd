package commitd

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/commitd/commitd"

// layer is a package's place in the architecture, read top-down in
// docs/ARCHITECTURE.md: a package imports only packages of lower layers.
type layer int

const (
	vocabulary layer = iota // protocol: the names every layer speaks; no module imports
	leaf                    // the core: no module imports but the vocabulary
	base                    // one step above the core: the transport, a resource, a test file system
	helper                  // what the servers stand on
	lifecycle               // internal/node: the shared server lifecycle
	server                  // the servers and the client: what users run and import
	stand                   // stand-ins for tests, the load generator, and embed (a server wrapped for users)
	harness                 // whole clusters in tests, the benchmark matrix
	command                 // cmd/commitd
)

// arch is the architecture: every package of the module (by its path inside
// the module), its layer, and every module package its non-test files
// import — exactly, so that this table and the graph in
// docs/ARCHITECTURE.md, which mirrors it, stay the real one. A new package,
// or a new edge between packages, is a decision: make it here and there.
var arch = map[string]struct {
	layer   layer
	imports []string
}{
	"protocol": {vocabulary, nil},

	"":                       {leaf, nil}, // this package: documentation and this test
	"engine":                 {leaf, []string{"protocol"}},
	"wal":                    {leaf, nil},
	"net/wire":               {leaf, []string{"protocol"}},
	"internal/datadir":       {leaf, nil},
	"internal/testrace":      {leaf, nil},
	"internal/console":       {leaf, nil}, // the web console's page and JSON conventions: the standard library only
	"participant/statements": {leaf, []string{"protocol"}},
	"cluster":                {leaf, []string{"protocol"}}, // the map of several coordinator groups (docs/scale.md)

	"participant/httpres/refservice": {leaf, nil}, // the reference service: the standard library only

	"wal/waltest":      {base, []string{"wal"}},
	"net/mux":          {base, []string{"net/wire"}},
	"participant/bank": {base, []string{"engine", "protocol"}},
	"internal/raftlog": {base, []string{"wal"}},

	"participant/remote":  {base, []string{"engine", "protocol"}},
	"participant/httpres": {base, []string{"protocol"}},

	"net/link":             {helper, []string{"net/mux", "net/wire"}},
	"internal/obs":         {helper, []string{"net/mux"}},
	"internal/tracing":     {helper, []string{"net/wire"}},
	"internal/pump":        {helper, []string{"engine", "wal"}},
	"participant/postgres": {helper, []string{"engine", "participant/bank", "participant/statements", "protocol"}},
	"participant/mysql":    {helper, []string{"engine", "participant/bank", "participant/statements", "protocol"}},

	"internal/node": {lifecycle, []string{"internal/datadir", "internal/obs", "internal/pump", "net/mux", "wal"}},

	"coordinator": {server, []string{"cluster", "engine", "internal/console", "internal/datadir", "internal/node", "internal/obs", "internal/pump", "internal/raftlog", "internal/tracing", "net/link", "net/mux", "net/wire", "protocol", "wal"}},
	"participant": {server, []string{"cluster", "engine", "internal/console", "internal/datadir", "internal/node", "internal/obs", "internal/pump", "internal/tracing", "net/link", "net/mux", "net/wire", "protocol", "wal"}},
	"client":      {server, []string{"cluster", "net/link", "net/mux", "net/wire", "protocol"}},

	"client/clienttest":      {stand, []string{"client", "net/mux", "net/wire", "protocol"}},
	"internal/node/nodetest": {stand, []string{"client", "net/mux", "net/wire"}},
	"bench":                  {stand, []string{"client", "cluster", "participant/bank", "participant/statements", "protocol"}},
	"embed":                  {stand, []string{"participant", "participant/remote", "protocol"}},

	"harness/cluster": {harness, []string{"coordinator", "participant", "participant/bank"}},
	"harness/chaos":   {harness, []string{"client", "coordinator", "participant", "participant/bank", "internal/node/nodetest"}},
	"bench/matrix":    {harness, []string{"bench", "client"}},
	"bench/scale":     {harness, []string{"bench", "client"}},

	"cmd/commitd":    {command, []string{"bench", "client", "cluster", "coordinator", "harness/cluster", "internal/tracing", "participant", "participant/bank", "participant/httpres", "participant/mysql", "participant/postgres", "participant/remote", "participant/statements", "protocol", "wal"}},
	"cmd/refservice": {command, []string{"participant/httpres/refservice"}},
}

// TestArchitecture checks the module's import graph against arch: every
// package is in the table, imports only what its row allows (and all of it),
// and only from lower layers. It parses the non-test files' imports; tests
// may reach higher (a client test runs a harness/cluster).
func TestArchitecture(t *testing.T) {
	// The table itself reads top-down.
	for pkg, row := range arch {
		for _, imp := range row.imports {
			dep, ok := arch[imp]
			switch {
			case !ok:
				t.Errorf("arch: %s may import %s, which is not in the table", name(pkg), imp)
			case dep.layer >= row.layer:
				t.Errorf("arch: %s (layer %d) may import %s (layer %d): imports must point to a lower layer", name(pkg), row.layer, imp, dep.layer)
			}
		}
	}

	got := moduleImports(t)
	for pkg, imports := range got {
		row, ok := arch[pkg]
		if !ok {
			t.Errorf("package %s is not in the architecture: add it to arch (arch_test.go) and to docs/ARCHITECTURE.md", name(pkg))
			continue
		}
		for imp, file := range imports {
			if !slices.Contains(row.imports, imp) {
				t.Errorf("%s imports %s, which the architecture does not allow %s to import (arch_test.go, docs/ARCHITECTURE.md)", file, imp, name(pkg))
			}
		}
		for _, imp := range row.imports {
			if _, ok := imports[imp]; !ok {
				t.Errorf("arch says %s imports %s, and it no longer does: remove the edge here and in docs/ARCHITECTURE.md", name(pkg), imp)
			}
		}
	}
	for pkg := range arch {
		if _, ok := got[pkg]; !ok {
			t.Errorf("arch lists %s, which has no Go files: remove it here and in docs/ARCHITECTURE.md", name(pkg))
		}
	}
}

func name(pkg string) string {
	if pkg == "" {
		return "the module root"
	}
	return pkg
}

// moduleImports parses the imports of every non-test Go file in the module
// and returns, for each package directory (relative to the root, "" for the
// root), the module packages it imports and one file that imports each.
func moduleImports(t *testing.T) map[string]map[string]string {
	t.Helper()
	got := map[string]map[string]string{}
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			base := d.Name()
			if path != "." && (base == "testdata" || strings.HasPrefix(base, ".") || strings.HasPrefix(base, "_")) {
				return filepath.SkipDir
			}
			if path != "." {
				if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
					return filepath.SkipDir // another module
				}
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		pkg := filepath.ToSlash(filepath.Dir(path))
		if pkg == "." {
			pkg = ""
		}
		if got[pkg] == nil {
			got[pkg] = map[string]string{}
		}
		for _, spec := range f.Imports {
			imp, err := strconv.Unquote(spec.Path.Value)
			if err != nil {
				return err
			}
			if rel, ok := strings.CutPrefix(imp, module+"/"); ok {
				got[pkg][rel] = path
			} else if imp == module {
				got[pkg][""] = path
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// No data directory is committed: a tracked log segment outside a testdata
// directory is a server's data added by accident (one was: 177 MB of a
// coordinator's logs, removed in the commit that added this test). Only
// what git tracks is checked, so a data directory a user made in the
// checkout (--data ./p1) does not fail it.
func TestNoLogSegmentsCommitted(t *testing.T) {
	out, err := exec.Command("git", "ls-files", "-z", "--", "*.wal").Output()
	if err != nil {
		t.Skipf("not a git checkout, or no git: %v", err)
	}
	for _, path := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		if path != "" && !slices.Contains(strings.Split(filepath.ToSlash(path), "/"), "testdata") {
			t.Errorf("%s: a log segment committed outside testdata (a data directory left behind?)", path)
		}
	}
}
