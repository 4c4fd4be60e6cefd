package engine_test

import (
	"encoding/binary"
	"testing"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/participant/bank"
	"github.com/commitd/commitd/protocol"
)

// shardCommit drives one two-branch transaction through a shard: begin,
// two yes votes, the commit record durable, two acks, the end record
// durable, and every tickEvery transactions a tick (with RememberTicks 1
// and tickEvery 1, a transaction is forgotten a tick or two after it
// finished; the "remembering" benchmarks keep ~100k finished transactions,
// as a coordinator at 20k/s with --remember 5s does).
type shardCommit struct {
	s                  *engine.Shard
	staged             bool // a staged decision: RecStaged durable before the votes
	v7                 bool // UUIDv7-shaped ids (see benchID)
	tickEvery          uint64
	begin              engine.Message
	voteA, voteB       engine.Message
	ackA, ackB         engine.Message
	id                 uint64
	lastMsgs, lastRecs int
}

func newShardCommit(remember, tickEvery int, staged bool) *shardCommit {
	w := bank.AppendWork(nil, 1, 10)
	return &shardCommit{
		s:         engine.NewShard(engine.ShardConfig{RememberTicks: remember}),
		staged:    staged,
		tickEvery: uint64(tickEvery),
		begin: engine.Message{Type: engine.MsgBegin, Staged: staged, Branches: []engine.Branch{
			{Participant: "bank-a", Work: w}, {Participant: "bank-b", Work: w},
		}},
		voteA: engine.Message{Type: engine.MsgVote, From: "bank-a", Vote: protocol.VoteYes},
		voteB: engine.Message{Type: engine.MsgVote, From: "bank-b", Vote: protocol.VoteYes},
		ackA:  engine.Message{Type: engine.MsgAck, From: "bank-a"},
		ackB:  engine.Message{Type: engine.MsgAck, From: "bank-b"},
	}
}

// benchID is the benchmarks' n-th transaction id: n in the last 8 bytes
// and, for v7, the first 8 a UUIDv7's at 26 transactions per ms (the
// 1,000-caller cell's rate), so that the remembered maps can skip by
// stamp; otherwise zero, and every lookup probes them.
func benchID(n uint64, v7 bool) protocol.TxnID {
	var txn protocol.TxnID
	binary.BigEndian.PutUint64(txn[8:], n)
	if v7 {
		binary.BigEndian.PutUint64(txn[:8], (1_700_000_000_000+n/26)<<16|0x7000)
	}
	return txn
}

func (c *shardCommit) run() {
	c.id++
	txn := benchID(c.id, c.v7)
	c.begin.Txn, c.voteA.Txn, c.voteB.Txn, c.ackA.Txn, c.ackB.Txn = txn, txn, txn, txn, txn
	s := c.s
	s.Step(c.begin)
	rd := s.Ready() // two prepares (staged: and RecStaged)
	c.lastMsgs = len(rd.Messages)
	if c.staged {
		s.Durable(rd.FirstIndex)
		s.Ready()
	}
	s.Step(c.voteA)
	s.Step(c.voteB)
	rd = s.Ready() // the commit record (staged: and the reply)
	c.lastMsgs += len(rd.Replies)
	s.Durable(rd.FirstIndex)
	rd = s.Ready() // two decisions (classic: and the reply)
	c.lastMsgs += len(rd.Messages) + len(rd.Replies)
	s.Step(c.ackA)
	s.Step(c.ackB)
	rd = s.Ready() // the end record
	c.lastRecs = len(rd.Records)
	s.Durable(rd.FirstIndex)
	s.Ready()
	if c.id%c.tickEvery == 0 {
		s.Tick()
	}
}

// BenchmarkShardCommit is the coordinator's share of one two-branch
// commit; allocs/op is per transaction.
func BenchmarkShardCommit(b *testing.B) {
	for _, bc := range []struct {
		name                string
		remember, tickEvery int
		staged, v7          bool
	}{
		{"forgetting", 1, 1, false, false},
		{"remembering", 2500, 20, false, false}, // 50k-100k finished transactions remembered
		{"remembering/uuidv7", 2500, 20, false, true},
		{"staged/forgetting", 1, 1, true, false},
		{"staged/remembering", 2500, 20, true, false},
		{"staged/remembering/uuidv7", 2500, 20, true, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := newShardCommit(bc.remember, bc.tickEvery, bc.staged)
			c.v7 = bc.v7
			for range 2 * bc.remember * bc.tickEvery { // reach the steady state
				c.run()
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				c.run()
			}
			b.ReportMetric(float64(c.s.Stats().Remembered), "remembered")
			if c.lastMsgs != 5 || c.lastRecs != 1 || c.s.Stats().Remembered > 2*bc.remember*bc.tickEvery {
				b.Fatalf("the transaction did not run as expected: %d messages, %d records, %+v", c.lastMsgs, c.lastRecs, c.s.Stats())
			}
		})
	}
}

// TestShardCommitAllocs keeps the coordinator's hot path allocation-free
// in the steady state (structs, queues and Ready slices are reused).
func TestShardCommitAllocs(t *testing.T) {
	for _, staged := range []bool{false, true} {
		c := newShardCommit(1, 1, staged)
		for range 1000 {
			c.run()
		}
		if n := testing.AllocsPerRun(1000, c.run); n > 0.1 {
			t.Fatalf("staged=%v: %v allocations per transaction", staged, n)
		}
		if st := c.s.Stats(); staged && st.Staged == 0 {
			t.Fatalf("no staged transaction ran: %+v", st)
		}
	}
}

// participantCommit drives one participant through prepare, durable,
// commit decision, durable.
type participantCommit struct {
	p         *engine.Participant
	tickEvery uint64
	v7        bool // UUIDv7-shaped ids (see benchID)
	prepare   engine.Message
	commit    engine.Message
	id        uint64
}

func newParticipantCommit(remember, tickEvery int) *participantCommit {
	return &participantCommit{
		p:         engine.NewParticipant(engine.ParticipantConfig{Name: "bank-a", RememberTicks: remember}, bank.New(1, 1<<40)),
		tickEvery: uint64(tickEvery),
		prepare:   engine.Message{Type: engine.MsgPrepare, To: "bank-a", Work: bank.AppendWork(nil, 0, 1)},
		commit:    engine.Message{Type: engine.MsgDecision, To: "bank-a", Decision: protocol.DecisionCommit},
	}
}

func (c *participantCommit) run() {
	c.id++
	txn := benchID(c.id, c.v7)
	c.prepare.Txn, c.commit.Txn = txn, txn
	p := c.p
	p.Step(c.prepare)
	rd := p.Ready()
	p.Durable(rd.FirstIndex)
	p.Ready() // the vote
	p.Step(c.commit)
	rd = p.Ready()
	p.Durable(rd.FirstIndex)
	p.Ready() // applied, the ack
	if c.id%c.tickEvery == 0 {
		p.Tick()
	}
}

// BenchmarkParticipantCommit is one participant's share of a two-phase
// commit, with the bank resource.
func BenchmarkParticipantCommit(b *testing.B) {
	for _, bc := range []struct {
		name                string
		remember, tickEvery int
		v7                  bool
	}{
		{"forgetting", 1, 1, false},
		{"remembering", 2500, 20, false},
		{"remembering/uuidv7", 2500, 20, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := newParticipantCommit(bc.remember, bc.tickEvery)
			c.v7 = bc.v7
			for range 2 * bc.remember * bc.tickEvery {
				c.run()
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				c.run()
			}
			b.ReportMetric(float64(c.p.Stats().Remembered), "remembered")
		})
	}
}
