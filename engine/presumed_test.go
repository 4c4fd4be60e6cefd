package engine_test

import (
	"testing"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/protocol"
)

// TestShardRemembersAbortsItDidNotRecord: with RememberPresumedAborts a
// shard that presumes an unknown transaction aborted refuses a begin that
// reuses its id afterwards (without it, as a lone coordinator, the begin
// runs: its id window refuses such ids instead); RestoreAborted makes a
// new shard remember an abort an earlier one made: a reuse is refused, an
// inquiry answered abort.
func TestShardRemembersAbortsItDidNotRecord(t *testing.T) {
	id := protocol.TxnID{1, 2, 3}
	begin := engine.Message{Type: engine.MsgBegin, Txn: id, Tag: 1,
		Branches: []engine.Branch{{Participant: "a", Work: []byte{1}}}}
	outcome := func(s *engine.Shard) (protocol.Outcome, string) {
		s.Step(begin)
		for s.HasReady() {
			rd := s.Ready()
			for _, r := range rd.Replies {
				return r.Outcome, r.Detail
			}
			if len(rd.Messages) > 0 {
				return 0, "started" // the prepare left: the begin runs
			}
		}
		return 0, "nothing"
	}
	decisions := func(s *engine.Shard) []protocol.Decision {
		var ds []protocol.Decision
		for s.HasReady() {
			for _, m := range s.Ready().Messages {
				if m.Type == engine.MsgDecision {
					ds = append(ds, m.Decision)
				}
			}
		}
		return ds
	}
	for _, remember := range []bool{false, true} {
		s := engine.NewShard(engine.ShardConfig{RememberPresumedAborts: remember})
		s.Step(engine.Message{Type: engine.MsgInquire, Txn: id, From: "a"})
		if ds := decisions(s); len(ds) != 1 || ds[0] != protocol.DecisionAbort {
			t.Fatalf("remember %v: an inquiry about an unknown id got %v, want abort", remember, ds)
		}
		o, detail := outcome(s)
		switch {
		case remember && (o != protocol.OutcomeRejected || detail != "transaction id in use"):
			t.Errorf("a begin reusing a presumed-aborted id: %v %q, want rejected, in use", o, detail)
		case !remember && detail != "started":
			t.Errorf("without RememberPresumedAborts a begin of the id: %v %q, want it started", o, detail)
		}
	}

	s := engine.NewShard(engine.ShardConfig{})
	s.RestoreAborted(id)
	if o, detail := outcome(s); o != protocol.OutcomeRejected || detail != "transaction id in use" {
		t.Errorf("a begin reusing a restored abort: %v %q, want rejected, in use", o, detail)
	}
	s.Step(engine.Message{Type: engine.MsgInquire, Txn: id, From: "a"})
	if ds := decisions(s); len(ds) != 1 || ds[0] != protocol.DecisionAbort {
		t.Errorf("an inquiry about a restored abort got %v, want abort", ds)
	}
}
