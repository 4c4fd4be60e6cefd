package engine_test

import (
	"errors"
	"testing"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/participant/bank"
	"github.com/commitd/commitd/protocol"
)

func tid(n byte) protocol.TxnID { return protocol.TxnID{15: n} }

// TestTwoBranchCommit drives one transfer by hand and checks the order in
// which outputs are released.
func TestTwoBranchCommit(t *testing.T) {
	s := engine.NewShard(engine.ShardConfig{})
	banks := map[string]*bank.Bank{"a": bank.New(2, 100), "b": bank.New(2, 100)}
	ps := map[string]*engine.Participant{}
	for n, b := range banks {
		ps[n] = engine.NewParticipant(engine.ParticipantConfig{Name: n}, b)
	}
	s.Step(engine.Message{Type: engine.MsgBegin, Txn: tid(1), Tag: 7, Branches: []engine.Branch{
		{Participant: "a", Work: bank.AppendWork(nil, 0, -30)},
		{Participant: "b", Work: bank.AppendWork(nil, 1, 30)},
	}})
	rd := s.Ready()
	if len(rd.Records) != 0 || len(rd.Messages) != 2 || len(rd.Replies) != 0 {
		t.Fatalf("begin: %+v", rd)
	}
	prepares := append([]engine.Message(nil), rd.Messages...)
	for _, m := range prepares {
		p := ps[m.To]
		p.Step(m)
		prd := p.Ready()
		if len(prd.Records) != 1 || prd.Records[0].Type != engine.RecPrepared || len(prd.Messages) != 0 || prd.Lazy {
			t.Fatalf("%s prepare: %+v", m.To, prd)
		}
		p.Durable(prd.FirstIndex)
		prd = p.Ready()
		if len(prd.Messages) != 1 || prd.Messages[0].Vote != protocol.VoteYes {
			t.Fatalf("%s after durable: %+v", m.To, prd)
		}
		s.Step(prd.Messages[0])
	}
	rd = s.Ready()
	if len(rd.Records) != 1 || rd.Records[0].Type != engine.RecCommit || len(rd.Messages) != 0 || len(rd.Replies) != 0 || rd.Lazy {
		t.Fatalf("votes in: %+v", rd)
	}
	s.Durable(rd.FirstIndex)
	rd = s.Ready()
	if len(rd.Replies) != 1 || rd.Replies[0].Outcome != protocol.OutcomeCommitted || rd.Replies[0].Tag != 7 || len(rd.Messages) != 2 {
		t.Fatalf("commit durable: %+v", rd)
	}
	decisions := append([]engine.Message(nil), rd.Messages...)
	for _, m := range decisions {
		p := ps[m.To]
		p.Step(m)
		prd := p.Ready()
		// Applied (locks released) as soon as the decision is logged; the
		// record is lazy and the ack waits for it to be durable.
		if len(prd.Messages) != 0 || len(prd.Applied) != 1 || banks[m.To].Locked() != 0 || !prd.Lazy {
			t.Fatalf("%s decision before durable: %+v", m.To, prd)
		}
		p.Durable(prd.FirstIndex)
		prd = p.Ready()
		if len(prd.Applied) != 0 || len(prd.Messages) != 1 || prd.Messages[0].Type != engine.MsgAck {
			t.Fatalf("%s decision durable: %+v", m.To, prd)
		}
		s.Step(prd.Messages[0])
	}
	rd = s.Ready()
	if len(rd.Records) != 1 || rd.Records[0].Type != engine.RecEnd || !rd.Lazy {
		t.Fatalf("acks in: %+v", rd)
	}
	s.Durable(rd.FirstIndex)
	if rd = s.Ready(); rd.LowWater != 3 {
		t.Fatalf("low water %d after end durable, want 3", rd.LowWater)
	}
	if banks["a"].Balance(0) != 70 || banks["b"].Balance(1) != 130 || banks["a"].Total()+banks["b"].Total() != 400 {
		t.Fatal("balances wrong")
	}
	st := s.Stats()
	if st.Committed != 1 || st.InFlight != 0 || st.Undelivered != 0 || st.Ignored != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestTwoCheckpointsInOneReady: a regression found by the simulation (seed
// 5835). Two checkpoints appended before the caller drains Ready must not
// share a buffer: each record's Data stays valid until Ready is drained.
func TestTwoCheckpointsInOneReady(t *testing.T) {
	b := bank.New(2, 100)
	p := engine.NewParticipant(engine.ParticipantConfig{Name: "a", CheckpointEvery: 1}, b)
	for i := range byte(2) {
		p.Step(engine.Message{Type: engine.MsgPrepare, Txn: tid(i + 1), To: "a", Work: bank.AppendWork(nil, uint32(i), 5)})
	}
	p.Durable(p.Ready().FirstIndex + 1)
	p.Ready()
	for i := range byte(2) {
		p.Step(engine.Message{Type: engine.MsgDecision, Txn: tid(i + 1), To: "a", Decision: protocol.DecisionCommit})
	}
	rd := p.Ready()
	p.Durable(rd.FirstIndex + 1)
	rd = p.Ready()
	var ckpts []engine.Record
	for _, r := range rd.Records {
		if r.Type == engine.RecCheckpoint {
			ckpts = append(ckpts, r)
		}
	}
	if len(ckpts) != 2 {
		t.Fatalf("%d checkpoints, want 2: %+v", len(ckpts), rd.Records)
	}
	for i, r := range ckpts {
		enc, err := r.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var back engine.Record
		if err := back.UnmarshalBinary(enc); err != nil {
			t.Fatal(err)
		}
		nb := bank.New(0, 0)
		q := engine.NewParticipant(engine.ParticipantConfig{Name: "a"}, nb)
		if err := q.Restore(back); err != nil {
			t.Fatalf("checkpoint %d: %v", i, err)
		}
		// The first was taken after t1's commit was applied, while t2's
		// committed record was appended but not applied: it lists t2 as
		// committed, so both restore to the same state.
		if nb.Total() != 210 || q.Stats().Prepared != 0 || nb.Locked() != 0 {
			t.Fatalf("checkpoint %d restores total %d, %d prepared", i, nb.Total(), q.Stats().Prepared)
		}
	}
}

// TestShardRestoreRefusesBadRecords: a record no coordinator writes, or
// that contradicts the ones before it, is an error (as at a participant),
// so that the server refuses to start rather than crash.
func TestShardRestoreRefusesBadRecords(t *testing.T) {
	for _, c := range []struct {
		name string
		recs []engine.Record
	}{
		{"participant record", []engine.Record{{Type: engine.RecPrepared, Txn: tid(1)}}},
		{"no participants", []engine.Record{{Type: engine.RecCommit, Txn: tid(1)}}},
		{"a participant twice", []engine.Record{{Type: engine.RecCommit, Txn: tid(1), Participants: []string{"a", "a"}}}},
		{"second commit", []engine.Record{
			{Type: engine.RecCommit, Txn: tid(1), Participants: []string{"a"}},
			{Type: engine.RecCommit, Txn: tid(1), Participants: []string{"a"}},
		}},
	} {
		s := engine.NewShard(engine.ShardConfig{})
		var err error
		for _, r := range c.recs {
			if err = s.Restore(r); err != nil {
				break
			}
		}
		if !errors.Is(err, engine.ErrBadRecord) {
			t.Errorf("%s: Restore returned %v, want ErrBadRecord", c.name, err)
		}
	}
}
