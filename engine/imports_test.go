package engine

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestNoIO keeps the engine a pure state machine: its non-test files may
// import only what cannot touch a disk, a socket, a clock, a goroutine or
// a global random source.
func TestNoIO(t *testing.T) {
	allowed := map[string]bool{
		"encoding/binary": true, "errors": true, "fmt": true, "slices": true, "sort": true,
		"hash/fnv": true, "github.com/google/uuid": true,
		// recent.go: a random seed places remembered ids in its index (as a Go
		// map's own seed does); it never changes an answer.
		"hash/maphash": true,
		// The vocabulary: a leaf of names and String methods.
		"github.com/commitd/commitd/protocol": true,
	}
	files, _ := filepath.Glob("*.go")
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		ast, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range ast.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if !allowed[path] {
				t.Errorf("%s imports %q: the engine must not do I/O, keep time or spawn goroutines", f, path)
			}
		}
	}
}
