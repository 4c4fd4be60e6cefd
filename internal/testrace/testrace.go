// Package testrace tells tests whether the race detector is on, and lets
// the deterministic simulations step aside under it.
//
// The seeded simulations (engine, the replicated coordinator, the cluster
// of groups) drive their machines from one goroutine per seed, so the race
// detector has nothing to find in them while it makes every seed about
// five times as costly. make test runs them without it (make sims), and
// with it only a few seeds where seeds run side by side (which would show
// state shared between them).
package testrace

import (
	"os"
	"testing"
)

// SkipSimulation skips t under the race detector unless
// COMMITD_SIM_UNDER_RACE=1.
func SkipSimulation(t testing.TB) {
	t.Helper()
	if Enabled && os.Getenv("COMMITD_SIM_UNDER_RACE") != "1" {
		t.Skip("a deterministic simulation on one goroutine: make test runs it without -race (make sims); COMMITD_SIM_UNDER_RACE=1 runs it here")
	}
}
