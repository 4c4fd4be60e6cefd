package coordinator_test

import (
	"testing"
	"time"

	"github.com/commitd/commitd/coordinator"
	"github.com/commitd/commitd/internal/node/nodetest"
)

// TestRaftLeaderMetric: exactly one replica of a group exports
// commitd_coordinator_raft_leader 1, all in the same term, and when it
// stops another takes it over in a later term — what the alert for a
// group without a leader (deploy/prometheus/alerts.yml) reads.
func TestRaftLeaderMetric(t *testing.T) {
	http := map[uint64]string{1: nodetest.FreeAddr(t), 2: nodetest.FreeAddr(t), 3: nodetest.FreeAddr(t)}
	g := newGroup(t, func(c *coordinator.Config) { c.HTTP = http[c.ID] })
	first := g.leader(10 * time.Second)
	// The gauges read what the replicas last published: wait for the
	// followers to have heard of the leader's term.
	term := func(id uint64) float64 { return nodetest.Metric(t, http[id], "commitd_coordinator_raft_term") }
	leads := func(id uint64) float64 { return nodetest.Metric(t, http[id], "commitd_coordinator_raft_leader") }
	settled := func(ids []uint64, leader uint64) bool {
		for _, id := range ids {
			want := 0.0
			if id == leader {
				want = 1
			}
			if leads(id) != want || term(id) != term(leader) || term(id) == 0 {
				return false
			}
		}
		return true
	}
	waitFor(t, 10*time.Second, func() bool { return settled([]uint64{1, 2, 3}, first) })
	before := term(first)

	g.stop(first)
	second := g.leader(10 * time.Second)
	var rest []uint64
	for id := uint64(1); id <= 3; id++ {
		if id != first {
			rest = append(rest, id)
		}
	}
	waitFor(t, 10*time.Second, func() bool { return settled(rest, second) })
	if after := term(second); after <= before {
		t.Fatalf("term %v after the leader stopped, %v before: an election raises it", after, before)
	}
}

// waitFor polls cond until it holds, failing the test after within.
func waitFor(t *testing.T, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v", within)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, not a guess at timing
	}
}
