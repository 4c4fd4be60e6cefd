package participant

import (
	"errors"
	"syscall"
	"testing"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/wal"
	"github.com/commitd/commitd/wal/waltest"
	"github.com/google/uuid"
)

func openTestLedger(t *testing.T, fs *waltest.MemFS) *ledger {
	t.Helper()
	l, err := openLedger("/ledger", wal.Options{FS: fs, SegmentSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func decisionOf(i int) engine.Decision {
	if i%3 == 0 {
		return engine.DecisionAbort
	}
	return engine.DecisionCommit
}

// pendingEntries is how many entries wait in memory.
func (l *ledger) pendingEntries() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.mu.pending) / ledgerEntryLen
}

type entry struct {
	id engine.TxnID
	d  engine.Decision
}

func listLedger(t *testing.T, l *ledger) []entry {
	t.Helper()
	var got []entry
	if err := l.each(func(id engine.TxnID, d engine.Decision) error {
		got = append(got, entry{id, d})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

// However many decisions are recorded, at most maxPending wait in memory,
// and the listing, read from disk, still has every one, in order.
func TestLedgerMemoryIsBounded(t *testing.T) {
	const n, bound = 5003, 8
	l := openTestLedger(t, waltest.NewMemFS())
	defer l.close()
	l.maxPending = bound
	want := make([]entry, n)
	for i := range want {
		want[i] = entry{uuid.Must(uuid.NewV7()), decisionOf(i)}
		l.record(engine.Applied{Txn: want[i].id, Decision: want[i].d})
		if p := l.pendingEntries(); p > bound {
			t.Fatalf("after %d records, %d entries in memory, bound %d", i+1, p, bound)
		}
	}
	if p := l.pendingEntries(); p == 0 || p >= bound {
		// 5003 is not a multiple of 8: some wait for the next sync.
		t.Fatalf("%d entries waiting, want 1 to %d", p, bound-1)
	}
	got := listLedger(t, l)
	if len(got) != n {
		t.Fatalf("listed %d entries, want %d", len(got), n)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("entry %d is %v, want %v", i, got[i], want[i])
		}
	}
	if p := l.pendingEntries(); p != 0 {
		t.Fatalf("%d entries still in memory after a listing, which syncs", p)
	}
}

// Recovery hands the ledger the decisions the protocol log holds; settle
// appends only those the ledger lacks, and each once.
func TestLedgerSettleRecordsOnlyWhatItLacks(t *testing.T) {
	fs := waltest.NewMemFS()
	l := openTestLedger(t, fs)
	a, b, c := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	l.record(engine.Applied{Txn: a, Decision: engine.DecisionCommit})
	l.record(engine.Applied{Txn: b, Decision: engine.DecisionAbort})
	if err := l.close(); err != nil {
		t.Fatal(err)
	}

	l = openTestLedger(t, fs)
	defer l.close()
	l.ensure(engine.Applied{Txn: b, Decision: engine.DecisionAbort})
	l.ensure(engine.Applied{Txn: c, Decision: engine.DecisionCommit})
	l.ensure(engine.Applied{Txn: a, Decision: engine.DecisionCommit})
	l.ensure(engine.Applied{Txn: c, Decision: engine.DecisionCommit}) // found twice
	if err := l.settle(); err != nil {
		t.Fatal(err)
	}
	got := listLedger(t, l)
	want := []entry{{a, engine.DecisionCommit}, {b, engine.DecisionAbort}, {c, engine.DecisionCommit}}
	if len(got) != len(want) {
		t.Fatalf("ledger %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("ledger %v, want %v", got, want)
		}
	}
	if l.wanted != nil || l.order != nil {
		t.Fatal("settle kept the recovered decisions in memory")
	}
}

// A corrupt entry refuses the start, naming where it is.
func TestLedgerRefusesACorruptEntry(t *testing.T) {
	fs := waltest.NewMemFS()
	lg, err := wal.Open("/ledger", wal.Options{FS: fs, SegmentSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lg.AppendSync([]byte("short")); err != nil {
		t.Fatal(err)
	}
	if err := lg.Close(); err != nil {
		t.Fatal(err)
	}
	l := openTestLedger(t, fs)
	defer l.close()
	if err := l.settle(); !errors.Is(err, wal.ErrCorrupt) {
		t.Fatalf("settle over a 5-byte entry: %v, want wal.ErrCorrupt", err)
	}
}

// An append that fails in record, where nobody can be told, is reported by
// the next sync (which the server treats as fatal): the entries it dropped
// must not be lost silently.
func TestLedgerSyncReportsAFailedAppend(t *testing.T) {
	fs := waltest.NewMemFS()
	l := openTestLedger(t, fs)
	defer l.close()
	l.maxPending = 4
	fs.Inject(waltest.FailNth(waltest.OpWrite, 1, syscall.EIO, true))
	for range 4 { // the fourth appends: the flusher's write fails
		l.record(engine.Applied{Txn: uuid.Must(uuid.NewV7()), Decision: engine.DecisionCommit})
	}
	if err := l.sync(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("sync after a failed write: %v, want EIO", err)
	}
	for range 4 { // appends into the failed log: record keeps the error
		l.record(engine.Applied{Txn: uuid.Must(uuid.NewV7()), Decision: engine.DecisionCommit})
	}
	l.mu.Lock()
	kept := l.mu.err
	l.mu.Unlock()
	if !errors.Is(kept, wal.ErrFailed) {
		t.Fatalf("record kept %v, want the failed log's error", kept)
	}
	if err := l.sync(); !errors.Is(err, wal.ErrFailed) {
		t.Fatalf("sync after a failed append: %v, want wal.ErrFailed", err)
	}
}
