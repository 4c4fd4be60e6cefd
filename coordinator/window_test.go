package coordinator_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/participant/bank"
	"github.com/commitd/commitd/protocol"
)

// TestIDWindowSpansAFailover: a new leader remembers what ended or was
// aborted under the one before it (docs/ha.md, "The id window of a
// reign"), so an id made before the leader is lost runs at the new leader
// — the rule before refused it stale-id — while an id that committed and
// ended, or was told aborted, before the failover is refused as in use.
func TestIDWindowSpansAFailover(t *testing.T) {
	g := newGroup(t)
	l := g.leader(10 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, p := range g.parts {
		if err := p.WaitConnected(ctx); err != nil {
			t.Fatal(err)
		}
	}
	cl, err := client.Dial(g.addrs[l], client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	move := func(i uint32, amount int64) []client.Branch {
		return []client.Branch{
			{Participant: "p1", Work: bank.AppendWork(nil, i, -amount)},
			{Participant: "p2", Work: bank.AppendWork(nil, i, amount)},
		}
	}
	committed, aborted := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	if res, err := cl.Run(ctx, committed, move(1, 5)); err != nil || res.Outcome != client.Committed {
		t.Fatalf("first transaction: %v %s %v", res.Outcome, res.Detail, err)
	}
	// More than the balance: p1 votes no.
	if res, err := cl.Run(ctx, aborted, move(2, 5000)); err != nil || res.Outcome != client.Aborted {
		t.Fatalf("an overdraft: %v %s %v, want aborted", res.Outcome, res.Detail, err)
	}
	cl.Close()
	// Made now, sent after the leader is lost: as a Begin the Go client
	// could not deliver to the old leader and takes to the new one.
	fresh := uuid.Must(uuid.NewV7())
	// Every participant has acknowledged the commit, and the other
	// replicas have applied its end.
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := g.coords[l].Status()
		done := st.InDoubt == 0
		for id, c := range g.coords {
			if id != l && c.Status().RaftApplied < st.RaftApplied {
				done = false
			}
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the commit did not end and replicate within 10 s: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	g.crash(l)
	nl := g.leader(10 * time.Second)
	cl, err = client.Dial(g.addrs[nl], client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if res, err := cl.Run(ctx, fresh, move(3, 5)); err != nil || res.Outcome != client.Committed {
		t.Errorf("an id made before the failover, at the new leader: %v (cause %v) %s %v, want committed", res.Outcome, res.Cause, res.Detail, err)
	}
	for name, id := range map[string]uuid.UUID{"committed": committed, "aborted": aborted} {
		res, err := cl.Run(ctx, id, move(4, 5))
		if err != nil || res.Outcome != client.Rejected || res.Cause != protocol.CauseInvalid || res.Detail != "transaction id in use" {
			t.Errorf("the id of a transaction %s before the failover, again: %v (cause %v) %q %v, want rejected, in use", name, res.Outcome, res.Cause, res.Detail, err)
		}
	}
	g.check()
}
