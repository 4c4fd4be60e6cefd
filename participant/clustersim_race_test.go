//go:build race

package participant

// csimSeeds is how many seeds TestClusterSimulation runs by default under
// the race detector, which makes a seed about five times as costly.
const csimSeeds = 200
