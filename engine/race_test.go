//go:build race

package engine_test

// simSeeds is how many seeds TestSimulation runs by default. Under the
// race detector a seed costs about five times as much: 5,000 seeds took
// 64 s on a two-core machine like CI's (78 seeds/s, against 450 without).
const simSeeds = 5_000
