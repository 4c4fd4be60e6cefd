//go:build race

package client_test

// raceEnabled: under the race detector sync.Pool drops a share of what is
// put back, so pooled code allocates.
const raceEnabled = true
