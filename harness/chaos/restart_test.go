package chaos

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/harness/cluster"
	"github.com/commitd/commitd/participant/bank"
	"github.com/google/uuid"
)

// commitSome runs n transfers between p1 and p2 on distinct accounts and
// fails the test unless every one commits.
func commitSome(t *testing.T, addr string, n int, first uint32) {
	t.Helper()
	cl, err := client.Dial(addr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := range n {
		a := (first + uint32(i)) % 1000
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		res, err := cl.Run(ctx, uuid.Must(uuid.NewV7()), []client.Branch{
			{Participant: "p1", Work: bank.AppendWork(nil, a, -1)},
			{Participant: "p2", Work: bank.AppendWork(nil, a, 1)},
		})
		cancel()
		if err != nil || res.Outcome != client.Committed {
			t.Fatalf("transfer %d: %v %v", i, res, err)
		}
	}
}

// TestRestartAfterRetirement restarts every server after its log has
// retired segments. Each start opens a new segment, so the second restart
// finds a log that no longer begins at LSN 1. Found by TestChaos: both
// servers replayed from LSN 1 and refused to start (wal.ErrRetired); the
// participant must also start its replay at a checkpoint, since records
// before the first checkpoint left may belong to transactions whose
// prepare was retired.
func TestRestartAfterRetirement(t *testing.T) {
	c, err := cluster.Start(cluster.Options{
		Dir:             t.TempDir(),
		SegmentBytes:    32 << 10, // room for a checkpoint of 1000 accounts
		CheckpointEvery: 10,
		PrepareTimeout:  2 * time.Second,
		Logger:          slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	account := uint32(0)
	round := func() {
		commitSome(t, c.CoordinatorAddr, 50, account)
		account += 50
		time.Sleep(2500 * time.Millisecond) // the servers retire once a second
	}
	round()
	for i := range 2 {
		if err := c.RestartCoordinator(); err != nil {
			t.Fatalf("coordinator restart %d: %v", i+1, err)
		}
		for p := range c.Participants {
			if err := c.RestartParticipant(p); err != nil {
				t.Fatalf("participant %d restart %d: %v", p+1, i+1, err)
			}
		}
		round()
	}
	if got, want := c.Total(), c.InitialTotal(); got != want {
		t.Fatalf("total %d after restarts, want %d", got, want)
	}
}

// TestIdleRestartKeepsTheLog restarts a participant whose log spans
// several segments and holds no checkpoint yet, leaves it idle for longer
// than the retirer's period, and restarts it again. Found by TestChaos: a
// participant that had not stepped since its restart published no low
// water, the retirer took "nothing published" as "nothing needed" and
// retired every segment but the last, and the next start found a log
// without its beginning (the balances it held would have been lost).
func TestIdleRestartKeepsTheLog(t *testing.T) {
	c, err := cluster.Start(cluster.Options{
		Dir:             t.TempDir(),
		SegmentBytes:    4096, // a few dozen records a segment
		CheckpointEvery: 1 << 20,
		PrepareTimeout:  2 * time.Second,
		Logger:          slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	commitSome(t, c.CoordinatorAddr, 200, 0)
	// A client hears "committed" before the participants apply it.
	for c.Participants[0].AccountsSummary().Prepared > 0 || c.Participants[1].AccountsSummary().Prepared > 0 {
		time.Sleep(10 * time.Millisecond)
	}
	before := c.Participants[0].AccountsSummary().Total
	for i := range 2 {
		if err := c.RestartParticipant(0); err != nil {
			t.Fatalf("idle restart %d: %v", i+1, err)
		}
		time.Sleep(2500 * time.Millisecond) // the retirer runs once a second
	}
	if got := c.Participants[0].AccountsSummary().Total; got != before {
		t.Fatalf("p1's total %d after idle restarts, was %d", got, before)
	}
	commitSome(t, c.CoordinatorAddr, 10, 500)
}
