package coordinator_test

import (
	"context"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
)

// TestParticipantsAnswerTheReplicaThatAsked: participants given every
// replica send their votes and acks back to the replica that sent the
// prepare or decision, so the followers drop none (before, every vote and
// ack went to every replica and each follower dropped all of them); after
// the leader is lost, the participants' transactions in doubt settle at
// the new leader.
func TestParticipantsAnswerTheReplicaThatAsked(t *testing.T) {
	g := newGroup(t)
	l := g.leader(5 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, p := range g.parts {
		if err := p.WaitConnected(ctx); err != nil {
			t.Fatal(err)
		}
	}
	const n = 30
	for i := range n {
		if res := g.transfer(l, i); res.Outcome != client.Committed {
			t.Fatalf("txn %d at the leader: %v", i, res)
		}
	}
	// n transactions are 4n votes and acks. An inquiry goes to every
	// replica only when no prepare or decision came for InquireAfter
	// (200 ms), which a loaded machine may see once or twice.
	for id, c := range g.coords {
		if id == l {
			continue
		}
		if st := c.Status(); st.NotLeading > 4 {
			t.Errorf("follower %d dropped %d participants' messages for %d transactions", id, st.NotLeading, n)
		}
	}
	if st := g.coords[l].Status(); st.NotLeading != 0 {
		t.Errorf("the leader dropped %d participants' messages as not leading", st.NotLeading)
	}

	// Lose the leader with transactions in flight: whatever the
	// participants hold in doubt settles (check waits for it).
	done := make(chan struct{})
	go func() {
		defer close(done)
		all := g.addrs[1] + "," + g.addrs[2] + "," + g.addrs[3]
		cl, err := client.Dial(all, client.Options{})
		if err != nil {
			return
		}
		defer cl.Close()
		for i := n; i < n+60; i++ {
			g.run(cl, i)
		}
	}()
	time.Sleep(50 * time.Millisecond)
	lost := time.Now()
	g.crash(l)
	<-done
	nl := g.leader(5 * time.Second)
	if res := g.transfer(nl, n+60); res.Outcome != client.Committed {
		t.Fatalf("after the failover, replica %d: %v", nl, res)
	}
	for _, p := range g.parts {
		for p.AccountsSummary().Prepared > 0 {
			if time.Since(lost) > 10*time.Second {
				t.Fatalf("participant still holds %d in doubt 10 s after the leader was lost", p.AccountsSummary().Prepared)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	t.Logf("in doubt settled %v after the leader was lost", time.Since(lost))
	g.check()
}
