package engine_test

import (
	"testing"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/participant/bank"
	"github.com/commitd/commitd/protocol"
)

// An operator's view of a shard: a transaction voting, then delivering
// with one participant's ack missing; RedeliverNow sends the decision to
// that participant only, and a finished transaction is no longer in
// flight.
func TestShardAdminViews(t *testing.T) {
	s := engine.NewShard(engine.ShardConfig{TickMicros: 1000})
	s.Step(engine.Message{Type: engine.MsgBegin, Txn: tid(1), Branches: []engine.Branch{{Participant: "a"}, {Participant: "b"}}})
	s.Ready()
	s.Tick()
	s.Step(engine.Message{Type: engine.MsgVote, Txn: tid(1), From: "a", Vote: protocol.VoteYes})
	v, ok := s.Lookup(tid(1))
	if !ok || v.State != "voting" || v.AgeMs != 1 || len(v.Branches) != 2 ||
		v.Branches[0] != (engine.BranchView{Participant: "a", Vote: protocol.VoteYes}) || v.Branches[1].Vote != 0 {
		t.Fatalf("voting: %+v, %v", v, ok)
	}
	if n := s.RedeliverNow(nil, ""); n != 0 {
		t.Fatalf("RedeliverNow while voting sent %d decisions", n)
	}
	s.Step(engine.Message{Type: engine.MsgVote, Txn: tid(1), From: "b", Vote: protocol.VoteYes})
	rd := s.Ready()
	s.Durable(rd.FirstIndex)
	rd = s.Ready()
	if len(rd.Replies) != 1 || len(rd.Replies[0].Participants) != 2 {
		t.Fatalf("the committed reply names the yes voters: %+v", rd.Replies)
	}
	s.Step(engine.Message{Type: engine.MsgAck, Txn: tid(1), From: "a"})
	s.Ready()
	s.Tick()
	views, total := s.Undelivered(nil, 0)
	if total != 1 || len(views) != 1 || views[0].State != "delivering" || views[0].DecidedAgeMs != 1 ||
		!views[0].Branches[0].Acked || views[0].Branches[1].Acked {
		t.Fatalf("undelivered: %d %+v", total, views)
	}
	if n := s.RedeliverNow(nil, "a"); n != 0 {
		t.Fatalf("RedeliverNow to a participant that acked sent %d", n)
	}
	other := tid(9)
	if n := s.RedeliverNow(&other, ""); n != 0 {
		t.Fatalf("RedeliverNow of an unknown id sent %d", n)
	}
	id := tid(1)
	if n := s.RedeliverNow(&id, ""); n != 1 {
		t.Fatalf("RedeliverNow(id) sent %d, want 1", n)
	}
	rd = s.Ready()
	if len(rd.Messages) != 1 || rd.Messages[0].To != "b" || rd.Messages[0].Decision != protocol.DecisionCommit {
		t.Fatalf("redelivered: %+v", rd.Messages)
	}
	s.Step(engine.Message{Type: engine.MsgAck, Txn: tid(1), From: "b"})
	rd = s.Ready()
	s.Durable(rd.FirstIndex)
	s.Ready()
	if _, ok := s.Lookup(tid(1)); ok {
		t.Fatal("a finished transaction is still in flight")
	}
	if _, total := s.Undelivered(nil, 0); total != 0 {
		t.Fatalf("%d undelivered after every ack", total)
	}
}

// A participant's in-doubt view: a prepared transaction with its age;
// InquireNow sends an inquiry for it, and none once it is decided.
func TestParticipantAdminViews(t *testing.T) {
	p := engine.NewParticipant(engine.ParticipantConfig{Name: "a"}, bank.New(2, 100))
	p.Step(engine.Message{Type: engine.MsgPrepare, Txn: tid(1), To: "a", Work: bank.AppendWork(nil, 0, -10)})
	rd := p.Ready()
	p.Durable(rd.FirstIndex)
	p.Ready()
	p.Tick()
	p.Tick()
	views, total := p.InDoubt(nil, 0)
	if total != 1 || len(views) != 1 || views[0].State != "prepared" || views[0].AgeTicks != 2 || p.OldestPreparedTicks() != 2 {
		t.Fatalf("in doubt: %d %+v, oldest %d", total, views, p.OldestPreparedTicks())
	}
	other := tid(2)
	if n := p.InquireNow(&other); n != 0 {
		t.Fatalf("InquireNow of an unknown id sent %d", n)
	}
	if n := p.InquireNow(nil); n != 1 {
		t.Fatalf("InquireNow sent %d, want 1", n)
	}
	rd = p.Ready()
	if len(rd.Messages) != 1 || rd.Messages[0].Type != engine.MsgInquire || rd.Messages[0].Txn != tid(1) {
		t.Fatalf("inquiry: %+v", rd.Messages)
	}
	p.Step(engine.Message{Type: engine.MsgDecision, Txn: tid(1), To: "a", Decision: protocol.DecisionAbort})
	p.Ready()
	if n := p.InquireNow(nil); n != 0 {
		t.Fatalf("InquireNow after the decision sent %d", n)
	}
	if _, total := p.InDoubt(nil, 0); total != 0 || p.OldestPreparedTicks() != 0 {
		t.Fatalf("%d in doubt after the abort", total)
	}
}

// InFlight pages through what a shard holds in id order: pages of 3 after
// each page's last id cover every transaction once, a finished one drops
// out, and the total is what the shard holds.
func TestShardInFlightPages(t *testing.T) {
	s := engine.NewShard(engine.ShardConfig{TickMicros: 1000})
	// Begun out of id order: the listing sorts.
	for _, k := range []byte{7, 3, 9, 1, 5, 8, 2, 6, 4} {
		s.Step(engine.Message{Type: engine.MsgBegin, Txn: tid(k), Branches: []engine.Branch{{Participant: "a"}}})
	}
	s.Ready()
	var got []protocol.TxnID
	var after *protocol.TxnID
	for pages := 0; ; pages++ {
		if pages > 4 {
			t.Fatalf("more than 4 pages of 3 for 9 transactions: %v", got)
		}
		views, total := s.InFlight(nil, after, 3)
		if total != 9 || len(views) > 3 {
			t.Fatalf("page %d: %d views, total %d", pages, len(views), total)
		}
		if len(views) == 0 {
			break
		}
		for _, v := range views {
			if v.State != "voting" || len(v.Branches) != 1 {
				t.Fatalf("view %+v", v)
			}
			got = append(got, v.Txn)
		}
		last := views[len(views)-1].Txn
		after = &last
	}
	if len(got) != 9 {
		t.Fatalf("listed %d of 9: %v", len(got), got)
	}
	for i, id := range got {
		if id != tid(byte(i+1)) {
			t.Fatalf("listing %d is %v, want %v (id order)", i, id, tid(byte(i+1)))
		}
	}
	// A no vote aborts tid(1) at once: it drops out of the listing.
	s.Step(engine.Message{Type: engine.MsgVote, Txn: tid(1), From: "a", Vote: protocol.VoteNo})
	s.Ready()
	views, total := s.InFlight(nil, nil, 100)
	if total != 8 || len(views) != 8 || views[0].Txn != tid(2) {
		t.Fatalf("after tid(1) aborted: total %d, %d views, first %v", total, len(views), views[0].Txn)
	}
	if _, total := s.InFlight(nil, nil, 0); total != 8 {
		t.Fatalf("max 0: total %d, want 8", total)
	}
}

// BenchmarkShardInFlightPage is the cost, on a shard's pump, of one page
// of 50 of the web console's in-flight list when the shard holds 10,000
// transactions: a scan that keeps 50 pointers, and 50 views.
func BenchmarkShardInFlightPage(b *testing.B) {
	s := engine.NewShard(engine.ShardConfig{TickMicros: 1000})
	for i := range 10_000 {
		var id protocol.TxnID
		id[0], id[1], id[15] = byte(i>>8), byte(i), 1
		s.Step(engine.Message{Type: engine.MsgBegin, Txn: id, Branches: []engine.Branch{{Participant: "a"}, {Participant: "b"}}})
	}
	s.Ready()
	after := protocol.TxnID{0: 0x13, 1: 0x88} // the middle: 5,000 ids after it
	views := make([]engine.TxnView, 0, 50)
	b.ReportAllocs()
	for b.Loop() {
		var total int
		views, total = s.InFlight(views[:0], &after, 50)
		if total != 10_000 || len(views) != 50 {
			b.Fatalf("total %d, %d views", total, len(views))
		}
	}
}
