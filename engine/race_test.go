//go:build race

package engine_test

// simSeeds is how many seeds TestSimulation runs by default under the race
// detector. Each seed is one goroutine's deterministic run, so the detector
// can find only state shared between seeds running side by side, which a
// few hundred seeds show as well as thousands; make test runs the full
// count without it (make sims: 10,000 seeds in about 26 s), where under it
// 5,000 took 64 s on a two-core machine like CI's.
const simSeeds = 300
