// Package commitd is the root of the commitd module: a two-phase-commit
// coordinator (presumed abort) with participants, a Go client, a load
// generator and the harnesses that test them. It holds no code of its own;
// the command is cmd/commitd.
//
// Start with README.md, then docs/ARCHITECTURE.md, the codemap: which
// package holds what, which invariants each keeps, and the import graph.
// This package's test (arch_test.go) keeps that graph the one the page
// draws: a package that imports one the architecture does not allow, or a
// package the table does not know, fails it.
package commitd
