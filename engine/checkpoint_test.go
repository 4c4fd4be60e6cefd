package engine_test

import (
	"bytes"
	"testing"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/participant/bank"
	"github.com/commitd/commitd/protocol"
)

// checkpointOf returns the Data of rd's one checkpoint record, failing if
// rd has none or several.
func checkpointOf(t *testing.T, rd engine.Ready) []byte {
	t.Helper()
	var data [][]byte
	for _, r := range rd.Records {
		if r.Type == engine.RecCheckpoint {
			data = append(data, r.Data)
		}
	}
	if len(data) != 1 {
		t.Fatalf("%d checkpoints, want 1: %+v", len(data), rd.Records)
	}
	return data[0]
}

// restoresTo restores a fresh participant from checkpoint data and
// returns its bank's total and how many transactions it holds prepared.
func restoresTo(t *testing.T, data []byte) (total int64, prepared int) {
	t.Helper()
	nb := bank.New(0, 0)
	q := engine.NewParticipant(engine.ParticipantConfig{Name: "a"}, nb)
	if err := q.Restore(engine.Record{Type: engine.RecCheckpoint, Data: bytes.Clone(data)}); err != nil {
		t.Fatal(err)
	}
	return nb.Total(), q.Stats().Prepared
}

// TestCheckpointBufferOutlivesItsReady: checkpoint buffers are reused, but
// one in a Ready handed out is not written again until the next Ready is
// handed out, even when another checkpoint is appended meanwhile; and each
// checkpoint says what it said when it was taken, round after round of
// reuse.
func TestCheckpointBufferOutlivesItsReady(t *testing.T) {
	b := bank.New(2, 100)
	p := engine.NewParticipant(engine.ParticipantConfig{Name: "a", CheckpointEvery: 1}, b)
	for round := range byte(4) {
		t1, t2 := tid(2*round+1), tid(2*round+2)
		for i, id := range []protocol.TxnID{t1, t2} {
			p.Step(engine.Message{Type: engine.MsgPrepare, Txn: id, To: "a", Work: bank.AppendWork(nil, uint32(i), 5)})
		}
		p.Durable(p.Ready().FirstIndex + 1)
		p.Ready() // the votes
		p.Step(engine.Message{Type: engine.MsgDecision, Txn: t1, To: "a", Decision: protocol.DecisionCommit})
		p.Durable(p.Ready().FirstIndex) // t1's commit: a checkpoint with t2 prepared
		a := checkpointOf(t, p.Ready())
		aWas := bytes.Clone(a)
		// t2's abort, applied at once: a second checkpoint, appended while
		// the first one's Ready is the last handed out.
		p.Step(engine.Message{Type: engine.MsgDecision, Txn: t2, To: "a", Decision: protocol.DecisionAbort})
		if !bytes.Equal(a, aWas) {
			t.Fatalf("round %d: the first checkpoint was overwritten before its Ready was superseded", round)
		}
		c := checkpointOf(t, p.Ready())
		want := int64(200 + 5*(int(round)+1))
		if total, prepared := restoresTo(t, aWas); total != want || prepared != 1 {
			t.Fatalf("round %d: the first checkpoint restores total %d with %d prepared, want %d with 1", round, total, prepared, want)
		}
		if total, prepared := restoresTo(t, c); total != want || prepared != 0 {
			t.Fatalf("round %d: the second checkpoint restores total %d with %d prepared, want %d with 0", round, total, prepared, want)
		}
	}
}

// TestCheckpointSteadyStateDoesNotAllocate: a participant checkpointing
// after every decision (CheckpointEvery 1, a 1,000-account bank) reuses
// its checkpoint buffers, so a whole transaction with its checkpoint
// allocates nothing once warm.
func TestCheckpointSteadyStateDoesNotAllocate(t *testing.T) {
	c := newParticipantCommit(1, 1)
	c.p = engine.NewParticipant(engine.ParticipantConfig{Name: "bank-a", RememberTicks: 1, CheckpointEvery: 1}, bank.New(1000, 1<<40))
	for range 100 {
		c.run()
	}
	if n := testing.AllocsPerRun(500, c.run); n != 0 {
		t.Fatalf("%v allocations per transaction", n)
	}
	if st := c.p.Stats(); st.Checkpoints < 600 {
		t.Fatalf("%d checkpoints, want one per transaction", st.Checkpoints)
	}
}

// BenchmarkCheckpoint is one checkpoint's data at a participant of the
// 1,000-caller cell: a bank of 100,000 accounts (the matrix's default, an
// 800 KB snapshot) and 1,000 transactions held prepared. Before (fresh): a
// new buffer each time, of the last checkpoint's size, as appendCheckpoint
// did; after (reused): the buffers of recordBufs. ns/op includes the
// garbage collector's share of freeing the fresh buffers.
func BenchmarkCheckpoint(b *testing.B) {
	for _, bc := range []struct {
		name  string
		build func(*engine.Participant) []byte
	}{
		{"fresh", (*engine.Participant).CheckpointFresh},
		{"reused", (*engine.Participant).CheckpointReused},
	} {
		b.Run(bc.name, func(b *testing.B) {
			p := engine.NewParticipant(engine.ParticipantConfig{Name: "a"}, bank.New(100_000, 1<<40))
			for i := range uint64(1000) {
				p.Step(engine.Message{Type: engine.MsgPrepare, Txn: benchID(i+1, true), To: "a", Work: bank.AppendWork(nil, uint32(i), 1)})
			}
			p.Durable(p.Ready().FirstIndex + 999)
			p.Ready()
			if st := p.Stats(); st.Prepared != 1000 {
				b.Fatalf("%d prepared", st.Prepared)
			}
			var n int
			for range 3 {
				n = len(bc.build(p))
			}
			b.SetBytes(int64(n))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				bc.build(p)
			}
		})
	}
}
