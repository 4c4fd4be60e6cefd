package engine_test

import (
	"encoding/binary"
	"testing"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/participant/bank"
)

// shardCommit drives one two-branch transaction through a shard: begin,
// two yes votes, the commit record durable, two acks, the end record
// durable, and a tick (which forgets the transaction finished one tick
// earlier, RememberTicks being 1).
type shardCommit struct {
	s                  *engine.Shard
	begin              engine.Message
	voteA, voteB       engine.Message
	ackA, ackB         engine.Message
	id                 uint64
	lastMsgs, lastRecs int
}

func newShardCommit() *shardCommit {
	w := bank.AppendWork(nil, 1, 10)
	return &shardCommit{
		s: engine.NewShard(engine.ShardConfig{RememberTicks: 1}),
		begin: engine.Message{Type: engine.MsgBegin, Branches: []engine.Branch{
			{Participant: "bank-a", Work: w}, {Participant: "bank-b", Work: w},
		}},
		voteA: engine.Message{Type: engine.MsgVote, From: "bank-a", Vote: engine.VoteYes},
		voteB: engine.Message{Type: engine.MsgVote, From: "bank-b", Vote: engine.VoteYes},
		ackA:  engine.Message{Type: engine.MsgAck, From: "bank-a"},
		ackB:  engine.Message{Type: engine.MsgAck, From: "bank-b"},
	}
}

func (c *shardCommit) run() {
	c.id++
	var txn engine.TxnID
	binary.BigEndian.PutUint64(txn[8:], c.id)
	c.begin.Txn, c.voteA.Txn, c.voteB.Txn, c.ackA.Txn, c.ackB.Txn = txn, txn, txn, txn, txn
	s := c.s
	s.Step(c.begin)
	rd := s.Ready() // two prepares
	c.lastMsgs = len(rd.Messages)
	s.Step(c.voteA)
	s.Step(c.voteB)
	rd = s.Ready() // the commit record
	s.Durable(rd.FirstIndex)
	rd = s.Ready() // two decisions, the reply
	c.lastMsgs += len(rd.Messages) + len(rd.Replies)
	s.Step(c.ackA)
	s.Step(c.ackB)
	rd = s.Ready() // the end record
	c.lastRecs = len(rd.Records)
	s.Durable(rd.FirstIndex)
	s.Ready()
	s.Tick()
}

// BenchmarkShardCommit is the coordinator's share of one two-branch
// commit; allocs/op is per transaction.
func BenchmarkShardCommit(b *testing.B) {
	c := newShardCommit()
	b.ReportAllocs()
	for b.Loop() {
		c.run()
	}
	if c.lastMsgs != 5 || c.lastRecs != 1 || c.s.Stats().Remembered > 2 {
		b.Fatalf("the transaction did not run as expected: %d messages, %d records, %+v", c.lastMsgs, c.lastRecs, c.s.Stats())
	}
}

// TestShardCommitAllocs keeps the coordinator's hot path allocation-free
// in the steady state (structs, queues and Ready slices are reused).
func TestShardCommitAllocs(t *testing.T) {
	c := newShardCommit()
	for range 1000 {
		c.run()
	}
	if n := testing.AllocsPerRun(1000, c.run); n > 0.1 {
		t.Fatalf("%v allocations per transaction", n)
	}
}

// participantCommit drives one participant through prepare, durable,
// commit decision, durable.
type participantCommit struct {
	p       *engine.Participant
	prepare engine.Message
	commit  engine.Message
	id      uint64
}

func newParticipantCommit() *participantCommit {
	return &participantCommit{
		p:       engine.NewParticipant(engine.ParticipantConfig{Name: "bank-a", RememberTicks: 1}, bank.New(1, 1<<40)),
		prepare: engine.Message{Type: engine.MsgPrepare, To: "bank-a", Work: bank.AppendWork(nil, 0, 1)},
		commit:  engine.Message{Type: engine.MsgDecision, To: "bank-a", Decision: engine.DecisionCommit},
	}
}

func (c *participantCommit) run() {
	c.id++
	var txn engine.TxnID
	binary.BigEndian.PutUint64(txn[8:], c.id)
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
	p.Tick()
}

// BenchmarkParticipantCommit is one participant's share of a two-phase
// commit, with the bank resource.
func BenchmarkParticipantCommit(b *testing.B) {
	c := newParticipantCommit()
	b.ReportAllocs()
	for b.Loop() {
		c.run()
	}
}
