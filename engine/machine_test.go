package engine_test

import (
	"testing"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/participant/bank"
)

func tid(n byte) engine.TxnID { return engine.TxnID{15: n} }

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
		if len(prd.Records) != 1 || prd.Records[0].Type != engine.RecPrepared || len(prd.Messages) != 0 {
			t.Fatalf("%s prepare: %+v", m.To, prd)
		}
		p.Durable(prd.FirstIndex)
		prd = p.Ready()
		if len(prd.Messages) != 1 || prd.Messages[0].Vote != engine.VoteYes {
			t.Fatalf("%s after durable: %+v", m.To, prd)
		}
		s.Step(prd.Messages[0])
	}
	rd = s.Ready()
	if len(rd.Records) != 1 || rd.Records[0].Type != engine.RecCommit || len(rd.Messages) != 0 || len(rd.Replies) != 0 {
		t.Fatalf("votes in: %+v", rd)
	}
	s.Durable(rd.FirstIndex)
	rd = s.Ready()
	if len(rd.Replies) != 1 || rd.Replies[0].Outcome != engine.OutcomeCommitted || rd.Replies[0].Tag != 7 || len(rd.Messages) != 2 {
		t.Fatalf("commit durable: %+v", rd)
	}
	decisions := append([]engine.Message(nil), rd.Messages...)
	for _, m := range decisions {
		p := ps[m.To]
		p.Step(m)
		prd := p.Ready()
		if len(prd.Messages) != 0 || len(prd.Applied) != 0 || banks[m.To].Locked() != 1 {
			t.Fatalf("%s decision before durable: %+v", m.To, prd)
		}
		p.Durable(prd.FirstIndex)
		prd = p.Ready()
		if len(prd.Applied) != 1 || len(prd.Messages) != 1 || prd.Messages[0].Type != engine.MsgAck || banks[m.To].Locked() != 0 {
			t.Fatalf("%s decision durable: %+v", m.To, prd)
		}
		s.Step(prd.Messages[0])
	}
	rd = s.Ready()
	if len(rd.Records) != 1 || rd.Records[0].Type != engine.RecEnd {
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
	if st.Committed != 1 || st.InFlight != 0 || st.Undelivered != 0 || st.Ignored() != 0 {
		t.Fatalf("stats %+v", st)
	}
}
