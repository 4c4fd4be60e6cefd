package coordinator

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/internal/node/nodetest"
	"github.com/commitd/commitd/net/mux"
	"github.com/commitd/commitd/net/wire"
	"github.com/commitd/commitd/protocol"
	"github.com/google/uuid"
)

// The race a removal closes: a begin the front door admitted just before
// the participant's name was withdrawn reaches a shard that has already
// barred the participant. It must abort (as not sent) and the participant
// must never see its prepare — else the participant could vote yes, and a
// commit would wait on a participant about to be forgotten. The bar is
// planted here directly, without withdrawing the name, as the race leaves
// it.
func TestBarredParticipantGetsNoPrepare(t *testing.T) {
	var prepares [2]atomic.Int64
	fakes := make([]*nodetest.Peer, 2)
	for i, name := range []string{"p1", "p2"} {
		var p *nodetest.Peer
		p = nodetest.Listen(t, wire.Hello{Role: wire.RoleParticipant, Name: []byte(name)}, func(_ *mux.Conn, fr wire.Frame) error {
			if fr.Type == wire.TypeDecision {
				var d wire.Decision
				if err := d.Decode(fr); err != nil {
					return err
				}
				if d.Decision == protocol.DecisionCommit {
					_ = p.Send(&wire.Ack{Txn: d.Txn, From: []byte(name)})
				}
				return nil
			}
			if fr.Type != wire.TypePrepare {
				return nil
			}
			var m wire.Prepare
			if err := m.Decode(fr); err != nil {
				return err
			}
			prepares[i].Add(1)
			_ = p.Send(&wire.Vote{Txn: m.Txn, From: []byte(name), Vote: protocol.VoteYes})
			return nil
		})
		fakes[i] = p
	}
	s, err := Start(Config{
		Listen:       "127.0.0.1:0",
		DataDir:      t.TempDir(),
		Participants: map[string]string{"p1": fakes[0].Addr(), "p2": fakes[1].Addr()},
		Shards:       2,
		SegmentBytes: 1 << 20,
		Logger:       nodetest.Quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	for _, f := range fakes {
		f.Connect(t, s.Addr().String())
	}
	cl, err := client.Dial(s.Addr().String(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	run := func() client.Result {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := cl.Run(ctx, uuid.Must(uuid.NewV7()), []client.Branch{{Participant: "p1", Work: []byte("w")}, {Participant: "p2", Work: []byte("w")}})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	nodetest.Eventually(t, "committing through p1 and p2", func() bool { return run().Outcome == client.Committed })
	nodetest.Eventually(t, "nothing in flight", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		n, err := s.naming(ctx, "p2", false)
		return err == nil && n == 0
	})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if n, err := s.naming(ctx, "p2", true); err != nil || n != 0 {
		t.Fatalf("naming p2 while barring it: %d, %v", n, err)
	}
	before := prepares[1].Load()
	for range 5 {
		res := run()
		if res.Outcome != client.Aborted || res.Cause != protocol.CauseUnreachable || res.Participant != "p2" {
			t.Fatalf("a begin reaching a shard that barred p2: %+v, want aborted, unreachable p2", res)
		}
	}
	if got := prepares[1].Load(); got != before {
		t.Fatalf("p2 got %d prepares after it was barred", got-before)
	}
	// Undone, as a refused removal does: p2 takes part again.
	if err := s.eachShard(ctx, func(o *shardOutput, _ int) { delete(o.gone, "p2") }); err != nil {
		t.Fatal(err)
	}
	if res := run(); res.Outcome != client.Committed {
		t.Fatalf("after the bar is lifted: %+v", res)
	}
}
