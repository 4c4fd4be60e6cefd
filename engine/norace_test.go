//go:build !race

package engine_test

// simSeeds is how many seeds TestSimulation runs by default: 10,000 seeds
// took 26 s on a two-core machine like CI's (378 seeds/s, others' tests
// running alongside).
const simSeeds = 10_000
