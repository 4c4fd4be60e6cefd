//go:build race

package testrace

// Enabled is whether the race detector is on.
const Enabled = true
