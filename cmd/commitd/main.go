// Command commitd runs a two-phase-commit coordinator, a bank participant,
// an embedded demo cluster, load benchmarks and admin queries.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: commitd demo|coordinator|participant|bench|admin ...")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "demo":
		fmt.Fprintln(os.Stderr, "commitd demo: the embedded cluster does not exist yet (see issue: the running cluster)")
		os.Exit(1)
	default:
		fmt.Fprintf(os.Stderr, "commitd: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
}
