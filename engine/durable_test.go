package engine_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/protocol"
)

// pendingRes answers every prepare VotePending and records what the
// machine starts.
type pendingRes struct {
	started []string
}

func (r *pendingRes) Prepare(protocol.TxnID, []byte) protocol.Vote { return protocol.VotePending }
func (r *pendingRes) Commit(protocol.TxnID)                        { r.started = append(r.started, "commit") }
func (r *pendingRes) Abort(protocol.TxnID)                         { r.started = append(r.started, "abort") }
func (r *pendingRes) Restore(protocol.TxnID, []byte)               {}
func (r *pendingRes) Snapshot(dst []byte) []byte                   { return dst }
func (r *pendingRes) Load([]byte) error                            { return nil }

func mustPanic(t *testing.T, want string, f func()) {
	t.Helper()
	defer func() {
		r := recover()
		if r == nil || !strings.Contains(r.(string), want) {
			t.Fatalf("panic %v, want one containing %q", r, want)
		}
	}()
	f()
}

// TestDurableResourceKeepsNoRecords: a durable-resource participant
// refuses a log written by another kind of participant, writes no record
// through a whole commit, and panics on resource results it did not ask
// for (a programmer error in the resource or the pump).
func TestDurableResourceKeepsNoRecords(t *testing.T) {
	cfg := engine.ParticipantConfig{Name: "a", DurableResource: true, CheckpointEvery: 1}
	p := engine.NewParticipant(cfg, &pendingRes{})
	if err := p.Restore(engine.Record{Type: engine.RecPrepared, Txn: tid(1), Work: []byte("x")}); !errors.Is(err, engine.ErrBadRecord) {
		t.Fatalf("Restore of a RecPrepared: %v, want ErrBadRecord", err)
	}

	res := &pendingRes{}
	p = engine.NewParticipant(cfg, res)
	mustPanic(t, "which is in state unknown", func() {
		p.Step(engine.Message{Type: engine.MsgResPrepared, Txn: tid(1), To: "a", Vote: protocol.VoteYes})
	})
	p = engine.NewParticipant(cfg, res)
	p.Step(engine.Message{Type: engine.MsgPrepare, Txn: tid(1), To: "a", Work: []byte("x")})
	if st := p.Stats(); st.Voting != 1 || p.HasReady() {
		t.Fatalf("after a pending prepare: %+v, ready %v", st, p.HasReady())
	}
	mustPanic(t, "which is in state voting", func() {
		p.Step(engine.Message{Type: engine.MsgResFinished, Txn: tid(1), To: "a", Decision: protocol.DecisionCommit})
	})
	p.Step(engine.Message{Type: engine.MsgResPrepared, Txn: tid(1), To: "a", Vote: protocol.VoteYes})
	rd := p.Ready()
	if len(rd.Records) != 0 || len(rd.Messages) != 1 || rd.Messages[0].Vote != protocol.VoteYes {
		t.Fatalf("after the resource's yes: %+v", rd)
	}
	p.Step(engine.Message{Type: engine.MsgDecision, Txn: tid(1), To: "a", Decision: protocol.DecisionCommit})
	if rd := p.Ready(); len(rd.Messages) != 0 || len(rd.Records) != 0 || len(res.started) != 1 {
		t.Fatalf("the ack must wait for the resource: %+v, started %v", rd, res.started)
	}
	p.Step(engine.Message{Type: engine.MsgResFinished, Txn: tid(1), To: "a", Decision: protocol.DecisionCommit})
	rd = p.Ready()
	if len(rd.Records) != 0 || len(rd.Messages) != 1 || rd.Messages[0].Type != engine.MsgAck ||
		len(rd.Applied) != 1 || rd.Applied[0].Decision != protocol.DecisionCommit {
		t.Fatalf("after the resource finished: %+v", rd)
	}
	if st := p.Stats(); st.Checkpoints != 0 || st.Committed != 1 || st.Prepared != 0 {
		t.Fatalf("stats %+v", st)
	}

	// A scan result means nothing to a participant whose resource keeps
	// no prepared state of its own.
	q := engine.NewParticipant(engine.ParticipantConfig{Name: "a"}, &pendingRes{})
	q.Step(engine.Message{Type: engine.MsgResInDoubt, Txn: tid(2), To: "a"})
	if st := q.Stats(); st.IgnoredInvalid != 1 || st.Prepared != 0 {
		t.Fatalf("in-doubt without a durable resource: %+v", st)
	}
}
