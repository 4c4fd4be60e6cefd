package engine_test

import (
	"bytes"
	"testing"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/participant/bank"
	"github.com/commitd/commitd/protocol"
)

// The pump steps a whole batch of inputs before it drains Ready. A
// transaction that finishes within that batch must not have its memory
// reused by the next one before Ready is drained: the records and messages
// Ready hands out point into it. (Found by harness/cluster's restart test:
// a participant restored a RecPrepared whose work had been overwritten.)

func TestParticipantReuseWaitsForReady(t *testing.T) {
	p := engine.NewParticipant(engine.ParticipantConfig{Name: "a"}, bank.New(10, 100))
	w1, w2 := bank.AppendWork(nil, 1, -5), bank.AppendWork(nil, 2, 7)
	t1, t2 := protocol.TxnID{1}, protocol.TxnID{2}
	// One batch: T1 prepares (RecPrepared carries w1), is aborted, and T2
	// prepares with other work.
	p.Step(engine.Message{Type: engine.MsgPrepare, Txn: t1, To: "a", Work: w1})
	p.Step(engine.Message{Type: engine.MsgDecision, Txn: t1, To: "a", Decision: protocol.DecisionAbort})
	p.Step(engine.Message{Type: engine.MsgPrepare, Txn: t2, To: "a", Work: w2})
	rd := p.Ready()
	found := 0
	for _, r := range rd.Records {
		if r.Type != engine.RecPrepared {
			continue
		}
		want := w1
		if r.Txn == t2 {
			want = w2
		}
		if !bytes.Equal(r.Work, want) {
			t.Fatalf("RecPrepared for %v carries work %x, want %x", r.Txn, r.Work, want)
		}
		found++
	}
	if found != 2 {
		t.Fatalf("%d RecPrepared records, want 2: %+v", found, rd.Records)
	}
}

func TestShardReuseWaitsForReady(t *testing.T) {
	s := engine.NewShard(engine.ShardConfig{})
	w1, w2 := []byte("work of t1"), []byte("t2's")
	t1, t2 := protocol.TxnID{1}, protocol.TxnID{2}
	// One batch: T1 begins (its prepares carry w1), a no vote for it
	// arrives (a duplicate or forged one, in the same batch), and T2
	// begins with other work.
	s.Step(engine.Message{Type: engine.MsgBegin, Txn: t1, Branches: []engine.Branch{
		{Participant: "a", Work: w1}, {Participant: "b", Work: w1},
	}})
	s.Step(engine.Message{Type: engine.MsgVote, Txn: t1, From: "b", Vote: protocol.VoteNo})
	s.Step(engine.Message{Type: engine.MsgBegin, Txn: t2, Branches: []engine.Branch{
		{Participant: "a", Work: w2}, {Participant: "b", Work: w2},
	}})
	rd := s.Ready()
	prepares := 0
	for _, m := range rd.Messages {
		if m.Type != engine.MsgPrepare {
			continue
		}
		want := w1
		if m.Txn == t2 {
			want = w2
		}
		if !bytes.Equal(m.Work, want) {
			t.Fatalf("prepare of %v to %s carries work %q, want %q", m.Txn, m.To, m.Work, want)
		}
		prepares++
	}
	if prepares != 4 {
		t.Fatalf("%d prepares, want 4", prepares)
	}
}
