package coordinator_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/coordinator"
	"github.com/commitd/commitd/internal/node/nodetest"
	"github.com/commitd/commitd/net/mux"
	"github.com/commitd/commitd/net/wire"
	"github.com/commitd/commitd/protocol"
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

// TestRepliesOnDialedConnections: a replica takes a participant's vote on
// the connection it dialed to that participant — the vote reaches the
// shard, which answers abort for a transaction it does not know — and
// refuses there what a participant may not send: a vote in another's name
// closes the connection, a request gets an error reply.
func TestRepliesOnDialedConnections(t *testing.T) {
	conns := make(chan *mux.Conn, 16)
	decisions := make(chan wire.Decision, 16)
	p1 := nodetest.Listen(t, wire.Hello{Role: wire.RoleParticipant, Name: []byte("p1")}, func(c *mux.Conn, f wire.Frame) error {
		switch f.Type {
		case wire.TypeHello:
			conns <- c
		case wire.TypeDecision:
			var d wire.Decision
			if err := d.Decode(f); err != nil {
				return err
			}
			decisions <- d
		}
		return nil
	})
	addr := nodetest.FreeAddr(t)
	c, err := coordinator.Start(coordinator.Config{
		ID: 1, Peers: map[uint64]string{1: addr}, Listen: addr, DataDir: t.TempDir(),
		Participants: map[string]string{"p1": p1.Addr()}, SegmentBytes: 1 << 20,
		RaftTick: 10 * time.Millisecond, Logger: nodetest.Quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	nodetest.Eventually(t, "the replica leads", func() bool { return c.Status().Shards > 0 })
	next := func() *mux.Conn {
		select {
		case conn := <-conns:
			return conn
		case <-time.After(10 * time.Second):
			t.Fatal("the replica did not dial p1")
			return nil
		}
	}
	conn := next()

	txn := uuid.Must(uuid.NewV7())
	if err := conn.Send(&wire.Vote{Txn: txn, From: []byte("p1"), Vote: protocol.VoteYes}); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-decisions:
		if d.Txn != txn || d.Decision != protocol.DecisionAbort {
			t.Errorf("answer to a YES for an unknown transaction: %v %v, want abort for %v", d.Txn, d.Decision, txn)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a vote on the dialed connection got no answer")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = conn.Call(ctx, &wire.AdminRequest{Kind: wire.AdminStatus}, nil)
	var re *mux.RemoteError
	if !errors.As(err, &re) || re.Code != wire.CodeInvalid {
		t.Errorf("a request on the dialed connection: %v, want an invalid-request error", err)
	}

	if err := conn.Send(&wire.Vote{Txn: txn, From: []byte("p2"), Vote: protocol.VoteYes}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-conn.Done():
		if err := conn.Err(); err == nil || !strings.Contains(err.Error(), `participant "p1" sent a vote from "p2"`) {
			t.Errorf("closed with %v, want the refusal of a vote in another's name", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a vote in another participant's name did not close the connection")
	}
}
