package engine_test

import (
	"testing"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/protocol"
)

// preventRes is a durable resource with a compare-and-swap
// (engine.Preventer): it records what the machine asks of it.
type preventRes struct {
	pendingRes
	prevents []protocol.TxnID
}

func (r *preventRes) Prevent(txn protocol.TxnID) { r.prevents = append(r.prevents, txn) }

// vote returns the one vote in rd, failing the test if there is not
// exactly one message or any record.
func oneVote(t *testing.T, what string, rd engine.Ready) protocol.Vote {
	t.Helper()
	if len(rd.Records) != 0 || len(rd.Messages) != 1 || rd.Messages[0].Type != engine.MsgVote {
		t.Fatalf("%s: want one vote and no record, got %+v", what, rd)
	}
	return rd.Messages[0].Vote
}

// TestDurableResourcePrevents: a participant whose durable resource is a
// Preventer prevents through it (writing no record): a MsgResolve for an
// unknown transaction and a staged NO both ask the resource, the NO goes
// out only when the resource says prevented, and a late prepare is then
// refused without reaching the resource; a prevention the resource
// answers "prepared" becomes a held, prepared transaction and a YES. A
// durable resource that is no Preventer ignores MsgResolve, as before.
func TestDurableResourcePrevents(t *testing.T) {
	cfg := engine.ParticipantConfig{Name: "a", DurableResource: true}
	res := &preventRes{}
	p := engine.NewParticipant(cfg, res)

	// Resolve of an unknown transaction: the resource prevents it.
	p.Step(engine.Message{Type: engine.MsgResolve, Txn: tid(1), To: "a"})
	if len(res.prevents) != 1 || res.prevents[0] != tid(1) || p.HasReady() {
		t.Fatalf("resolve: prevents %v, ready %v", res.prevents, p.HasReady())
	}
	// A prepare while the prevention is under way is held back.
	p.Step(engine.Message{Type: engine.MsgPrepare, Txn: tid(1), To: "a", Work: []byte("x"), Staged: true})
	if p.HasReady() {
		t.Fatalf("a prepare while preventing answered early: %+v", p.Ready())
	}
	mustPanic(t, "prevented", func() {
		q := engine.NewParticipant(cfg, &preventRes{})
		q.Step(engine.Message{Type: engine.MsgResPrevented, Txn: tid(1), To: "a", Vote: protocol.VoteNo})
	})
	p.Step(engine.Message{Type: engine.MsgResPrevented, Txn: tid(1), To: "a", Vote: protocol.VoteNo})
	if v := oneVote(t, "prevented", p.Ready()); v != protocol.VoteNo {
		t.Fatalf("prevented: vote %v, want no", v)
	}
	// A late prepare: refused from memory, the resource not asked.
	p.Step(engine.Message{Type: engine.MsgPrepare, Txn: tid(1), To: "a", Work: []byte("x"), Staged: true})
	if v := oneVote(t, "late prepare", p.Ready()); v != protocol.VoteNo {
		t.Fatalf("late prepare: vote %v, want no", v)
	}
	if st := p.Stats(); st.Prevented != 1 || st.RefusedPrevented != 1 || st.Voting != 0 {
		t.Fatalf("stats %+v", st)
	}

	// A staged prepare the resource votes no: the NO is a prevention.
	p.Step(engine.Message{Type: engine.MsgPrepare, Txn: tid(2), To: "a", Work: []byte("x"), Staged: true})
	p.Step(engine.Message{Type: engine.MsgResPrepared, Txn: tid(2), To: "a", Vote: protocol.VoteNo})
	if p.HasReady() || len(res.prevents) != 2 || res.prevents[1] != tid(2) {
		t.Fatalf("staged no: ready %v, prevents %v", p.HasReady(), res.prevents)
	}
	p.Step(engine.Message{Type: engine.MsgResPrevented, Txn: tid(2), To: "a", Vote: protocol.VoteNo})
	if v := oneVote(t, "staged no", p.Ready()); v != protocol.VoteNo {
		t.Fatalf("staged no: vote %v", v)
	}
	// A classic NO asks nothing of the resource.
	p.Step(engine.Message{Type: engine.MsgPrepare, Txn: tid(3), To: "a", Work: []byte("x")})
	p.Step(engine.Message{Type: engine.MsgResPrepared, Txn: tid(3), To: "a", Vote: protocol.VoteNo})
	if v := oneVote(t, "classic no", p.Ready()); v != protocol.VoteNo || len(res.prevents) != 2 {
		t.Fatalf("classic no: vote %v, prevents %v", v, res.prevents)
	}

	// The compare-and-swap finds the transaction prepared: YES, held,
	// and a commit decision goes to the resource.
	p.Step(engine.Message{Type: engine.MsgResolve, Txn: tid(4), To: "a"})
	p.Step(engine.Message{Type: engine.MsgResPrevented, Txn: tid(4), To: "a", Vote: protocol.VoteYes})
	if v := oneVote(t, "found prepared", p.Ready()); v != protocol.VoteYes {
		t.Fatalf("found prepared: vote %v", v)
	}
	if st := p.Stats(); st.Prepared != 1 || st.PreventFoundPrepared != 1 || st.Prevented != 2 {
		t.Fatalf("found prepared: stats %+v", st)
	}
	p.Step(engine.Message{Type: engine.MsgDecision, Txn: tid(4), To: "a", Decision: protocol.DecisionCommit})
	if len(res.started) != 1 || res.started[0] != "commit" {
		t.Fatalf("commit after found prepared: started %v", res.started)
	}

	// No Preventer: a resolve is ignored, as it was for every durable
	// resource (its transactions are never staged).
	plain := &pendingRes{}
	q := engine.NewParticipant(cfg, plain)
	q.Step(engine.Message{Type: engine.MsgResolve, Txn: tid(1), To: "a"})
	if st := q.Stats(); q.HasReady() || st.IgnoredInvalid != 1 {
		t.Fatalf("resolve without a Preventer: ready %v, stats %+v", q.HasReady(), st)
	}
}
