package participant_test

import (
	"syscall"
	"testing"
	"time"

	"github.com/commitd/commitd/internal/node/nodetest"
	"github.com/commitd/commitd/protocol"
	"github.com/commitd/commitd/wal"
	"github.com/commitd/commitd/wal/waltest"
)

// The resource belongs to the pump's goroutine: AccountsSummary reads it
// there while the pump runs, and directly once the pump has stopped — after
// a fatal log failure and after Close — without waiting for a pump that
// will never run again.
func TestAccountsSummaryWhileRunningAndAfterTheStop(t *testing.T) {
	fs := waltest.NewMemFS()
	r := newRig(t, fs)
	held := newID()
	r.coord.prepare(t, held, 0, -1)
	nodetest.Eventually(t, "a yes vote", func() bool { return r.coord.vote(held) == protocol.VoteYes })
	want := func(when string, prepared int) {
		t.Helper()
		done := make(chan struct{})
		go func() {
			defer close(done)
			if a := r.p.AccountsSummary(); a.Prepared != prepared || a.Total != accounts*balance || a.Accounts != accounts {
				t.Errorf("%s: %+v, want %d prepared, %d accounts and total %d", when, a, prepared, accounts, accounts*balance)
			}
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: AccountsSummary did not return in 10 s", when)
		}
	}
	want("running", 1)
	fs.Inject(waltest.FailNth(waltest.OpSync, 1, syscall.EIO, true))
	r.coord.prepare(t, newID(), 1, -1)
	nodetest.WaitFailed(t, r.p, "participant", syscall.EIO, wal.ErrFailed)
	// The second prepare holds its account in the bank; its vote never
	// left, as its record never became durable.
	want("after the log failed", 2)
	r.p.Close()
	want("after Close", 2)
}
