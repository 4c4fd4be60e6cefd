package engine_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/participant/bank"
	"github.com/commitd/commitd/protocol"
)

// TestParticipantPrepareAgain: a prepare for a transaction id the
// participant already has (in hand or decided) is either a copy of the one
// it handled or a new transaction that reuses the id at a coordinator that
// forgot the old one. A YES for a reuse makes the coordinator commit the
// reuse's other branches while this participant applies nothing new (issue
// 13: money created). Each case sets a transaction up, sends a second
// prepare and lists every vote a sends from then on, durability included.
func TestParticipantPrepareAgain(t *testing.T) {
	w100, w7, w0 := bank.AppendWork(nil, 0, -100), bank.AppendWork(nil, 0, -7), bank.AppendWork(nil, 1, 0)
	const (
		two = false
		one = true
	)
	for _, c := range []struct {
		name string
		// the first prepare, and how far it goes: "committed",
		// "prepared", "preparing" (its record not durable), "read-only"
		work    []byte
		phase1  bool
		upTo    string
		again   []byte
		phase2  bool
		want    string // a's votes after the second prepare, durability included
		because string
	}{
		{"committed two-phase, other work", w100, two, "committed", w7, two, "no",
			"a reuse: a YES would commit the other branches alone"},
		{"committed two-phase, the same work", w100, two, "committed", w100, two, "no",
			"past voting at its coordinator, a copy's answer is ignored; a reuse with other branches must not count a's old commit"},
		{"committed one-phase, the same work", w100, one, "committed", w100, one, "yes",
			"a copy: its coordinator may still be voting, and committed is the true answer"},
		{"committed one-phase, other work", w100, one, "committed", w7, one, "no",
			"a reuse: yes would say committed for work not done"},
		{"committed one-phase, the same work two-phase", w100, one, "committed", w100, two, "no",
			"a reuse with other branches"},
		{"prepared, the same work", w100, two, "prepared", w100, two, "yes",
			"a copy: prepared, yes again"},
		{"prepared, other work", w100, two, "prepared", w7, two, "no",
			"a reuse: a's prepared work is not the reuse's"},
		{"prepared, the same work one-phase", w100, two, "prepared", w100, one, "no",
			"a one-phase yes would say committed"},
		{"preparing, other work", w100, two, "preparing", w7, two, "no",
			"no now, and no yes when the old prepare becomes durable"},
		{"preparing, the same work", w100, two, "preparing", w100, two, "yes",
			"a copy: one yes, once durable"},
		{"read-only, the same work", w0, two, "read-only", w0, two, "read-only",
			"a copy"},
		{"read-only, other work", w0, two, "read-only", w7, two, "no",
			"a reuse: read-only would leave a out of phase two"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := engine.NewParticipant(engine.ParticipantConfig{Name: "a"}, bank.New(2, 1000))
			id := tid(1)
			durable := func() {
				if rd := p.Ready(); len(rd.Records) > 0 {
					p.Durable(rd.FirstIndex + uint64(len(rd.Records)) - 1)
				}
			}
			p.Step(engine.Message{Type: engine.MsgPrepare, Txn: id, To: "a", Work: c.work, OnePhase: c.phase1})
			switch c.upTo {
			case "committed":
				durable()
				if !c.phase1 {
					p.Step(engine.Message{Type: engine.MsgDecision, Txn: id, To: "a", Decision: protocol.DecisionCommit})
					durable()
				}
			case "prepared":
				durable()
			}
			var last uint64 // the last record appended, durable or not
			if rd := p.Ready(); len(rd.Records) > 0 {
				last = rd.FirstIndex + uint64(len(rd.Records)) - 1
			}
			p.Step(engine.Message{Type: engine.MsgPrepare, Txn: id, To: "a", Work: c.again, OnePhase: c.phase2})
			var votes []string
			for range 2 {
				rd := p.Ready()
				for _, m := range rd.Messages {
					if m.Type == engine.MsgVote {
						votes = append(votes, m.Vote.String())
					}
				}
				if len(rd.Records) > 0 {
					last = rd.FirstIndex + uint64(len(rd.Records)) - 1
				}
				if last > 0 {
					p.Durable(last)
				}
			}
			if got := strings.Join(votes, " "); got != c.want {
				t.Errorf("votes after the second prepare: %q, want %q (%s)", got, c.want, c.because)
			}
			if st := p.Stats(); (c.want == "no") != (st.RefusedReuse == 1) {
				t.Errorf("RefusedReuse = %d, want %v", st.RefusedReuse, fmt.Sprint(c.want == "no"))
			}
		})
	}
}

// TestShardIDWindowCoversMemory: a shard accepts a begin only if, had its
// id been used before, it would still remember that use — so a reused id
// is always refused (in use, or stale), never started again. Random
// configurations; the first use at the edge of the window (oldest age
// accepted, or ahead by the most allowed); wall time advancing as slowly
// as a time.Ticker allows against the ticks (one tick early), and the
// reuse stamped a tick before the shard sees it (its wait in the inbox).
func TestShardIDWindowCoversMemory(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 2))
	const base = int64(1_800_000_000_000) // Unix ms, 2027
	for trial := range 300 {
		cfg := engine.ShardConfig{
			RememberTicks: 3 + r.IntN(300),
			TickMicros:    []int{500, 1000, 10_000, 25_000}[r.IntN(4)],
		}
		remembered := int64(cfg.RememberTicks-2) * int64(cfg.TickMicros) / 1000
		if remembered >= 2 {
			cfg.MaxIDAheadMs = 1 + r.IntN(int(remembered/2))
		}
		tickMs := float64(cfg.TickMicros) / 1000
		cfg.StartUnixMs = base
		s := engine.NewShard(cfg)
		up := r.IntN(3 * cfg.RememberTicks)
		for range up {
			s.Tick()
		}
		wall := func(ticks int) int64 { return base + int64(float64(ticks)*tickMs) }
		u1 := wall(up)
		ahead := int64(cfg.MaxIDAheadMs)
		ts := u1 + ahead // the newest accepted: stays acceptable longest
		if r.IntN(2) == 0 {
			ts = u1 - min(remembered-ahead, u1-base) // the oldest accepted
		}
		id := v7ID(1, ts)
		s.Step(engine.Message{Type: engine.MsgBegin, Txn: id, UnixMs: u1,
			Branches: []engine.Branch{{Participant: "a", Work: []byte("w")}}})
		if rd := s.Ready(); len(rd.Messages) != 1 {
			t.Fatalf("trial %d %+v: first begin (age %d ms, uptime %d ticks) not started: %+v", trial, cfg, u1-ts, up, rd.Replies)
		}
		s.Step(engine.Message{Type: engine.MsgVote, Txn: id, From: "a", Vote: protocol.VoteYes})
		if rd := s.Ready(); len(rd.Replies) != 1 || rd.Replies[0].Outcome != protocol.OutcomeCommitted {
			t.Fatalf("trial %d: first use not committed: %+v", trial, rd.Replies)
		}
		for k := 1; k <= 3*cfg.RememberTicks; k++ {
			s.Tick()
			// k ticks, the first of them early: k-1 ticks of wall time,
			// and the reuse was stamped one tick before the shard sees it.
			u2 := wall(up + k - 2)
			s.Step(engine.Message{Type: engine.MsgBegin, Txn: id, UnixMs: max(u2, u1),
				Branches: []engine.Branch{{Participant: "b", Work: []byte("other")}}})
			rd := s.Ready()
			if len(rd.Replies) != 1 || rd.Replies[0].Outcome != protocol.OutcomeRejected {
				t.Fatalf("trial %d %+v: id used at age %d ms, reused %d ticks later (stamped %d ms later) was started again",
					trial, cfg, u1-ts, k, u2-u1)
			}
		}
	}
}

// TestRestoreReusedID: a log may hold two transactions under one id, the
// second begun after the first had finished and been forgotten (before a
// restart, or where no id window refused it). Both machines restore it
// (the old shard panicked on a second RecCommit, the old participant
// failed on a second one-phase RecCommitted), and the later one counts.
func TestRestoreReusedID(t *testing.T) {
	id := tid(1)
	s := engine.NewShard(engine.ShardConfig{})
	for _, r := range []engine.Record{
		{Type: engine.RecCommit, Txn: id, Participants: []string{"a", "b"}},
		{Type: engine.RecEnd, Txn: id},
		{Type: engine.RecCommit, Txn: id, Participants: []string{"a", "c"}},
	} {
		if err := s.Restore(r); err != nil {
			t.Fatal(err)
		}
	}
	var to []string
	for _, m := range s.Ready().Messages {
		to = append(to, m.To+":"+m.Decision.String())
	}
	if got := strings.Join(to, " "); got != "a:commit c:commit" {
		t.Errorf("after restore the shard sends %q, want the second transaction's commits", got)
	}

	b := bank.New(2, 100)
	p := engine.NewParticipant(engine.ParticipantConfig{Name: "a"}, b)
	for _, amt := range []int64{-10, -7} {
		if err := p.Restore(engine.Record{Type: engine.RecCommitted, Txn: id, Work: bank.AppendWork(nil, 0, amt)}); err != nil {
			t.Fatalf("restore the one-phase commit of %d: %v", amt, err)
		}
	}
	if got := b.Balance(0); got != 83 {
		t.Errorf("balance %d after both one-phase commits, want 83", got)
	}
}

// TestShardAbortsInquiryFromNonBranch: a participant that asks about an
// id whose transaction at the shard does not name it holds an earlier
// transaction under that id, which the shard forgot before the id was
// begun again — so it never committed. It is told abort at once; it used
// to be ignored until the shard forgot the new one too (up to twice
// RememberTicks of locks held; found by the simulation with id reuse).
func TestShardAbortsInquiryFromNonBranch(t *testing.T) {
	s := engine.NewShard(engine.ShardConfig{})
	inFlight, finished := tid(1), tid(2)
	s.Step(engine.Message{Type: engine.MsgBegin, Txn: inFlight, Branches: []engine.Branch{{Participant: "a"}, {Participant: "b"}}})
	s.Step(engine.Message{Type: engine.MsgBegin, Txn: finished, Branches: []engine.Branch{{Participant: "a"}}})
	s.Step(engine.Message{Type: engine.MsgVote, Txn: finished, From: "a", Vote: protocol.VoteYes})
	s.Ready()
	for _, id := range []protocol.TxnID{inFlight, finished} {
		s.Step(engine.Message{Type: engine.MsgInquire, Txn: id, From: "c"})
		rd := s.Ready()
		if len(rd.Messages) != 1 || rd.Messages[0].To != "c" || rd.Messages[0].Decision != protocol.DecisionAbort {
			t.Errorf("inquiry from c, not a branch of %v: %+v, want Decision{Abort} to c", id, rd.Messages)
		}
	}
}
