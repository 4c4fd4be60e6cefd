package engine_test

import (
	"encoding/binary"
	"testing"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/protocol"
)

func begin(id protocol.TxnID) engine.Message {
	return engine.Message{Type: engine.MsgBegin, Txn: id, Tag: uint64(id[15]),
		Branches: []engine.Branch{{Participant: "a"}, {Participant: "b"}}}
}

// oneReply steps m and returns the shard's only reply.
func oneReply(t *testing.T, s *engine.Shard, m engine.Message) engine.Reply {
	t.Helper()
	s.Step(m)
	rd := s.Ready()
	if len(rd.Replies) != 1 {
		t.Fatalf("%v %v: %d replies, want 1", m.Type, m.Txn, len(rd.Replies))
	}
	return rd.Replies[0]
}

// A shard holds at most MaxTxns transactions, in flight and remembered:
// a begin beyond that is rejected as overloaded (and nothing starts), a
// duplicate is still told its id is in use, and room comes back as the
// remembered ones are forgotten.
func TestShardRejectsBeginsBeyondMaxTxns(t *testing.T) {
	s := engine.NewShard(engine.ShardConfig{MaxTxns: 3, RememberTicks: 10, PrepareTimeoutTicks: 1000})
	for i := byte(1); i <= 3; i++ {
		s.Step(begin(tid(i)))
		if rd := s.Ready(); len(rd.Replies) != 0 || len(rd.Messages) != 2 {
			t.Fatalf("begin %d: %+v", i, rd)
		}
	}
	r := oneReply(t, s, begin(tid(4)))
	if r.Outcome != protocol.OutcomeRejected || r.Cause != protocol.CauseOverloaded || r.Tag != 4 || r.Detail == "" {
		t.Fatalf("begin beyond MaxTxns: %+v, want rejected, overloaded", r)
	}
	r = oneReply(t, s, begin(tid(2)))
	if r.Cause != protocol.CauseInvalid || r.Detail != "transaction id in use" {
		t.Fatalf("duplicate begin while full: %+v, want id in use", r)
	}
	// A finished transaction still counts while it is remembered.
	r = oneReply(t, s, engine.Message{Type: engine.MsgVote, Txn: tid(1), From: "a", Vote: protocol.VoteNo})
	if r.Outcome != protocol.OutcomeAborted {
		t.Fatalf("vote no: %+v", r)
	}
	if r = oneReply(t, s, begin(tid(5))); r.Cause != protocol.CauseOverloaded {
		t.Fatalf("begin with 2 in flight and 1 remembered: %+v, want overloaded", r)
	}
	for range 21 { // past twice RememberTicks: tid(1) is forgotten
		s.Tick()
	}
	s.Step(begin(tid(5)))
	if rd := s.Ready(); len(rd.Replies) != 0 || len(rd.Messages) != 2 {
		t.Fatalf("begin once the aborted one was forgotten: %+v", rd)
	}
	if st := s.Stats(); st.Overloaded != 2 || st.Rejected != 3 || st.InFlight != 3 || st.Remembered != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// Flooded with transactions that abort at once, a shard never holds more
// than MaxTxns of them, however fast they come: the flood is refused
// instead of remembered.
func TestShardFloodOfAbortsStaysBounded(t *testing.T) {
	const maxTxns, remember = 1000, 10
	s := engine.NewShard(engine.ShardConfig{MaxTxns: maxTxns, RememberTicks: remember})
	var accepted, overloaded, most int
	for i := range 100_000 {
		var id protocol.TxnID
		binary.BigEndian.PutUint64(id[8:], uint64(i+1))
		s.Step(begin(id))
		s.Step(engine.Message{Type: engine.MsgVote, Txn: id, From: "a", Vote: protocol.VoteNo})
		for _, r := range s.Ready().Replies {
			switch {
			case r.Outcome == protocol.OutcomeAborted:
				accepted++
			case r.Cause == protocol.CauseOverloaded:
				overloaded++
			default:
				t.Fatalf("reply %+v", r)
			}
		}
		if i%100 == 99 { // 100 begins a tick: 10 times what MaxTxns allows
			s.Tick()
		}
		st := s.Stats()
		most = max(most, st.InFlight+st.Remembered)
	}
	t.Logf("accepted %d, overloaded %d, most held %d", accepted, overloaded, most)
	if most > maxTxns {
		t.Fatalf("the shard held %d transactions, more than MaxTxns %d", most, maxTxns)
	}
	// MaxTxns per RememberTicks to twice that: 1000 ticks of the flood
	// have room for 50,000 to 100,000.
	if accepted < 50_000 || overloaded == 0 {
		t.Fatalf("accepted %d, overloaded %d: want at least 50,000 accepted and some refused", accepted, overloaded)
	}
}
