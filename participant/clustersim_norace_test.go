//go:build !race

package participant

// csimSeeds is how many seeds TestClusterSimulation runs by default:
// 2,000 seeds took 19 s on a shared two-core machine like CI's.
const csimSeeds = 2000
