package coordinator_test

import (
	"strings"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/cluster"
	"github.com/commitd/commitd/coordinator"
	"github.com/commitd/commitd/internal/node/nodetest"
	"github.com/commitd/commitd/net/wire"
	"github.com/commitd/commitd/protocol"
)

// A coordinator that is group 2 of a cluster (docs/scale.md) runs only
// group 2's transactions, and never answers a participant's inquiry about
// another group's: its shards would presume that one aborted, and only the
// group that owns it may say so. Its own unknown ids it presumes aborted
// as ever.
func TestGroupTakesOnlyItsOwnTransactions(t *testing.T) {
	r := newRig(t, nil, func(c *coordinator.Config) { c.Group = 2 })

	if res := r.run(cluster.Stamp(newID(), 2), "p1", "p2"); res.Outcome != client.Committed {
		t.Fatalf("a group-2 transaction: %+v", res)
	}
	for _, id := range []protocol.TxnID{cluster.Stamp(newID(), 1), cluster.Stamp(newID(), 3)} {
		res := r.run(id, "p1", "p2")
		if res.Outcome != client.Rejected || res.Cause != protocol.CauseInvalid || !strings.Contains(res.Detail, "this coordinator is group 2") {
			t.Fatalf("a transaction of group %d: %+v, want rejected as another group's", cluster.GroupOf(id), res)
		}
		if r.parts["p1"].prepared(id) {
			t.Fatalf("another group's transaction %v was prepared", id)
		}
	}

	// p1 asks about an id of group 1 that nobody here knows, then about
	// one of group 2: only the second is answered (abort, presumed).
	p1 := r.parts["p1"]
	other, own := cluster.Stamp(newID(), 1), cluster.Stamp(newID(), 2)
	if err := p1.Send(&wire.Inquire{Txn: other, From: []byte("p1")}); err != nil {
		t.Fatal(err)
	}
	if err := p1.Send(&wire.Inquire{Txn: own, From: []byte("p1")}); err != nil {
		t.Fatal(err)
	}
	nodetest.Eventually(t, "the own group's inquiry answered", func() bool { return p1.decisionsFor(own, protocol.DecisionAbort) == 1 })
	time.Sleep(50 * time.Millisecond) // the other one was sent first: its answer would have come
	if n := p1.decisionsFor(other, protocol.DecisionAbort) + p1.decisionsFor(other, protocol.DecisionCommit); n != 0 {
		t.Fatalf("group 2 answered an inquiry about group 1's %v (%d decisions)", other, n)
	}
	if st := r.coord.Status(); st.Group != 2 || st.OtherGroup != 1 || st.Rejected < 2 {
		t.Fatalf("status: group %d, other_group %d, rejected %d; want 2, 1, at least 2", st.Group, st.OtherGroup, st.Rejected)
	}
}

func TestGroupOutOfRangeIsRefused(t *testing.T) {
	cfg := coordinator.Config{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Participants: map[string]string{"p1": "127.0.0.1:1"}, Group: cluster.MaxGroup + 1}
	if s, err := coordinator.Start(cfg); err == nil {
		s.Close()
		t.Fatal("started as group 4096")
	} else if !strings.Contains(err.Error(), "group 4096 is more than 4095") {
		t.Fatalf("err %v", err)
	}
}
