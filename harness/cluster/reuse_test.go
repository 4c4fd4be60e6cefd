package cluster_test

import (
	"context"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/harness/cluster"
	"github.com/commitd/commitd/participant/bank"
	"github.com/commitd/commitd/protocol"
	"github.com/google/uuid"
)

// TestReusedIDAfterTheCoordinatorForgets is issue 13's defect 2 end to
// end: a transaction id used for {p1: -100, p2: +100} is used again, after
// the coordinator has forgotten the first use, for {p1: -7, p3: +7}. The
// coordinator used to start it; p1, which had committed the id, answered
// the prepare as a duplicate (YES) and applied nothing, p3 applied +7, and
// the client was told committed: 7 created. Now the coordinator refuses
// the id as stale before any prepare is sent (and p1 would vote no).
func TestReusedIDAfterTheCoordinatorForgets(t *testing.T) {
	const remember = 300 * time.Millisecond
	c, cl := startCluster(t, cluster.Options{Participants: 3, Remember: remember})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const acct = 7
	id := uuid.Must(uuid.NewV7())
	res, err := cl.Run(ctx, id, []client.Branch{
		{Participant: "p1", Work: bank.AppendWork(nil, acct, -100)},
		{Participant: "p2", Work: bank.AppendWork(nil, acct, 100)},
	})
	if err != nil || res.Outcome != client.Committed {
		t.Fatalf("first use of the id: %v %v", res, err)
	}
	if err := c.WaitSettled(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	// Past twice the coordinator's memory: it has forgotten the id. The
	// participants remember for 30 s.
	time.Sleep(3 * remember)
	res, err = cl.Run(ctx, id, []client.Branch{
		{Participant: "p1", Work: bank.AppendWork(nil, acct, -7)},
		{Participant: "p3", Work: bank.AppendWork(nil, acct, 7)},
	})
	if err != nil {
		t.Fatalf("reuse: %v", err)
	}
	if res.Outcome == client.Committed {
		t.Errorf("the reused id was committed: %v", res)
	}
	if res.Outcome != client.Rejected || res.Cause != protocol.CauseStaleID {
		t.Errorf("the reused id: %v (cause %v), want rejected as stale-id", res, res.Cause)
	}
	if err := c.WaitSettled(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if got, want := c.Total(), c.InitialTotal(); got != want {
		t.Errorf("the banks hold %d, want %d: money was created", got, want)
	}
	initial := int64(1000) * 1000
	for i, want := range []int64{initial - 100, initial + 100, initial} {
		if got := c.Participants[i].AccountsSummary().Total; got != want {
			t.Errorf("%s holds %d, want %d", c.Names[i], got, want)
		}
	}
	mustCommit(t, cl)
}
