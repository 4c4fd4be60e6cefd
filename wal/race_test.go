//go:build race

package wal_test

// raceEnabled: the race detector instruments code and may allocate.
const raceEnabled = true
