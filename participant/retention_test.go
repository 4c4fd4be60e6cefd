package participant_test

import (
	"testing"
	"time"

	"github.com/commitd/commitd/internal/node/nodetest"
	"github.com/commitd/commitd/protocol"
	"github.com/google/uuid"
)

// A running participant retires its ledger after the retention: once the
// old decisions are older than it and checkpoints have let the protocol
// log retire their records, `admin outcomes` no longer lists them, still
// lists the young ones, and a restart recovers with the ledger cut.
func TestLedgerRetentionInAServer(t *testing.T) {
	const (
		retention = 2 * time.Second
		old       = 1500 // ~4 ledger segments of 16 KiB
		young     = 50
	)
	r := unstartedRig(t, nil)
	r.cfg.LedgerRetention = retention
	r.cfg.CheckpointEvery = 100
	r.cfg.SegmentBytes = 64 << 10 // the ledger's are 16 KiB
	r.start()

	// Each transaction prepares (yes) and is told to abort: an entry in
	// the ledger, and a prepared and an aborted record in the log.
	decide := func(n int) []uuid.UUID {
		t.Helper()
		ids := make([]uuid.UUID, n)
		for i := range ids {
			ids[i] = newID()
			r.coord.prepare(t, ids[i], uint32(i%accounts), 1)
			r.coord.decide(t, ids[i], protocol.DecisionAbort)
		}
		return ids
	}
	listed := func(ids []uuid.UUID, outs map[uuid.UUID]string) int {
		n := 0
		for _, id := range ids {
			if outs[id] == "aborted" {
				n++
			}
		}
		return n
	}
	oldIDs := decide(old)
	nodetest.Eventually(t, "the old decisions in the ledger", func() bool {
		return listed(oldIDs, r.outcomes()) == old
	})
	time.Sleep(retention + time.Second)
	// Enough younger decisions for the protocol log to move past the old
	// ones' records (checkpoints, then a new segment) and retire them.
	// Bounded by how many, not by how long: a loaded machine runs fewer
	// rounds in a given time, and the log moves with transactions (CI
	// failed the 10 s bound this had).
	var youngIDs []uuid.UUID
	for round := 0; ; round++ {
		youngIDs = append(youngIDs, decide(young)...)
		time.Sleep(100 * time.Millisecond)
		if listed(oldIDs, r.outcomes()) < old/2 {
			break
		}
		if round == 80 { // 4,000 younger decisions: over twice the old ones
			t.Fatalf("%d of %d old decisions still listed after %d younger ones", listed(oldIDs, r.outcomes()), old, len(youngIDs))
		}
	}
	nodetest.Eventually(t, "the young decisions in the ledger", func() bool {
		return listed(youngIDs[len(youngIDs)-young:], r.outcomes()) == young
	})
	outs := r.outcomes()
	t.Logf("after the retention: %d of %d old decisions listed, %d of %d younger", listed(oldIDs, outs), old,
		listed(youngIDs, outs), len(youngIDs))

	r.restart()
	after := r.outcomes()
	if got := listed(youngIDs[len(youngIDs)-young:], after); got != young {
		t.Fatalf("after a restart %d of the %d youngest decisions are listed", got, young)
	}
	if got, before := listed(oldIDs, after), listed(oldIDs, outs); got > before {
		t.Fatalf("after a restart %d old decisions are listed, %d before it: retired ones came back", got, before)
	}
	if a := r.accounts(); a.Accounts != accounts || a.Total != accounts*balance {
		t.Fatalf("after the restart: %+v", a)
	}
}
