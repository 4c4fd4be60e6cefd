//go:build race

package participant

// csimSeeds is how many seeds TestClusterSimulation runs by default under
// the race detector, which makes a seed about five times as costly and can
// find only state shared between seeds running side by side; make test
// runs the full count without it (make sims).
const csimSeeds = 50
