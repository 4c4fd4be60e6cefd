package coordinator_test

import (
	"testing"
	"time"

	"github.com/commitd/commitd/coordinator"
	"github.com/commitd/commitd/internal/node/nodetest"
)

// settledStatus asks the coordinator at addr for `admin status` until
// settled says the report accounts for everything the test has seen
// answered, and returns that report; after 10 s it fails the test with
// the last one.
//
// A reply can reach its client before the report counts it: each shard's
// pump delivers a round's replies and only then publishes the shard's
// statistics (pump.Pump.OnLoop), so a status asked for at once may still
// show the transaction in flight. Counts only grow, so settled should
// wait for "everything answered is counted" and the caller then check the
// exact numbers, which catches anything counted twice or wrongly.
func settledStatus(t testing.TB, addr, what string, settled func(coordinator.Status) bool) coordinator.Status {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var st coordinator.Status
		nodetest.Report(t, addr, "status", &st)
		if settled(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("the status never showed %s within 10s; last: %+v", what, st)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, not a guess at timing
	}
}
